"""Every job's final metrics as rows (job, name, value, and the job's owner, status group, GPUs and template):
table job_final_metrics, written by database triggers from the jobs table (migration 0013) and indexed by
(name, value, job, filters), so the history sorts a million jobs by any final metric (accuracy, eval_loss, ...)
by walking an index, testing its filters there, instead of reading each job's JSON."""

from __future__ import annotations

from sqlalchemy import Connection

# Numbers only (a NaN or infinite result is stored as a string and has no place in a sort), under names that
# fit the column; json_each only over an object.
REBUILD = {
    "sqlite": "INSERT INTO job_final_metrics (job_id, name, value, owner, status_group, gpus, template) "
              "SELECT jobs.id, m.key, m.value, jobs.owner, jobs.status_group, jobs.gpus, jobs.template FROM jobs, "
              "json_each(CASE WHEN NOT json_valid(jobs.final_metrics) THEN '{}' "
              "WHEN json_type(jobs.final_metrics) = 'object' THEN jobs.final_metrics ELSE '{}' END) AS m "
              "WHERE m.type IN ('integer', 'real') AND length(m.key) <= 64",
    "postgresql": "INSERT INTO job_final_metrics (job_id, name, value, owner, status_group, gpus, template) "
                  "SELECT jobs.id, m.key, m.value::text::double precision, jobs.owner, jobs.status_group, jobs.gpus, "
                  "jobs.template FROM jobs, json_each(CASE WHEN json_typeof(jobs.final_metrics) = 'object' "
                  "THEN jobs.final_metrics ELSE '{}'::json END) AS m "
                  "WHERE json_typeof(m.value) = 'number' AND length(m.key) <= 64",
}


def rebuild_final_metrics(conn: Connection) -> None:
    """Write every job's rows again (after a bulk load that bypassed the triggers, or to repair drift)."""
    conn.exec_driver_sql("DELETE FROM job_final_metrics")
    conn.exec_driver_sql(REBUILD[conn.dialect.name])
