"""An e-mail address is confirmed before the portal writes to it: anyone can type someone else's address, and the
portal must not become a way to send them mail. Adding one sends a single message with a signed link (and the
same code to paste), good for CONFIRM_HOURS; until its owner follows it, no test or event message goes there.

Test messages and confirmations are limited per user and hour (notify_test_per_hour), with a sentence saying when
the next may go: otherwise "Send a test message" (or adding and removing a channel) could flood any receiver."""

from __future__ import annotations

import math
from datetime import timedelta

from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from services.auth import _secret_key
from services.config import Settings
from services.models import Conflict, NotFound, ValidationProblem
from services.notifications_outbox import CONFIRM, FAILED, PENDING, QUIET_EVENTS, record
from services.store.notification_tables import Notification, NotificationChannel, NotificationDelivery
from services.store.orm import utcnow

CONFIRM_HOURS = 24
_SALT = "ml-portal-notify-confirm"  # a download link's token is not a confirmation, nor the other way round
NOT_VALID = (f"This confirmation code is not valid or has expired (each is good for {CONFIRM_HOURS} hours): send "
             "the confirmation again from the channel on the Notifications page.")


class TooManyMessages(Conflict):
    """More test or confirmation messages than the hourly limit; `retry_after`: seconds until the next may go."""

    def __init__(self, sentence: str, retry_after: int):
        super().__init__(sentence)
        self.retry_after = retry_after


def needs_confirming(channel: NotificationChannel) -> bool:
    return channel.kind == "email" and channel.confirmed_at is None


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_secret_key(settings), salt=_SALT)


def check_rate(s: Session, settings: Settings, owner: str, also: int = 0) -> None:
    """Raises TooManyMessages when `owner` may send no further test or confirmation message this hour. also: the
    messages the same request sends before this one (a PUT adding several addresses, checked before any goes)."""
    limit, now = settings.notify_test_per_hour, utcnow()
    sent = list(s.scalars(select(Notification.created_at).where(
        Notification.owner == owner, Notification.event.in_(QUIET_EVENTS),
        Notification.created_at >= now - timedelta(hours=1)).order_by(Notification.created_at)))
    if len(sent) + also < limit:
        return
    oldest = len(sent) + also - limit  # the one whose hour must pass first
    ends = sent[oldest] + timedelta(hours=1) if oldest < len(sent) else now + timedelta(hours=1)
    wait = max(1, math.ceil((ends - now).total_seconds()))
    more = f" and this would send {also} more" if also else ""
    raise TooManyMessages(f"You have sent {len(sent)} test or confirmation messages in the last hour{more}, the most "
                          f"this portal allows (PORTAL_NOTIFY_TEST_PER_HOUR = {limit}); try again in "
                          f"{math.ceil(wait / 60)} min.", wait)


def send_confirmation(s: Session, settings: Settings, channel: NotificationChannel) -> None:
    """The one message an unconfirmed address gets: the link (and code) that confirms it."""
    check_rate(s, settings, channel.owner)
    code = _serializer(settings).dumps({"channel": channel.id, "owner": channel.owner, "address": channel.target})
    record(s, channel.owner, CONFIRM, {"event": CONFIRM, "owner": channel.owner, "address": channel.target,
                                       "code": code, "hours": CONFIRM_HOURS,
                                       "path": f"/notifications?confirm={code}"}, channels=[channel], read=True)
    channel.last_result = "Confirmation sent: follow the link in it to get notifications here"
    channel.last_at = utcnow()


def send_again(sessions: sessionmaker[Session], settings: Settings, owner: str, channel_id: int) -> str:
    """The API's "send the confirmation again" for one of `owner`'s unconfirmed addresses; returns the address.
    Another user's channel is not found, like a missing one: its id must not tell that it exists."""
    with sessions.begin() as s:
        row = s.get(NotificationChannel, channel_id) if 0 < channel_id < 2**62 else None
        if row is None or row.owner != owner:
            raise NotFound(f"Channel {channel_id} was not found.")
        if not needs_confirming(row):
            what = "its address is confirmed already" if row.kind == "email" else "a webhook needs no confirmation"
            raise Conflict(f"Channel {channel_id} needs no confirmation: {what}.")
        send_confirmation(s, settings, row)
        return row.target


def confirm(s: Session, settings: Settings, owner: str, code: str) -> NotificationChannel:
    """The channel `code` confirms, now confirmed; a ValidationProblem (field "code") says why not."""
    try:
        data = _serializer(settings).loads(code.strip(), max_age=CONFIRM_HOURS * 3600)
    except BadData:  # SignatureExpired among them, and a payload that is not one (typed by hand)
        raise ValidationProblem({"code": NOT_VALID}) from None
    row = s.get(NotificationChannel, data.get("channel")) if isinstance(data, dict) else None
    if row is None or row.owner != data.get("owner") or row.kind != "email" or row.target != data.get("address"):
        raise ValidationProblem({"code": "This confirmation is for an address that is no longer a channel: add it "
                                         "again to get a new one."})
    if row.owner != owner:
        raise ValidationProblem({"code": "This confirmation is for another user's channel: open the link signed "
                                         "in as that user."})
    if row.confirmed_at is None:
        row.confirmed_at = utcnow()
        row.last_result, row.last_at = "Address confirmed", row.confirmed_at
    # A confirmation sent again and not yet out is no longer needed.
    s.execute(update(NotificationDelivery).where(
        NotificationDelivery.channel_id == row.id, NotificationDelivery.status == PENDING,
        NotificationDelivery.notification_id.in_(select(Notification.id).where(Notification.event == CONFIRM)))
        .values(status=FAILED, last_error="the address was confirmed meanwhile"))
    return row
