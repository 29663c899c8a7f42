"""The template a job came from, and running totals per (owner, status group, GPUs, template) kept by
triggers, so the history's summary strip sums a few hundred rows instead of scanning every job.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

KEY = "owner, status_group, gpus, template"
WATCHED = "owner, status_group, status, gpus, template, gpu_hours, cost"


def _sqlite_upsert(r: str, sign: str) -> str:
    """What row r (new or old) adds to (sign '') or takes from (sign '-') its group's totals."""
    # Built from this module's constants only (no values reach it): the trigger body for one row.
    return (f"INSERT INTO job_totals ({KEY}, jobs, succeeded, gpu_hours, cost) "  # noqa: S608
            f"VALUES ({r}.owner, {r}.status_group, {r}.gpus, coalesce({r}.template, ''), "
            f"{sign}1, {sign}(CASE WHEN {r}.status = 'Succeeded' THEN 1 ELSE 0 END), "
            f"{sign}coalesce({r}.gpu_hours, 0), {sign}coalesce({r}.cost, 0)) "
            f"ON CONFLICT ({KEY}) DO UPDATE SET jobs = jobs + excluded.jobs, "
            "succeeded = succeeded + excluded.succeeded, gpu_hours = gpu_hours + excluded.gpu_hours, "
            "cost = cost + excluded.cost;")


SQLITE = [
    f"CREATE TRIGGER job_totals_insert AFTER INSERT ON jobs BEGIN {_sqlite_upsert('new', '')} END",
    f"CREATE TRIGGER job_totals_delete AFTER DELETE ON jobs BEGIN {_sqlite_upsert('old', '-')} END",
    f"CREATE TRIGGER job_totals_update AFTER UPDATE OF {WATCHED} ON jobs BEGIN "
    f"{_sqlite_upsert('old', '-')} {_sqlite_upsert('new', '')} END",
]

POSTGRESQL = [
    """CREATE FUNCTION job_totals_apply(r jobs, sign integer) RETURNS void AS $$
    BEGIN
      INSERT INTO job_totals (owner, status_group, gpus, template, jobs, succeeded, gpu_hours, cost)
      VALUES (r.owner, r.status_group, r.gpus, coalesce(r.template, ''), sign,
              sign * (CASE WHEN r.status = 'Succeeded' THEN 1 ELSE 0 END),
              sign * coalesce(r.gpu_hours, 0), sign * coalesce(r.cost, 0))
      ON CONFLICT (owner, status_group, gpus, template) DO UPDATE SET
        jobs = job_totals.jobs + excluded.jobs, succeeded = job_totals.succeeded + excluded.succeeded,
        gpu_hours = job_totals.gpu_hours + excluded.gpu_hours, cost = job_totals.cost + excluded.cost;
    END $$ LANGUAGE plpgsql""",
    """CREATE FUNCTION job_totals_trigger() RETURNS trigger AS $$
    BEGIN
      IF TG_OP IN ('UPDATE', 'DELETE') THEN PERFORM job_totals_apply(OLD, -1); END IF;
      IF TG_OP IN ('UPDATE', 'INSERT') THEN PERFORM job_totals_apply(NEW, 1); END IF;
      RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER job_totals_insert_delete AFTER INSERT OR DELETE ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION job_totals_trigger()",
    f"CREATE TRIGGER job_totals_update AFTER UPDATE OF {WATCHED} ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION job_totals_trigger()",
]


def upgrade() -> None:
    op.add_column("jobs", sa.Column("template", sa.String(100), nullable=True))
    op.create_index("ix_jobs_template_id", "jobs", ["template", "id"])
    op.create_table(
        "job_totals",
        sa.Column("owner", sa.String(255), primary_key=True),
        sa.Column("status_group", sa.String(20), primary_key=True),
        sa.Column("gpus", sa.Integer(), primary_key=True),
        sa.Column("template", sa.String(100), primary_key=True),
        sa.Column("jobs", sa.BigInteger(), nullable=False),
        sa.Column("succeeded", sa.BigInteger(), nullable=False),
        sa.Column("gpu_hours", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
    )
    op.execute(f"INSERT INTO job_totals ({KEY}, jobs, succeeded, gpu_hours, cost) "  # noqa: S608
               "SELECT owner, status_group, gpus, coalesce(template, ''), count(*), "
               "sum(CASE WHEN status = 'Succeeded' THEN 1 ELSE 0 END), coalesce(sum(gpu_hours), 0), "
               f"coalesce(sum(cost), 0) FROM jobs GROUP BY owner, status_group, gpus, coalesce(template, '')")
    for statement in SQLITE if op.get_bind().dialect.name == "sqlite" else POSTGRESQL:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("job_totals_insert", "job_totals_delete", "job_totals_update"):
            op.execute(f"DROP TRIGGER {trigger}")
    else:
        op.execute("DROP TRIGGER job_totals_insert_delete ON jobs")
        op.execute("DROP TRIGGER job_totals_update ON jobs")
        op.execute("DROP FUNCTION job_totals_trigger()")
        op.execute("DROP FUNCTION job_totals_apply(jobs, integer)")
    op.drop_table("job_totals")
    op.drop_index("ix_jobs_template_id", table_name="jobs")
    op.drop_column("jobs", "template")
