"""The notification tables (migrations 0020, 0021): each user's settings and channels, the notifications themselves
(the outbox, written in the transaction of the state change that causes them, and the in-portal list), and one
delivery per notification and channel, which the sender carries out once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.store.orm import Base, FloatJSON, UTCDateTime


class NotificationSettings(Base):
    """A user's default per-job choice ("end", "failure", "never") and alert rules; a user without a row has the
    defaults."""

    __tablename__ = "notification_settings"

    owner: Mapped[str] = mapped_column(String(255), primary_key=True)
    default_notify: Mapped[str] = mapped_column(String(10), nullable=False)
    # Alerts while a job runs, each said once per job: a log line matching this regular expression, and a metric
    # crossing one of these rules ("loss > 10, loss is nan"). Empty: off.
    log_pattern: Mapped[str | None] = mapped_column(Text)
    metric_rules: Mapped[str | None] = mapped_column(Text)
    # A running job that printed nothing for this many minutes "may be stuck". None: off.
    stuck_minutes: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class NotificationMember(Base):
    """The groups a user had when they last submitted a job: whose team channels (owner "group:NAME", made from the
    admin's team_webhooks) hear of their jobs' failures, also while they are not signed in."""

    __tablename__ = "notification_members"

    owner: Mapped[str] = mapped_column(String(255), primary_key=True)
    group: Mapped[str] = mapped_column(String(255), primary_key=True)


class NotificationChannel(Base):
    """Where a user's notifications go: an e-mail address or a webhook (Slack, Teams, Mattermost, generic JSON),
    and which events go there. A channel that keeps failing is disabled, saying why."""

    __tablename__ = "notification_channels"
    __table_args__ = (Index("ix_notification_channels_owner", "owner", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    target: Mapped[str] = mapped_column(Text, nullable=False)
    # The webhook's HMAC key: signs each body, never sent back to a page or the API.
    secret: Mapped[str | None] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    last_result: Mapped[str | None] = mapped_column(Text)
    last_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # When the owner followed the link sent to the address (migration 0021). An e-mail channel without it gets the
    # confirmation message only: anyone could type someone else's address. Webhooks are confirmed when made.
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Notification(Base):
    """One event for one user, e.g. "job 12 failed": the outbox row and the in-portal list's entry. `key` makes
    an event once per job (a second write of it is skipped)."""

    __tablename__ = "notifications"
    # The second index counts a user's unread ones (every page's navigation says how many) from the index alone.
    __table_args__ = (Index("ix_notifications_owner_id", "owner", "id"),
                      Index("ix_notifications_unread", "owner", "read_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    job_id: Mapped[int | None] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(30), nullable=False)
    key: Mapped[str | None] = mapped_column(String(100), unique=True)
    # What the message says, fixed when the event happened (the job may change or be deleted before it is sent).
    payload: Mapped[dict[str, Any]] = mapped_column(FloatJSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NotificationDelivery(Base):
    """A notification on its way to one channel: pending, sending (claimed by a sender), sent or failed."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (Index("ix_notification_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False)
    channel_id: Mapped[int] = mapped_column(ForeignKey("notification_channels.id", ondelete="CASCADE"),
                                            nullable=False)
    # Sent as the Idempotency-Key header (and in the e-mail's Message-ID): a receiver sees one key per event and
    # channel, also when a portal killed mid-send sends it again after its restart.
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
