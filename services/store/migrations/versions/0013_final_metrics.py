"""Final metrics as rows (job, name, value) indexed by (name, value, job): the history sorts by any final
metric with an index walk. Written by triggers from jobs.final_metrics, in the job's own transaction; a
deleted job's rows go by the foreign key.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Frozen copies (a migration does not import app code that may change later); services/store/final_metrics.py
# holds the same selection for rebuilding after a bulk load.
# Built from this module's constants only (no values reach them). Only an object's numbers: json_each
# would iterate an array, and fail on text that is not JSON.
SQLITE_OBJECT = ("CASE WHEN NOT json_valid({job}.final_metrics) THEN '{{}}' "
                 "WHEN json_type({job}.final_metrics) = 'object' THEN {job}.final_metrics ELSE '{{}}' END")
SQLITE_ROWS = ("SELECT {job}.id, m.key, m.value FROM json_each(" + SQLITE_OBJECT + ") AS m "  # noqa: S608
               "WHERE m.type IN ('integer', 'real') AND length(m.key) <= 64")
SQLITE = [
    "CREATE TRIGGER job_final_metrics_insert AFTER INSERT ON jobs BEGIN "
    "INSERT INTO job_final_metrics (job_id, name, value) " + SQLITE_ROWS.format(job="new") + "; END",
    "CREATE TRIGGER job_final_metrics_update AFTER UPDATE OF final_metrics ON jobs BEGIN "  # noqa: S608
    "DELETE FROM job_final_metrics WHERE job_id = old.id; "
    "INSERT INTO job_final_metrics (job_id, name, value) " + SQLITE_ROWS.format(job="new") + "; END",
]
POSTGRESQL = [
    """CREATE FUNCTION job_final_metrics_trigger() RETURNS trigger AS $$
    BEGIN
      IF TG_OP = 'UPDATE' THEN DELETE FROM job_final_metrics WHERE job_id = OLD.id; END IF;
      IF json_typeof(NEW.final_metrics) = 'object' THEN
        INSERT INTO job_final_metrics (job_id, name, value)
        SELECT NEW.id, m.key, m.value::text::double precision FROM json_each(NEW.final_metrics) AS m
        WHERE json_typeof(m.value) = 'number' AND length(m.key) <= 64;
      END IF;
      RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER job_final_metrics_insert AFTER INSERT ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION job_final_metrics_trigger()",
    "CREATE TRIGGER job_final_metrics_update AFTER UPDATE OF final_metrics ON jobs FOR EACH ROW "
    "WHEN (OLD.final_metrics::text IS DISTINCT FROM NEW.final_metrics::text) "
    "EXECUTE FUNCTION job_final_metrics_trigger()",
]
BACKFILL = {
    "sqlite": "INSERT INTO job_final_metrics (job_id, name, value) SELECT jobs.id, m.key, m.value FROM jobs, "  # noqa: S608
              "json_each(" + SQLITE_OBJECT.format(job="jobs") + ") AS m "
              "WHERE m.type IN ('integer', 'real') AND length(m.key) <= 64",
    "postgresql": "INSERT INTO job_final_metrics (job_id, name, value) "
                  "SELECT jobs.id, m.key, m.value::text::double precision FROM jobs, json_each(CASE WHEN "
                  "json_typeof(jobs.final_metrics) = 'object' THEN jobs.final_metrics ELSE '{}'::json END) AS m "
                  "WHERE json_typeof(m.value) = 'number' AND length(m.key) <= 64",
}


def upgrade() -> None:
    op.create_table(
        "job_final_metrics",
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
    )
    dialect = op.get_bind().dialect.name
    op.execute(BACKFILL[dialect])
    op.create_index("ix_job_final_metrics_sort", "job_final_metrics", ["name", "value", "job_id"])
    for statement in SQLITE if dialect == "sqlite" else POSTGRESQL:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("job_final_metrics_insert", "job_final_metrics_update"):
            op.execute(f"DROP TRIGGER {trigger}")
    else:
        for trigger in ("job_final_metrics_insert", "job_final_metrics_update"):
            op.execute(f"DROP TRIGGER {trigger} ON jobs")
        op.execute("DROP FUNCTION job_final_metrics_trigger()")
    op.drop_table("job_final_metrics")
