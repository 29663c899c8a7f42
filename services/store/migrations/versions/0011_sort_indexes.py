"""Indexes for the history's sorts, in the page's order (value, then id) and carrying the columns of the
common filters (owner, status group, GPUs, template): a sorted, filtered page walks one index and tests the
filters there, reading a job's row only for the jobs it shows. Covers final loss, cost, GPU-hours and the
numeric parameters read from the request (expression indexes; services/store/orm.py request_number writes
the same expressions), plus name, GPUs and owner. The summary strip now reads running totals (0010), so 0009's
covering index goes.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

FILTERS = ["owner", "status_group", "gpus", "template"]
PARAMS = ("learning_rate", "epochs", "batch_size")


def upgrade() -> None:
    op.drop_index("ix_jobs_summary", table_name="jobs")
    op.drop_index("ix_jobs_final_loss", table_name="jobs")
    op.drop_index("ix_jobs_cost", table_name="jobs")
    for column in ("final_loss", "cost", "gpu_hours"):
        op.create_index(f"ix_jobs_by_{column}", "jobs", [column, "id", *FILTERS])
    # Sorting by name, GPUs or owner walks these (id spelt out: PostgreSQL's index has no row id order).
    op.create_index("ix_jobs_name", "jobs", ["name", "id"])
    op.create_index("ix_jobs_gpus", "jobs", ["gpus", "id"])
    op.create_index("ix_jobs_owner_id", "jobs", ["owner", "id"])
    sqlite = op.get_bind().dialect.name == "sqlite"
    for key in PARAMS:
        expr = (f"CAST(json_extract(request, '$.{key}') AS REAL)" if sqlite
                else f"(CAST(request ->> '{key}' AS DOUBLE PRECISION))")
        op.create_index(f"ix_jobs_param_{key}", "jobs", [sa.text(expr), "id", *FILTERS])


def downgrade() -> None:
    for key in PARAMS:
        op.drop_index(f"ix_jobs_param_{key}", table_name="jobs")
    for column in ("final_loss", "cost", "gpu_hours"):
        op.drop_index(f"ix_jobs_by_{column}", table_name="jobs")
    op.drop_index("ix_jobs_owner_id", table_name="jobs")
    op.drop_index("ix_jobs_gpus", table_name="jobs")
    op.drop_index("ix_jobs_name", table_name="jobs")
    op.create_index("ix_jobs_cost", "jobs", ["cost"])
    op.create_index("ix_jobs_final_loss", "jobs", ["final_loss"])
    op.create_index("ix_jobs_summary", "jobs", ["status_group", "status", "gpu_hours", "cost"])
