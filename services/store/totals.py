"""The running totals behind the history's summary strip: table job_totals, one row per (owner, status group,
GPUs, template), kept in step with the jobs by database triggers (migration 0010)."""

from __future__ import annotations

from sqlalchemy import Connection

REBUILD = (
    "INSERT INTO job_totals (owner, status_group, gpus, template, jobs, succeeded, gpu_hours, cost) "
    "SELECT owner, status_group, gpus, coalesce(template, ''), count(*), "
    "sum(CASE WHEN status = 'Succeeded' THEN 1 ELSE 0 END), coalesce(sum(gpu_hours), 0), coalesce(sum(cost), 0) "
    "FROM jobs GROUP BY owner, status_group, gpus, coalesce(template, '')"
)


def rebuild_job_totals(conn: Connection) -> None:
    """Count every job again (after a bulk load that bypassed the triggers, or to repair drift)."""
    conn.exec_driver_sql("DELETE FROM job_totals")
    conn.exec_driver_sql(REBUILD)
