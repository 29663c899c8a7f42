"""64-bit steps, log offsets and point ids on PostgreSQL (SQLite's INTEGER already is).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = [("jobs", "step"), ("jobs", "total_steps"), ("metric_points", "id"), ("metric_points", "step"),
           ("job_logs", "offset"), ("job_logs", "lines"), ("gpu_samples", "id")]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger, existing_type=sa.Integer)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.Integer, existing_type=sa.BigInteger)
