"""Notifications (issue 18): users' settings, channels and groups, the outbox of notifications, their deliveries.

Revision ID: 0020
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

from services.store.orm import FloatJSON, UTCDateTime

revision = "0020"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_settings",
        sa.Column("owner", sa.String(255), primary_key=True),
        sa.Column("default_notify", sa.String(10), nullable=False),
        sa.Column("log_pattern", sa.Text),
        sa.Column("metric_rules", sa.Text),
        sa.Column("stuck_minutes", sa.Float),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "notification_members",
        sa.Column("owner", sa.String(255), primary_key=True),
        sa.Column("group", sa.String(255), primary_key=True),
    )
    op.create_table(
        "notification_channels",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("secret", sa.Text),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("last_result", sa.Text),
        sa.Column("last_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_notification_channels_owner", "notification_channels", ["owner", "id"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("job_id", sa.Integer),
        sa.Column("event", sa.String(30), nullable=False),
        sa.Column("key", sa.String(100), unique=True),
        sa.Column("payload", FloatJSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("read_at", UTCDateTime()),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_notifications_owner_id", "notifications", ["owner", "id"])
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("notification_id", sa.Integer, sa.ForeignKey("notifications.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("channel_id", sa.Integer, sa.ForeignKey("notification_channels.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("sent_at", UTCDateTime()),
    )
    op.create_index("ix_notification_deliveries_due", "notification_deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("notification_deliveries")
    op.drop_table("notifications")
    op.drop_table("notification_channels")
    op.drop_table("notification_members")
    op.drop_table("notification_settings")
