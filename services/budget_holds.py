"""Budgets that say "wait" on Kubernetes with Kueue: the spent team's ClusterQueue is held until its budget is raised or
the month turns (opt-in, PORTAL_BUDGET_HOLDS_KUEUE_QUEUES: ClusterQueues are cluster-scoped, so patching them takes a
ClusterRole, and a ClusterQueue may be shared with other namespaces). A team's queue is its default Kueue queue
(Teams page), else the one PORTAL_KUEUE_GROUP_QUEUES gives its name. The embedded backend holds such jobs in its own
queue instead (services/local_queue.py)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy import select

from services.backends.k8s_kueue_hold import QueueHolds
from services.budgets import hold_sentence
from services.costs import month_of
from services.store.cost_tables import Budget
from services.store.orm import utcnow
from services.store.team_tables import Team

if TYPE_CHECKING:
    from services.jobs import JobService

log = logging.getLogger(__name__)
EVERY_SECONDS = 5.0  # a budget crosses its limit at an accrual (every 5 s); a hold a few seconds later is fine
_last = 0.0
_lock = threading.Lock()


def reconcile(service: JobService) -> None:
    """Hold or release each waiting-budget team's ClusterQueue as its budget stands now."""
    global _last
    kueue = getattr(service.backend, "kueue", None)
    if not service.settings.budget_holds_kueue_queues or kueue is None:
        return
    with _lock:
        if time.monotonic() - _last < EVERY_SECONDS:
            return
        _last = time.monotonic()
        try:
            with service.session() as s:
                month = month_of(utcnow())
                teams = {team: (s.scalar(select(Team.default_queue).where(Team.name == team))
                                or service.settings.kueue_group_queues.get(team), hold_sentence(s, "", team, month))
                         for team in s.scalars(select(Budget.name).where(Budget.scope == "team",
                                                                          Budget.at_limit == "wait"))}
            holds = QueueHolds(kueue)
            want: dict[str, str | None] = {}
            for queue, sentence in teams.values():
                cq = holds.cluster_queue_of(queue) if queue else None
                if cq:
                    want[cq] = want.get(cq) or sentence  # a queue shared by teams: held while one of them is spent
            holds.set_holds(want)
        except Exception:  # the cluster cannot be reached: the next tick tries again
            log.exception("could not hold or release the teams' Kueue queues")
