"""GPU telemetry: samples per job, the latest memory use, and since when the GPUs idle.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gpu_samples",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("util_percent", sa.Float),
        sa.Column("memory_mib", sa.Float),
    )
    op.create_index("ix_gpu_samples_job_ts", "gpu_samples", ["job_id", "ts"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("gpu_memory_mib", sa.Float))
        batch.add_column(sa.Column("gpu_idle_since", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("gpu_idle_since")
        batch.drop_column("gpu_memory_mib")
    op.drop_index("ix_gpu_samples_job_ts", table_name="gpu_samples")
    op.drop_table("gpu_samples")
