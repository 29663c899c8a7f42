"""The local backend's queue: Queued rows in the store, started by the sync loop when their GPUs are free.

A job the local backend accepted is prepared but not started (its ref says "waiting"); `admit` starts the waiting
jobs the rule in services/queue_plan.py lets through, on GPU indices no running job holds, and records them. Being
rows, the queue survives a portal restart. `statuses` says where each waiting job stands: its position, what holds
it up in a person's words, and a start range simulated from the running jobs' ETAs (or max runtimes) and how long
the job's own earlier runs took; "unknown" (None) where nothing gives a basis.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from services import budget_holds
from services.backends.base import BackendError
from services.budgets import hold_sentence
from services.costs import month_of
from services.models import JobStatus
from services.queue_model import QueueStatus, QueueSummary, StartEstimate, priority_rank
from services.queue_plan import Holder, Limits, Waiter, simulate, startable, user_limit_hit
from services.store.orm import Job, JobEvent, utcnow

if TYPE_CHECKING:
    from services.jobs import JobService

log = logging.getLogger(__name__)
QUEUE_NAME = "this machine"
ETA_SPREAD = (0.8, 1.25)  # a running job's ETA, as the range its end falls in
HISTORY_RUNS = 5  # earlier runs of the same name that say how long a waiting job takes
_cache: dict[int, tuple[object, float, dict[int, QueueStatus]]] = {}
BUDGET_REASON = "Waiting: the budget is spent"
CACHE_SECONDS = 1.0  # a dashboard draws many cards in one render: the queue is read once for them
# One admission at a time (the sync loop and a page's submit), so GPUs are never lent twice; a Stop waits for it.
_lock = threading.Lock()


@dataclass(frozen=True)
class Row:
    id: int
    owner: str
    name: str
    gpus: int
    priority: str
    created_at: datetime
    started_at: datetime | None
    eta_seconds: float | None
    max_runtime_s: float
    ref: dict[str, Any]
    team: str = ""

    @property
    def waiting(self) -> bool:
        return bool(self.ref.get("waiting"))


@dataclass(frozen=True)
class Snapshot:
    limits: Limits
    holders: list[Row]  # admitted jobs, holding their GPUs
    waiting: list[Row]  # in queue order
    # Waiting jobs whose team's or owner's budget is spent and says "wait": why, in a person's words. They start
    # on the first tick after the budget is raised or the month turns, and hold up nobody meanwhile.
    held: dict[int, str] = field(default_factory=dict)


def uses_store_queue(service: JobService) -> bool:
    return bool(getattr(service.backend, "store_queue", False))


def limits_of(service: JobService) -> Limits:
    st = service.settings
    capacity = int(getattr(service.backend, "machine_gpus", 0))
    return Limits(capacity, st.local_max_gpus_per_user, st.local_max_jobs_per_user)


def snapshot(service: JobService) -> Snapshot:
    with service.session() as s:
        jobs = s.execute(
            select(Job.id, Job.owner, Job.name, Job.gpus, Job.request, Job.created_at, Job.started_at,
                   Job.eta_seconds, Job.backend_ref, Job.team).where(
                Job.backend == service.backend.name,
                Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
            )
        ).all()
        rows = [Row(j.id, j.owner, j.name, j.gpus, str((j.request or {}).get("priority", "normal")), j.created_at,
                    j.started_at, j.eta_seconds, float((j.request or {}).get("max_runtime_hours", 8)) * 3600,
                    dict(j.backend_ref or {}), j.team or "") for j in jobs if j.backend_ref is not None]
        waiting = sorted((r for r in rows if r.waiting and not r.ref.get("stop_requested")),
                         key=lambda r: (-priority_rank(r.priority), r.created_at, r.id))
        month = month_of(utcnow())
        why = {key: hold_sentence(s, *key, month) for key in {(r.owner, r.team) for r in waiting}}
    held = {r.id: text for r in waiting if (text := why[(r.owner, r.team)])}
    return Snapshot(limits_of(service), [r for r in rows if not r.waiting], waiting, held)


def _free(snap: Snapshot) -> list[Row]:
    """The waiting jobs the queue's rule weighs: those no spent budget holds."""
    return [w for w in snap.waiting if w.id not in snap.held]


