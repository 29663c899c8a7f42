"""Indexes for the history's remaining sorts: GPU-hours, and the numeric parameters read from the request
(expression indexes; services/store/orm.py request_number writes the same expressions).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

PARAMS = ("learning_rate", "epochs", "batch_size")


def upgrade() -> None:
    op.create_index("ix_jobs_gpu_hours", "jobs", ["gpu_hours"])
    sqlite = op.get_bind().dialect.name == "sqlite"
    for key in PARAMS:
        expr = (f"CAST(json_extract(request, '$.{key}') AS REAL)" if sqlite
                else f"(CAST(request ->> '{key}' AS DOUBLE PRECISION))")
        op.create_index(f"ix_jobs_param_{key}", "jobs", [sa.text(expr)])


def downgrade() -> None:
    for key in PARAMS:
        op.drop_index(f"ix_jobs_param_{key}", table_name="jobs")
    op.drop_index("ix_jobs_gpu_hours", table_name="jobs")
