"""Budgets that say "wait" on Kubernetes with Kueue: the spent team's own ClusterQueue is held until its budget is
raised or the month turns (opt-in, PORTAL_BUDGET_HOLDS_KUEUE_QUEUES: ClusterQueues are cluster-scoped, so patching
them takes a ClusterRole). A team's queue is its default Kueue queue (Teams page), else the one
PORTAL_KUEUE_GROUP_QUEUES gives its name. A ClusterQueue other teams' jobs reach too is never held; that team's new
jobs wait in the portal instead (services/budget_wait.py), as they do without Kueue or without this setting. The
embedded backend holds such jobs in its own queue (services/local_queue.py)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.backends.k8s_kueue_hold import QueueHolds, held_by_budget
from services.budgets import hold_sentence
from services.costs import month_of
from services.models import JobStatus
from services.store.cost_tables import Budget
from services.store.orm import Job, utcnow
from services.store.team_tables import Team

if TYPE_CHECKING:
    from services.jobs import JobService

log = logging.getLogger(__name__)
EVERY_SECONDS = 5.0  # a budget crosses its limit at an accrual (every 5 s); a hold a few seconds later is fine
_last = 0.0
_lock = threading.Lock()


def _team_queues(service: JobService, s: Session) -> dict[str, str]:
    """Each team's Kueue LocalQueue: its default queue (Teams page), else the one PORTAL_KUEUE_GROUP_QUEUES gives."""
    queues = dict(service.settings.kueue_group_queues)
    queues.update({name: q for name, q in s.execute(select(Team.name, Team.default_queue)) if q})
    return queues


def _own_cluster_queues(service: JobService, s: Session, holds: QueueHolds) -> dict[str, str]:
    """team -> the ClusterQueue only its jobs reach: fed by its LocalQueue alone among the namespace's LocalQueues
    and the queues the portal sends jobs to. A ClusterQueue shared with another team (or with jobs of no team) is
    left out: holding it would hold them too, so the spent team's jobs wait in the portal instead."""
    team_queues = _team_queues(service, s)
    feeds: dict[str, set[str]] = {}  # ClusterQueue -> the LocalQueues that feed it
    for lq, cq in holds.feeds().items():
        if cq:
            feeds.setdefault(cq, set()).add(lq)
    sources = {*team_queues.values(), service.settings.kueue_default_queue}
    out: dict[str, str] = {}
    for team, queue in team_queues.items():
        cq = holds.cluster_queue_of(queue)
        if cq is None:
            continue
        feeders = feeds.get(cq, set()) | {q for q in sources if q and q != queue and holds.cluster_queue_of(q) == cq}
        sharers = [t for t, q in team_queues.items() if q == queue and t != team]
        if feeders <= {queue} and not sharers and queue != service.settings.kueue_default_queue:
            out[team] = cq
    return out


def _waits_in_kueue(s: Session, team: str) -> bool:
    return s.scalar(select(Job.id).where(Job.team == team, Job.status == JobStatus.QUEUED.value,
                                         Job.backend_ref.is_not(None)).limit(1)) is not None


def held_in_kueue(service: JobService, s: Session, team: str) -> bool:
    """Whether this team's spent budget is waited out in Kueue (its own ClusterQueue held), not in the portal."""
    kueue = getattr(service.backend, "kueue", None)
    if not service.settings.budget_holds_kueue_queues or kueue is None or not team:
        return False
    try:
        return team in _own_cluster_queues(service, s, QueueHolds(kueue))
    except Exception:  # the cluster cannot be reached: the portal keeps the job back, which is always safe
        log.info("could not tell whether team %s's Kueue queue is its own; its job waits in the portal", team)
        return False


def reconcile(service: JobService) -> None:
    """Hold or release each waiting-budget team's own ClusterQueue as its budget stands now."""
    global _last
    kueue = getattr(service.backend, "kueue", None)
    if not service.settings.budget_holds_kueue_queues or kueue is None:
        return
    with _lock:
        if time.monotonic() - _last < EVERY_SECONDS:
            return
        _last = time.monotonic()
        try:
            holds = QueueHolds(kueue)
            month = month_of(utcnow())
            with service.session() as s:
                own = _own_cluster_queues(service, s, holds)
                spent = {team: sentence for team in s.scalars(select(Budget.name).where(
                    Budget.scope == "team", Budget.at_limit == "wait"))
                    if (sentence := hold_sentence(s, "", team, month))}
                want: dict[str, str | None] = {cq: spent[team] for team, cq in own.items() if team in spent}
                # A queue held for a spent team that stopped being its own (another team given it, a LocalQueue
                # added) stays held while that team's jobs wait in it: released, Kueue would admit them.
                queues = _team_queues(service, s)
                for name, cq in holds.kueue.view.cluster_queues.items():
                    if name in want or held_by_budget(cq) is None:
                        continue
                    for team, sentence in spent.items():
                        if holds.cluster_queue_of(queues.get(team, "")) == name and _waits_in_kueue(s, team):
                            want[name] = sentence
                            break
            holds.set_holds(want)
        except Exception:  # the cluster cannot be reached: the next tick tries again
            log.exception("could not hold or release the teams' Kueue queues")