def _holder(r: Row) -> Holder:
    return Holder(r.id, r.owner, r.gpus)


def _waiter(r: Row) -> Waiter:
    return Waiter(r.id, r.owner, r.gpus)


def _free_indices(snap: Snapshot) -> list[int]:
    taken: set[int] = set()
    for h in snap.holders:
        taken.update(h.ref.get("gpu_indices", range(h.gpus)))
    return [i for i in range(snap.limits.capacity) if i not in taken]


@contextmanager
def no_start_meanwhile() -> Iterator[None]:
    """Held by Stop while it reads and marks a job. A start is then wholly before it (Stop reads the runner's handle
    and signals it) or wholly after it (the queue sees stop_requested and skips the job), never across it: a Stop
    whose read came before a start's commit and its write after put back the "waiting" handle, so the job was
    recorded Stopped while its runner ran on, and one in between was overwritten by the start and lost."""
    with _lock:
        yield


def admit(service: JobService) -> list[int]:
    """Start every waiting job the queue lets through now; returns their ids."""
    if not uses_store_queue(service):
        budget_holds.reconcile(service)  # Kueue's queues are the cluster's: a spent team's is held there
        return []
    started: list[int] = []
    with _lock:
        try:
            snap = snapshot(service)
            free = _free_indices(snap)
            chosen = startable(snap.limits, [_holder(h) for h in snap.holders], [_waiter(w) for w in _free(snap)])
            rows = {w.id: w for w in snap.waiting}
            for w in chosen:
                indices, free = free[: w.gpus], free[w.gpus:]
                if _start(service, rows[w.id], indices):
                    started.append(w.id)
            _note_waiting(service, [w for w in snap.waiting if w.id not in started], snap.held)
        except Exception:  # a locked database: the jobs stay queued and the next tick tries again
            log.exception("could not start the queue's next jobs")
        _cache.pop(id(service), None)  # a submit or a tick changed the queue: the next read sees it
    return started


def _start(service: JobService, row: Row, indices: list[int]) -> bool:
    try:
        ref = service.backend.launch(row.id, indices)  # type: ignore[attr-defined]
    except Exception as exc:  # recorded on the job (a BackendError's or OSError's sentence), never half-started
        if not isinstance(exc, BackendError | OSError):
            log.exception("could not start job %s", row.id)
        with service.session() as s:
            job = s.get(Job, row.id)
            if job is not None and job.status == JobStatus.QUEUED.value:
                from services.jobs import set_status  # not at the top: the use cases import this module

                job.reason = str(exc) if isinstance(exc, BackendError) else f"Could not start the job's process: {exc}"
                job.finished_at = utcnow()
                set_status(s, job, JobStatus.FAILED, job.reason)
        return False
    with service.session() as s:
        job = s.get(Job, row.id)
        stopped = job is None or job.status != JobStatus.QUEUED.value or (job.backend_ref or {}).get("stop_requested")
        if job is not None:
            # Stopped while it was being started: the sync loop sees the runner end and records it.
            job.backend_ref = ref | ({"stop_requested": True} if stopped else {})
            job.reason = None
            if job.spec is not None:
                env = dict(job.spec.get("env") or {})
                env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in indices)
                job.spec = dict(job.spec) | {"env": env}
            s.add(JobEvent(job_id=row.id, ts=utcnow(), status=job.status,
                           message=f"Started: GPUs {', '.join(map(str, indices))} were free" if indices
                           else "Started"))
    if stopped:
        service.backend.stop(row.id, ref)
    return True


