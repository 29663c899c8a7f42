"""The local queue's one rule, and the simulation of it that estimates start times.

Pure functions over plain records: the same rule decides who starts now (services/local_queue.py) and, replayed
over the running jobs' expected ends, when each waiting job should start. Waiting jobs are in queue order (priority,
then submission). A job whose owner is at a per-user limit is passed by the others (it waits for its owner's own
jobs, not for the queue); a job that needs more GPUs than are free holds up every GPU job behind it, so that a big
job is not starved by a stream of small ones. Jobs that need no GPU only wait for per-user limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    capacity: int  # GPUs the queue shares
    gpus_per_user: int = 0  # 0: no limit
    jobs_per_user: int = 0
    # False: a job that does not fit holds up nobody behind it (Kueue's BestEffortFIFO, its default); True: it holds
    # up every GPU job behind it (this machine's queue, Kueue's StrictFIFO).
    strict_order: bool = True


@dataclass(frozen=True)
class Holder:
    """An admitted job: it holds its GPUs until it ends, `remaining` seconds from now (math.inf: not known)."""

    id: int
    owner: str
    gpus: int
    remaining: float = math.inf


@dataclass(frozen=True)
class Waiter:
    """A waiting job, in queue order; it runs `duration` seconds once started (math.inf: not known)."""

    id: int
    owner: str
    gpus: int
    duration: float = math.inf


def user_limit_hit(w: Waiter, holders: list[Holder], limits: Limits) -> bool:
    mine = [h for h in holders if h.owner == w.owner]
    if limits.jobs_per_user and len(mine) >= limits.jobs_per_user:
        return True
    return bool(limits.gpus_per_user and w.gpus and sum(h.gpus for h in mine) + w.gpus > limits.gpus_per_user)


def startable(limits: Limits, holders: list[Holder], waiting: list[Waiter]) -> list[Waiter]:
    """The waiting jobs that start now, in order."""
    held = list(holders)
    free = limits.capacity - sum(h.gpus for h in held)
    gpu_blocked = False
    out: list[Waiter] = []
    for w in waiting:
        if user_limit_hit(w, held, limits) or w.gpus > limits.capacity:
            continue  # an over-capacity job (the machine's count lowered since) never starts: it holds up nobody
        if w.gpus and ((gpu_blocked and limits.strict_order) or w.gpus > free):
            gpu_blocked = True
            continue
        free -= w.gpus
        held.append(Holder(w.id, w.owner, w.gpus, w.duration))
        out.append(w)
    return out


def simulate(limits: Limits, holders: list[Holder], waiting: list[Waiter]) -> dict[int, float]:
    """Seconds from now until each waiting job starts, if running jobs end as said and nothing new arrives.
    A job missing from the answer never starts in the simulation (it waits on an end that is not known)."""
    now = 0.0
    running = [(h.remaining, h) for h in holders]
    pending = list(waiting)
    starts: dict[int, float] = {}
    for _ in range(2 * len(waiting) + len(holders) + 1):  # each round starts or ends a job
        for w in startable(limits, [h for _, h in running], pending):
            starts[w.id] = now
            running.append((now + w.duration, Holder(w.id, w.owner, w.gpus, w.duration)))
            pending.remove(w)
        if not pending or not running:
            break
        now = min(end for end, _ in running)
        if math.isinf(now):
            break
        running = [(end, h) for end, h in running if end > now]
    return starts
