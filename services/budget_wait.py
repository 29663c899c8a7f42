"""Budgets that say "wait" where the queue is the cluster's (Kubernetes, with Kueue or without): a new job of a
spent team or user is recorded Queued and kept in the portal, nothing created in the cluster, until the budget
allows again (raised, or a new month); then the sync loop submits it, once (services/sync_pending.py). Where the
team's own Kueue ClusterQueue is held for its budget (services/budget_holds.py) the job goes to Kueue at once and
waits there instead. The embedded backend's jobs wait in its own queue (services/local_queue.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from services import budget_holds, local_queue
from services.budgets import hold_sentence
from services.costs import month_of
from services.models import JobStatus, JobView
from services.store.orm import Job, utcnow

if TYPE_CHECKING:
    from services.jobs import JobService

REASON_PREFIX = "Waiting: "
RELEASED = "The budget allows it now: submitted to the cluster"


def is_waiting(status: str, ref: dict[str, Any] | None) -> bool:
    """A job the portal keeps back for its budget: Queued, and never handed to the backend."""
    return status == JobStatus.QUEUED.value and ref is None


def is_kept_back(service: JobService, job: JobView) -> bool:
    """Whether a job as pages and the API see it is one the portal keeps back for its budget."""
    return (job.status is JobStatus.QUEUED and (job.reason or "").startswith(REASON_PREFIX)
            and not local_queue.uses_store_queue(service))  # the embedded queue's own budget waits are its jobs


def wait_sentence(service: JobService, s: Session, owner: str, team: str) -> str | None:
    """Why a new job of this owner and team is kept back now, else None. A team's spent budget is waited out in
    Kueue instead where the team's ClusterQueue is its own and held (a shared one is never held: the other teams
    would wait too)."""
    month = month_of(utcnow())
    mine = hold_sentence(s, owner, "", month)
    if mine:
        return mine
    teams = hold_sentence(s, "", team, month) if team else None
    if teams and not budget_holds.held_in_kueue(service, s, team):
        return teams
    return None


def hold_back(service: JobService, job_id: int, owner: str, team: str, first: bool) -> bool:
    """Before a recorded job is handed to the backend: True when its budget keeps it back (it is then Queued with
    the reason), or when there is nothing to submit (stopped meanwhile, or handed over already: a replica that lost
    its lease may come late); False: submit it now. `first`: the job's own submit. A Submitting job asked again
    (after an outage, or a portal that died mid-submit) is never kept back: its earlier create may have landed, and
    a job kept back is never observed."""
    if local_queue.uses_store_queue(service):
        return False
    from services.jobs import set_status  # not at the top: services/jobs.py imports this module

    # Weighed before the row is locked: with Kueue holds it may ask the cluster, and a Stop must not wait on that.
    with service.session() as s:
        sentence = wait_sentence(service, s, owner, team)
    with service.session() as s:
        job = s.get_one(Job, job_id, with_for_update=True)  # a Stop meanwhile is not overwritten
        if job.backend_ref is not None or job.status not in (JobStatus.SUBMITTING.value, JobStatus.QUEUED.value):
            return True
        if job.status == JobStatus.SUBMITTING.value and not first:
            return False
        if sentence is None:
            if job.status == JobStatus.QUEUED.value:  # released: Submitting, as any job being handed over
                job.reason = None
                set_status(s, job, JobStatus.SUBMITTING, RELEASED)
            return False
        reason = REASON_PREFIX + sentence
        if job.reason != reason:
            job.reason = reason
            set_status(s, job, JobStatus.QUEUED, reason)
        return True