def _note_waiting(service: JobService, rows: list[Row], held: dict[int, str]) -> None:
    """A short, stable reason on each waiting row (its place and blocker change too often for the timeline)."""
    if not rows:
        return
    with service.session() as s:
        for r in rows:
            job = s.get(Job, r.id)
            reason = f"Waiting for {r.gpus} GPU{'s' if r.gpus != 1 else ''}" if r.gpus else "Waiting for its turn"
            reason = BUDGET_REASON if r.id in held else reason
            # Set once, but a budget's reason goes when the budget allows (the job may wait for GPUs then).
            if job is not None and job.reason in (None, BUDGET_REASON) and job.reason != reason \
                    and job.status == JobStatus.QUEUED.value:
                job.reason = reason
                s.add(JobEvent(job_id=r.id, ts=utcnow(), status=job.status, message=reason))


# Where each waiting job stands ---------------------------------------------------------------------------------
def _ids(ids: list[int]) -> str:
    tags = [f"#{i}" for i in ids]
    return tags[0] if len(tags) == 1 else ", ".join(tags[:-1]) + " and " + tags[-1]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def blocker(snap: Snapshot, row: Row) -> tuple[str, list[int]]:
    """Why this waiting job is not running, and the running jobs that hold what it needs."""
    if row.id in snap.held:
        return snap.held[row.id], []
    lim = snap.limits
    free = _free(snap)
    ahead = free[: free.index(row)]
    mine = [h for h in snap.holders if h.owner == row.owner]
    if user_limit_hit(_waiter(row), [_holder(h) for h in snap.holders], lim):
        ids = [h.id for h in mine]
        if lim.jobs_per_user and len(mine) >= lim.jobs_per_user:
            return (f"{row.owner} already runs {_plural(len(mine), 'job')} ({_ids(ids)}), the most one person may "
                    f"run at once here; it starts when one of them ends"), ids
        held = sum(h.gpus for h in mine)
        return (f"{row.owner}'s jobs hold {held} of the {lim.gpus_per_user} GPUs one person may use at once here "
                f"({_ids(ids)}); this job needs {row.gpus}"), ids
    if row.gpus > lim.capacity:  # the machine's count was lowered after it was submitted
        return (f"this job needs {row.gpus} GPUs and this machine now has {lim.capacity}: it cannot start; "
                f"stop it and submit it again with fewer"), []
    users = [h for h in snap.holders if h.gpus]
    used = sum(h.gpus for h in users)
    ids = [h.id for h in users]
    if row.gpus > lim.capacity - used:
        if lim.capacity == 1:
            return f"this machine's only GPU is in use by {_ids(ids)}", ids
        verb = "is" if used == 1 else "are"
        return (f"{used} of this machine's {lim.capacity} GPUs {verb} in use by {_ids(ids)}; "
                f"this job needs {row.gpus}"), ids
    held = [_holder(h) for h in snap.holders]
    first = next((a for a in ahead if a.gpus and a.gpus <= lim.capacity
                  and not user_limit_hit(_waiter(a), held, lim)), None)
    if row.gpus and first is not None:
        return (f"#{first.id} is ahead of it and waits for {_plural(first.gpus, 'GPU')}; jobs start in priority, "
                f"then submission order"), ids
    return "Starting: its GPUs are free", []


def _finished_runtimes(service: JobService, names: set[str]) -> dict[str, list[float]]:
    """How long the latest successful runs of each name took (what a waiting job's run should take)."""
    if not names:
        return {}
    with service.session() as s:
        rows = s.execute(
            select(Job.name, Job.runtime_seconds).where(
                Job.name.in_(names), Job.status == JobStatus.SUCCEEDED.value, Job.runtime_seconds.is_not(None))
            .order_by(Job.id.desc()).limit(HISTORY_RUNS * len(names) * 4)
        ).all()
    out: dict[str, list[float]] = {}
    for name, seconds in rows:
        if len(out.setdefault(name, [])) < HISTORY_RUNS:
            out[name].append(float(seconds))
    return out


