"""Alerts about what a running job has NOT done, each said once per job: no log output for the owner's N minutes
("may be stuck"), and GPUs idle as long as the idle-GPU badge needs (gpu_idle_percent for gpu_idle_minutes).

No state change causes these, so the sender's thread looks every WATCH_SECONDS at the running jobs (a few
hundred rows at most: one query for them, one for their owners' settings) and records what is due; the
notification's key makes it once per job across restarts."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.config import Settings
from services.models import JobStatus
from services.notifications_outbox import DEFAULT_NOTIFY, job_facts, record
from services.store.notification_tables import Notification, NotificationSettings
from services.store.orm import Job, JobLog, utcnow

STUCK, GPU_IDLE = "stuck", "gpu_idle"
WATCH_SECONDS = 30.0
MAX_WATCHED = 2000


def watch_running(s: Session, settings: Settings) -> int:
    """Record the stuck and idle-GPU alerts that are due; returns how many."""
    rows = s.execute(select(Job, JobLog.updated_at).join(JobLog, JobLog.job_id == Job.id)
                     .where(Job.status == JobStatus.RUNNING.value).limit(MAX_WATCHED)).all()
    if not rows:
        return 0
    owners = {job.owner for job, _ in rows}
    mine = {r.owner: r for r in s.scalars(select(NotificationSettings).where(NotificationSettings.owner.in_(owners)))}
    keys = [f"job:{job.id}:{event}" for job, _ in rows for event in (STUCK, GPU_IDLE)]
    said = set(s.scalars(select(Notification.key).where(Notification.key.in_(keys))))
    now, wall, count = utcnow(), time.time(), 0
    for job, log_grew in rows:
        row = mine.get(job.owner)
        if ((job.request or {}).get("notify") or (row.default_notify if row else DEFAULT_NOTIFY)) == "never":
            continue
        minutes = row.stuck_minutes if row else None
        since = max(t for t in (log_grew, job.started_at) if t is not None)
        quiet = (now - since).total_seconds()
        if minutes and quiet >= minutes * 60 and (key := f"job:{job.id}:{STUCK}") not in said:
            record(s, job.owner, STUCK, job_facts(job, STUCK) | {"quiet_seconds": quiet}, job_id=job.id, key=key)
            count += 1
        idle_for = wall - job.gpu_idle_since if job.gpus and job.gpu_idle_since is not None else 0.0
        if idle_for >= settings.gpu_idle_minutes * 60 and (key := f"job:{job.id}:{GPU_IDLE}") not in said:
            record(s, job.owner, GPU_IDLE, job_facts(job, GPU_IDLE) | {
                "idle_seconds": idle_for, "idle_percent": settings.gpu_idle_percent}, job_id=job.id, key=key)
            count += 1
    return count
