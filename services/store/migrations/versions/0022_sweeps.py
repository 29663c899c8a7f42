"""Sweeps (issue 19): the sweeps table, each job's sweep and trial number, and Optuna's study tables.

Optuna's tables are made here from the pinned Optuna's own models (services/store/sweep_tables.py), not by Optuna at
run time: Optuna would otherwise stamp or check the portal's `alembic_version` as its own.

Revision ID: 0022
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

from services.store.orm import UTCDateTime
from services.store.sweep_tables import OPTUNA_TABLES

revision = "0022"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("owner_groups", sa.JSON, nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("stop_reason", sa.Text),
        sa.Column("study_name", sa.String(100), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime()),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sweeps_owner_id", "sweeps", ["owner", "id"])
    op.add_column("jobs", sa.Column("sweep_id", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("sweep_trial", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_sweep", "jobs", ["sweep_id", "sweep_trial"])
    bind = op.get_bind()
    for table in OPTUNA_TABLES:
        table.create(bind, checkfirst=True)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(OPTUNA_TABLES):
        table.drop(bind, checkfirst=True)
    op.drop_index("ix_jobs_sweep", table_name="jobs")
    op.drop_column("jobs", "sweep_trial")
    op.drop_column("jobs", "sweep_id")
    op.drop_index("ix_sweeps_owner_id", table_name="sweeps")
    op.drop_table("sweeps")
