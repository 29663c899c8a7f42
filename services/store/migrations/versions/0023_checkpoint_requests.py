"""Checkpoint requests (issue 21): when "Save checkpoint" was asked for, delivered to the job and written.

Revision ID: 0023
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

from services.store.orm import UTCDateTime

revision = "0023"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoint_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime()),
        sa.Column("written_at", UTCDateTime()),
        sa.Column("written_name", sa.String(255)),
        sa.Column("error", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_checkpoint_requests_job", "checkpoint_requests", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_checkpoint_requests_job", table_name="checkpoint_requests")
    op.drop_table("checkpoint_requests")
