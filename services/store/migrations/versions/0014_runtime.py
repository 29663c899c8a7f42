"""How long each ended job ran, stored, with a sort index like the other results' (value, id, filters): the
history sorts by runtime with an index walk.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

SECONDS = {
    "sqlite": "(julianday(finished_at) - julianday(started_at)) * 86400.0",
    "postgresql": "EXTRACT(EPOCH FROM finished_at - started_at)",
}


def upgrade() -> None:
    op.add_column("jobs", sa.Column("runtime_seconds", sa.Float(), nullable=True))
    seconds = SECONDS[op.get_bind().dialect.name]  # a constant of this module, no value reaches it
    op.execute(f"UPDATE jobs SET runtime_seconds = CASE WHEN {seconds} > 0 THEN {seconds} ELSE 0 END "  # noqa: S608
               "WHERE started_at IS NOT NULL AND finished_at IS NOT NULL")
    op.create_index("ix_jobs_by_runtime_seconds", "jobs",
                    ["runtime_seconds", "id", "owner", "status_group", "gpus", "template"])


def downgrade() -> None:
    op.drop_index("ix_jobs_by_runtime_seconds", table_name="jobs")
    op.drop_column("jobs", "runtime_seconds")
