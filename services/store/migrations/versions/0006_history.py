"""History: tags and a note per job; the final loss, cost and GPU-hours for sorting and sums.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("tags", sa.JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("note", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("final_loss", sa.Float))
        batch.add_column(sa.Column("cost", sa.Float))
        batch.add_column(sa.Column("gpu_hours", sa.Float))
    op.create_index("ix_jobs_final_loss", "jobs", ["final_loss"])
    op.create_index("ix_jobs_cost", "jobs", ["cost"])


def downgrade() -> None:
    op.drop_index("ix_jobs_cost", table_name="jobs")
    op.drop_index("ix_jobs_final_loss", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("gpu_hours", "cost", "final_loss", "note", "tags"):
            batch.drop_column(column)
