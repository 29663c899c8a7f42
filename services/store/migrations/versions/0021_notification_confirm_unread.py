"""Notifications: an e-mail channel's confirmation (nothing but the confirmation goes to an address until its owner
has followed the link sent there), and an index that counts a user's unread notifications for the navigation's
"Notifications (3)" on every page without reading their rows.

Channels that exist already count as confirmed (they were set up before there was a confirmation; their owners
would otherwise stop hearing of their jobs without a word). Test messages never were in the unread count: they are
marked read, so the count is the index's alone.

Revision ID: 0021
Revises: 0022
"""

import sqlalchemy as sa
from alembic import op

from services.store.orm import UTCDateTime

revision = "0021"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("notification_channels", sa.Column("confirmed_at", UTCDateTime()))
    op.execute("UPDATE notification_channels SET confirmed_at = created_at")
    op.execute("UPDATE notifications SET read_at = created_at WHERE event = 'test' AND read_at IS NULL")
    op.create_index("ix_notifications_unread", "notifications", ["owner", "read_at"])


def downgrade() -> None:
    op.drop_index("ix_notifications_unread", table_name="notifications")
    with op.batch_alter_table("notification_channels") as batch:
        batch.drop_column("confirmed_at")
