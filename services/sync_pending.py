"""What the sync loop carries out late: submissions and stops asked for while the backend could not be reached,
submissions a portal left half-done when it died, and Jobs the user was told never started (ghosts).
A mixin of `SyncLoop` (services/sync.py)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from services import budget_wait
from services.backends.base import ActiveJob, BackendError, JobSubmission
from services.backends.unreachable import BackendUnreachable
from services.jobs import SUBMIT_WHEN_BACK, JobService, parse_request, set_status
from services.models import JobStatus, ValidationProblem
from services.provenance import submitted_values
from services.store.notification_tables import NotificationMember
from services.store.orm import Job, JobEvent, utcnow

log = logging.getLogger(__name__)
SUBMIT_GRACE_SECONDS = 120
ABANDONED = "The portal stopped while submitting this job; nothing was started. Retry it."


class PendingWork:
    """Provided by SyncLoop."""

    service: JobService
    started_at: datetime

    def recent_failed_submissions(self) -> list[tuple[int, str]]:
        """Jobs the user was told did not start: failed submissions, and those cancelled before the backend
        answered (a create it was still carrying out may have landed)."""
        since = utcnow() - timedelta(hours=1)
        with self.service.session() as s:
            rows = s.execute(
                select(Job.id, Job.submission_id, Job.status, Job.backend_ref).where(
                    Job.status.in_([JobStatus.SUBMIT_FAILED.value, JobStatus.STOPPED.value]),
                    Job.backend == self.service.backend.name, Job.updated_at > since,
                ).limit(200)
            ).all()
        return [(r.id, r.submission_id) for r in rows
                if r.status == JobStatus.SUBMIT_FAILED.value or r.backend_ref is None]

    def resume_submissions(self, job_ids: set[int]) -> None:
        """Jobs Submitting without a handle from the backend: accepted while it could not be reached (asked again
        now), or left by a portal that died mid-submit (asked again where submitting twice starts the job once,
        else failed: a row waiting forever helps nobody)."""
        if not job_ids:
            return
        svc = self.service
        cutoff = utcnow() - timedelta(seconds=SUBMIT_GRACE_SECONDS)
        again = bool(getattr(svc.backend, "idempotent_submit", False))
        with svc.session() as s:
            rows = s.execute(select(Job.id, Job.owner, Job.request, Job.submission_id, Job.reason, Job.created_at,
                                    Job.status, Job.backend_ref, Job.team).where(Job.id.in_(job_ids))
                             .order_by(Job.id)).all()
        held: dict[tuple[str, str], bool] = {}  # (owner, team) -> its budget still keeps its jobs back
        for r in rows:
            if budget_wait.is_waiting(r.status, r.backend_ref):  # kept back for its budget: does it allow now?
                key = (r.owner, r.team or "")
                if key not in held:
                    with svc.session() as s:
                        held[key] = budget_wait.wait_sentence(svc, s, *key) is not None
                if not held[key] and not self._submit_again(r):
                    break  # the cluster cannot be reached: a later tick submits it
                continue
            if r.status != JobStatus.SUBMITTING.value or r.backend_ref is not None:
                continue
            waiting = (r.reason or "").endswith(SUBMIT_WHEN_BACK)
            # A row from before this process started is in no submit of its own; where asking twice is safe it
            # need not wait out the grace that spares a submit a page thread of this process is carrying out.
            abandoned = r.created_at < cutoff or (again and r.created_at < self.started_at)
            if waiting or (again and abandoned):
                if not waiting:
                    log.info("submitting job %s again: a portal stopped while submitting it", r.id)
                if not self._submit_again(r):
                    break  # still cannot be reached: the others wait for a later tick too
            elif abandoned:
                self._abandoned(r.id)

    def _abandoned(self, job_id: int) -> None:
        with self.service.session() as s:
            job = s.get_one(Job, job_id)
            job.reason = ABANDONED
            job.finished_at = utcnow()
            set_status(s, job, JobStatus.SUBMIT_FAILED, job.reason)

    def _submit_again(self, row: Any) -> bool:
        svc = self.service
        script = svc.settings.jobs_dir / str(row.id) / "script" / Path(str(row.request.get("script", ""))).name
        if not script.is_file():  # the portal died before it kept the script: nothing can have started
            self._abandoned(row.id)
            return True
        try:
            request = parse_request(submitted_values(row.request))  # the values, without what the portal noted
        except ValidationProblem as exc:  # recorded by an older portal with values this one refuses
            svc._submit_failed(row.id, BackendError(f"The job's values are no longer valid: {exc}"))
            return True
        with svc.session() as s:  # the owner's groups, as their latest submit gave them: their team's Kueue queue
            groups = tuple(sorted(s.scalars(select(NotificationMember.group).where(
                NotificationMember.owner == row.owner))))
        return svc.hand_over(JobSubmission(row.id, row.owner, request, script, row.submission_id, groups))

    def carry_out_stops(self, jobs: list[ActiveJob]) -> None:
        """Stops asked for while the backend could not be reached, carried out now that it may be back."""
        for job in jobs:
            try:
                self.service.backend.stop(job.id, job.ref)
            except BackendUnreachable:
                return  # still down
            except BackendError as exc:
                log.warning("could not stop job %s: %s", job.id, exc)
                continue
            log.info("stopped job %s: its stop was asked for while the backend could not be reached", job.id)
            job.ref.pop("stop_pending", None)
            with self.service.session() as s:
                row = s.get(Job, job.id)
                if row is not None:
                    row.backend_ref = {k: v for k, v in (row.backend_ref or {}).items() if k != "stop_pending"}
                    s.add(JobEvent(job_id=job.id, ts=utcnow(), status=row.status, message="Stop carried out"))

