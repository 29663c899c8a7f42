"""What it costs (issue 20): prices per GPU type and node from the date each takes effect, each job's usage per
month and GPU type (accrued from its run time, frozen when it ends) with its sums per month, owner, team and GPU
type, and monthly budgets per team and user.

Revision ID: 0025
Revises: 0024
"""

import sqlalchemy as sa
from alembic import op

from services.store.orm import BIG_INT, UTCDateTime

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("gpu_type", sa.String(100)),
        sa.Column("node", sa.String(253)),
        sa.Column("gpu_hour", sa.Float, nullable=False),
        sa.Column("node_hour", sa.Float, nullable=False),
        sa.Column("effective_from", UTCDateTime(), nullable=False),
        sa.Column("set_by", sa.String(255), nullable=False),
        sa.Column("set_at", UTCDateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_prices_effective", "prices", ["effective_from"])
    op.create_table(
        "job_usage",
        sa.Column("job_id", BIG_INT, primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("gpu_type", sa.String(100), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("team", sa.String(100), nullable=False),
        sa.Column("gpu_seconds", sa.Float, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("final", sa.Boolean, nullable=False),
    )
    op.create_index("ix_job_usage_month_owner", "job_usage", ["month", "owner"])
    op.create_index("ix_job_usage_month_team", "job_usage", ["month", "team"])
    op.create_table(
        "usage_totals",
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("owner", sa.String(255), primary_key=True),
        sa.Column("team", sa.String(100), primary_key=True),
        sa.Column("gpu_type", sa.String(100), primary_key=True),
        sa.Column("jobs", BIG_INT, nullable=False),
        sa.Column("gpu_seconds", sa.Float, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
    )
    _backfill()
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("scope", sa.String(10), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("unit", sa.String(10), nullable=False),
        sa.Column("monthly_limit", sa.Float, nullable=False),
        sa.Column("overdraft", sa.Boolean, nullable=False),
        sa.Column("at_limit", sa.String(10), nullable=False),
        sa.Column("set_by", sa.String(255), nullable=False),
        sa.Column("set_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("scope", "name", name="uq_budgets_scope_name"),
        sqlite_autoincrement=True,
    )


def _backfill() -> None:
    """The jobs that ended before this revision, as usage of the month they started in, with the cost they were
    given then (a run over a month's end counts in its first month)."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    started = "coalesce(started_at, created_at)"
    month = f"strftime('%Y-%m', {started})" if sqlite else f"to_char({started} AT TIME ZONE 'UTC', 'YYYY-MM')"
    op.execute("INSERT INTO job_usage (job_id, month, gpu_type, owner, team, gpu_seconds, cost, final) "  # noqa: S608
               f"SELECT id, {month}, CASE WHEN backend = 'local' THEN 'local' ELSE 'gpu' END, owner, "
               "coalesce(team, ''), coalesce(gpu_hours, 0) * 3600, coalesce(cost, 0), TRUE FROM jobs "
               "WHERE finished_at IS NOT NULL")
    op.execute("INSERT INTO usage_totals (month, owner, team, gpu_type, jobs, gpu_seconds, cost) "
               "SELECT month, owner, team, gpu_type, count(*), sum(gpu_seconds), sum(cost) FROM job_usage "
               "GROUP BY month, owner, team, gpu_type")


def downgrade() -> None:
    op.drop_table("budgets")
    op.drop_table("usage_totals")
    op.drop_index("ix_job_usage_month_team", table_name="job_usage")
    op.drop_index("ix_job_usage_month_owner", table_name="job_usage")
    op.drop_table("job_usage")
    op.drop_index("ix_prices_effective", table_name="prices")
    op.drop_table("prices")
