"""Where jobs wait and why, as pages and the API show it: the store's own queue locally, the backend's elsewhere.

The backends report job ids only; this module puts names on them as far as the viewer may see each job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from services import budget_wait, local_queue
from services.backends.base import ActiveJob, queue_summaries
from services.kueue_estimates import statuses_with_estimates
from services.models import JobStatus, JobView, User
from services.queue_model import DEFAULT_PRIORITY, QueueStatus, QueueSummary
from services.store.orm import Job

if TYPE_CHECKING:
    from services.jobs import JobService

HIDDEN_NAME = "another user's job"


KEPT_BACK_QUEUE = "Kept back for their budgets"
KEPT_BACK_ABOUT = ("Jobs of a spent budget that says 'wait', kept in the portal: nothing of them is in the cluster "
                   "yet. Each is submitted when its budget is raised or the month turns.")


def _kept_status(reason: str | None, request: dict[str, Any] | None) -> QueueStatus:
    # Each is released by its own budget, none waits for another: all are first, with nobody ahead.
    return QueueStatus(KEPT_BACK_QUEUE, 1, [], (reason or "").removeprefix(budget_wait.REASON_PREFIX), None,
                       str((request or {}).get("priority", DEFAULT_PRIORITY)))


def kept_back(service: JobService) -> dict[int, QueueStatus]:
    """The jobs the portal keeps back for their budgets (services/budget_wait.py), in submission order."""
    if local_queue.uses_store_queue(service):
        return {}
    with service.session() as s:
        rows = s.execute(select(Job.id, Job.reason, Job.request).where(
            Job.backend == service.backend.name, Job.status == JobStatus.QUEUED.value, Job.backend_ref.is_(None))
            .order_by(Job.id)).all()
    return {r.id: _kept_status(r.reason, r.request) for r in rows}


def waiting_status(service: JobService, job: JobView) -> QueueStatus | None:
    """A Queued job's place in its queue; None for any other job, or where the backend does not say."""
    if job.status is not JobStatus.QUEUED:
        return None
    if local_queue.uses_store_queue(service):
        return local_queue.statuses(service).get(job.id)
    if budget_wait.is_kept_back(service, job):
        return _kept_status(job.reason, job.request)
    # The backend finds the job by its id (it answers from what its sync loop fetched, not the cluster).
    hours = float((job.request or {}).get("max_runtime_hours", 8))
    return statuses_with_estimates(service, [ActiveJob(job.id, {}, hours)]).get(job.id)


def estimate_text(status: QueueStatus) -> str:
    """'between 14:05 and 14:20 UTC', 'unknown'."""
    est = status.estimate
    if est is None:
        return "unknown"
    fmt = "%H:%M" if est.latest.date() == est.earliest.date() else "%b %d %H:%M"
    first, last = est.earliest.strftime(fmt), est.latest.strftime(fmt)
    return f"about {first} UTC" if first == last else f"between {first} and {last} UTC"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def waiting_line(status: QueueStatus) -> str:
    """One line for a card or the status strip: place, blocker, estimate (job ids are "#12": not a place)."""
    blocker = status.blocker[:1].upper() + status.blocker[1:]
    if status.queue == KEPT_BACK_QUEUE:  # in no queue of the cluster yet: its place there is not known
        return f"Kept back in the portal · {blocker}"
    return (f"{ordinal(status.position)} in the queue of {status.queue} · {blocker} · "
            f"Estimated start: {estimate_text(status)}")


@dataclass(frozen=True)
class QueueLine:
    """A job of a queue as a viewer sees it: the name and owner only of jobs they may see."""

    id: int
    name: str
    owner: str | None
    gpus: int
    priority: str
    visible: bool
    status: QueueStatus | None = None  # waiting jobs only

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name if self.visible else None,
                               "owner": self.owner, "gpus": self.gpus, "priority": self.priority}
        if self.status is not None:
            out |= {"position": self.status.position,
                    "estimated_start": self.status.estimate.to_json() if self.status.estimate else None,
                    # The blocker may name the job's owner: only for those who may see the job.
                    "blocker": self.status.blocker if self.visible else None}
        return out


@dataclass(frozen=True)
class QueueView:
    summary: QueueSummary
    waiting: list[QueueLine]
    running: list[QueueLine]

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {"name": s.name, "description": s.description, "quota_gpus": s.quota_gpus, "used_gpus": s.used_gpus,
                "waiting": [line.to_json() for line in self.waiting],
                "running": [line.to_json() for line in self.running]}


def queue_views(service: JobService, user: User) -> list[QueueView]:
    """Every queue with its quota, usage and jobs in order, for the Queues page and GET /api/v1/queues."""
    if local_queue.uses_store_queue(service):
        summaries, statuses = local_queue.summaries(service), local_queue.statuses(service)
    else:
        summaries = queue_summaries(service.backend)
        ids = [i for q in summaries for i in q.waiting]
        statuses = statuses_with_estimates(service, [ActiveJob(i, {}, 8.0) for i in ids]) if ids else {}
    kept = kept_back(service)
    if kept:
        summaries = [*summaries, QueueSummary(KEPT_BACK_QUEUE, None, 0, list(kept), [], KEPT_BACK_ABOUT)]
        statuses = {**statuses, **kept}
    ids = {i for q in summaries for i in (*q.waiting, *q.running)}
    with service.session() as s:
        rows = {r.id: r for r in s.execute(select(Job.id, Job.name, Job.owner, Job.team, Job.gpus, Job.request)
                                           .where(Job.id.in_(ids)))} if ids else {}
    may_see = service.teams.seeing(user)  # a hidden team's jobs are "another user's job" to non-members

    def line(job_id: int, status: QueueStatus | None) -> QueueLine | None:
        r = rows.get(job_id)
        if r is None:  # deleted meanwhile
            return None
        seen = may_see(r.owner, r.team)
        priority = str((r.request or {}).get("priority", DEFAULT_PRIORITY))
        return QueueLine(r.id, r.name if seen else HIDDEN_NAME, r.owner if seen else None, r.gpus, priority, seen,
                         status)

    views = []
    for q in summaries:
        waiting = [x for i in q.waiting if (x := line(i, statuses.get(i))) is not None]
        running = [x for i in q.running if (x := line(i, None)) is not None]
        views.append(QueueView(q, waiting, running))
    return views
