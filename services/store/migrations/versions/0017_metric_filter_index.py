"""A job's final metric by (job, name) with its value in the index: the History's metric filter tests a condition
(accuracy > 0.9) on each job it walks with one index-only probe, not an index probe and a table read.

Revision ID: 0017
Revises: 0016
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_job_final_metrics_probe", "job_final_metrics", ["job_id", "name", "value"])
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's planner knows an index only from its statistics; without them it keeps reading the primary key
        # and the row (the portal refreshes statistics per table, and this table's are not stale).
        op.execute("ANALYZE job_final_metrics")


def downgrade() -> None:
    op.drop_index("ix_job_final_metrics_probe", table_name="job_final_metrics")
