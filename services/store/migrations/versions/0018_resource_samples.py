"""CPU and memory samples of running jobs, drawn beside their GPU graphs.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resource_samples",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("cpu_cores", sa.Float),
        sa.Column("memory_mib", sa.Float),
    )
    op.create_index("ix_resource_samples_job_ts", "resource_samples", ["job_id", "ts"])


def downgrade() -> None:
    op.drop_index("ix_resource_samples_job_ts", table_name="resource_samples")
    op.drop_table("resource_samples")
