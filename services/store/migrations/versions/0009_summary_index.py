"""A covering index for the history's summary strip.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_summary", "jobs", ["status_group", "status", "gpu_hours", "cost"])


def downgrade() -> None:
    op.drop_index("ix_jobs_summary", table_name="jobs")
