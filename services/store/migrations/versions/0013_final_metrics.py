"""Final metrics as rows (job, name, value) indexed by (name, value, job) together with the job's owner,
status group, GPUs and template: the history sorts by any final metric with an index walk that also tests
those filters inside the index. Written by triggers from jobs, in the job's own transaction; a deleted job's
rows go by the foreign key.

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
# holds the same selection for rebuilding after a bulk load. Built from this module's constants only (no values
# reach them). Only an object's numbers: json_each would iterate an array, and fail on text that is not JSON.
COLUMNS = "job_id, name, value, owner, status_group, gpus, template"
FILTERS = ("owner", "status_group", "gpus", "template")
SQLITE_OBJECT = ("CASE WHEN NOT json_valid({job}.final_metrics) THEN '{{}}' "
                 "WHEN json_type({job}.final_metrics) = 'object' THEN {job}.final_metrics ELSE '{{}}' END")
SQLITE_ROWS = ("SELECT {job}.id, m.key, m.value, {job}.owner, {job}.status_group, {job}.gpus, "  # noqa: S608
               "{job}.template FROM json_each(" + SQLITE_OBJECT + ") AS m "
               "WHERE m.type IN ('integer', 'real') AND length(m.key) <= 64")
SQLITE = [
    f"CREATE TRIGGER job_final_metrics_insert AFTER INSERT ON jobs BEGIN INSERT INTO job_final_metrics ({COLUMNS}) "
    + SQLITE_ROWS.format(job="new") + "; END",
    "CREATE TRIGGER job_final_metrics_update AFTER UPDATE OF final_metrics ON jobs BEGIN "  # noqa: S608
    f"DELETE FROM job_final_metrics WHERE job_id = old.id; INSERT INTO job_final_metrics ({COLUMNS}) "
    + SQLITE_ROWS.format(job="new") + "; END",
    "CREATE TRIGGER job_final_metrics_filters AFTER UPDATE OF owner, status_group, gpus, template ON jobs BEGIN "
    "UPDATE job_final_metrics SET owner = new.owner, status_group = new.status_group, gpus = new.gpus, "
    "template = new.template WHERE job_id = new.id; END",
]
POSTGRESQL = [
    """CREATE FUNCTION job_final_metrics_trigger() RETURNS trigger AS $$
    BEGIN
      IF TG_OP = 'UPDATE' AND OLD.final_metrics::text IS NOT DISTINCT FROM NEW.final_metrics::text THEN
        UPDATE job_final_metrics SET owner = NEW.owner, status_group = NEW.status_group, gpus = NEW.gpus,
          template = NEW.template WHERE job_id = NEW.id;
        RETURN NULL;
      END IF;
      IF TG_OP = 'UPDATE' THEN DELETE FROM job_final_metrics WHERE job_id = OLD.id; END IF;
      IF json_typeof(NEW.final_metrics) = 'object' THEN
        INSERT INTO job_final_metrics (job_id, name, value, owner, status_group, gpus, template)
        SELECT NEW.id, m.key, m.value::text::double precision, NEW.owner, NEW.status_group, NEW.gpus,
          NEW.template FROM json_each(NEW.final_metrics) AS m
        WHERE json_typeof(m.value) = 'number' AND length(m.key) <= 64;
      END IF;
      RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER job_final_metrics_insert AFTER INSERT ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION job_final_metrics_trigger()",
    f"CREATE TRIGGER job_final_metrics_update AFTER UPDATE OF final_metrics, {', '.join(FILTERS)} ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION job_final_metrics_trigger()",
]
BACKFILL = {
    "sqlite": f"INSERT INTO job_final_metrics ({COLUMNS}) SELECT jobs.id, m.key, m.value, jobs.owner, "  # noqa: S608
              "jobs.status_group, jobs.gpus, jobs.template FROM jobs, "
              "json_each(" + SQLITE_OBJECT.format(job="jobs") + ") AS m "
              "WHERE m.type IN ('integer', 'real') AND length(m.key) <= 64",
    "postgresql": f"INSERT INTO job_final_metrics ({COLUMNS}) "  # noqa: S608
                  "SELECT jobs.id, m.key, m.value::text::double precision, jobs.owner, jobs.status_group, jobs.gpus, "
                  "jobs.template FROM jobs, json_each(CASE WHEN json_typeof(jobs.final_metrics) = 'object' "
                  "THEN jobs.final_metrics ELSE '{}'::json END) AS m "
                  "WHERE json_typeof(m.value) = 'number' AND length(m.key) <= 64",
}


def upgrade() -> None:
    op.create_table(
        "job_final_metrics",
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("status_group", sa.String(20), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("template", sa.String(100), nullable=True),
    )
    dialect = op.get_bind().dialect.name
    op.execute(BACKFILL[dialect])
    op.create_index("ix_job_final_metrics_sort", "job_final_metrics", ["name", "value", "job_id", *FILTERS])
    for statement in SQLITE if dialect == "sqlite" else POSTGRESQL:
        op.execute(statement)


def downgrade() -> None:
    triggers = ("job_final_metrics_insert", "job_final_metrics_update", "job_final_metrics_filters")
    if op.get_bind().dialect.name == "sqlite":
        for trigger in triggers:
            op.execute(f"DROP TRIGGER {trigger}")
    else:
        for trigger in triggers[:2]:
            op.execute(f"DROP TRIGGER {trigger} ON jobs")
        op.execute("DROP FUNCTION job_final_metrics_trigger()")
    op.drop_table("job_final_metrics")