def _remaining(r: Row, now: datetime, runs: list[float]) -> tuple[float, float]:
    """(soonest, latest) seconds until an admitted job ends; math.inf soonest when nothing says."""
    elapsed = (now - r.started_at).total_seconds() if r.started_at else 0.0
    left_max = max(0.0, r.max_runtime_s - elapsed)  # the runner ends it at its max runtime
    if r.eta_seconds is not None:
        return min(r.eta_seconds * ETA_SPREAD[0], left_max), min(r.eta_seconds * ETA_SPREAD[1], left_max)
    if runs:
        return (min(max(0.0, min(runs) - elapsed), left_max),
                min(max(0.0, max(runs) * ETA_SPREAD[1] - elapsed), left_max))
    return math.inf, left_max


def _duration(r: Row, runs: list[float]) -> tuple[float, float]:
    if runs:
        return min(min(runs), r.max_runtime_s), min(max(runs) * ETA_SPREAD[1], r.max_runtime_s)
    return math.inf, r.max_runtime_s


def estimates(service: JobService, snap: Snapshot, now: datetime,
              learned: dict[str, list[float]] | None = None) -> dict[int, StartEstimate]:
    """Each waiting job's start range: the queue replayed with every job ending soonest, then latest. `learned`:
    runtimes (seconds) to take for a name with no successful run of its own (services/kueue_estimates.py)."""
    runs = (learned or {}) | _finished_runtimes(service, {r.name for r in snap.holders + snap.waiting})
    ends = {r.id: _remaining(r, now, runs.get(r.name, [])) for r in snap.holders}
    takes = {r.id: _duration(r, runs.get(r.name, [])) for r in snap.waiting}
    # A job holds its GPUs a little longer than it runs: its process starts, and its end is seen on a tick.
    overhead = 1.0 + 2 * service.settings.sync_interval_seconds
    starts = []
    for k in (0, 1):
        extra = overhead * k  # the latest case only
        holders = [Holder(h.id, h.owner, h.gpus, ends[h.id][k] + extra) for h in snap.holders]
        waiting = [Waiter(w.id, w.owner, w.gpus, takes[w.id][k] + extra) for w in _free(snap)]
        starts.append(simulate(snap.limits, holders, waiting))
    slack = 2.0 + 3 * service.settings.sync_interval_seconds  # admission happens on the sync loop's ticks
    out: dict[int, StartEstimate] = {}
    for w in snap.waiting:
        soon, late = starts[0].get(w.id), starts[1].get(w.id)
        if soon is None or late is None:
            continue  # it waits on an end nothing gives a basis for: unknown
        out[w.id] = StartEstimate(now + timedelta(seconds=min(soon, late)),
                                  now + timedelta(seconds=max(soon, late) + slack))
    return out


def statuses(service: JobService) -> dict[int, QueueStatus]:
    """Where each waiting job of the local queue stands."""
    hit = _cache.get(id(service))
    if hit is not None and hit[0] is service and time.monotonic() - hit[1] < CACHE_SECONDS:
        return hit[2]
    snap = snapshot(service)
    now = datetime.now(UTC)
    est = estimates(service, snap, now)
    out: dict[int, QueueStatus] = {}
    for i, w in enumerate(snap.waiting):
        text, holders = blocker(snap, w)
        out[w.id] = QueueStatus(QUEUE_NAME, i + 1, [a.id for a in snap.waiting[:i]], text, est.get(w.id),
                                w.priority, holders)
    _cache[id(service)] = (service, time.monotonic(), out)
    return out


def summaries(service: JobService) -> list[QueueSummary]:
    snap = snapshot(service)
    lim = snap.limits
    limits = [f"at most {_plural(lim.gpus_per_user, 'GPU')} per person" if lim.gpus_per_user else "",
              f"at most {_plural(lim.jobs_per_user, 'job')} per person at once" if lim.jobs_per_user else ""]
    about = "; ".join(["Jobs run on this machine, in priority then submission order", *filter(None, limits)])
    return [QueueSummary(QUEUE_NAME, lim.capacity, sum(h.gpus for h in snap.holders), [w.id for w in snap.waiting],
                         [h.id for h in snap.holders], about)]
