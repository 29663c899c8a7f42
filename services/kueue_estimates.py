"""Estimated starts for jobs waiting in a backend's own queues (Kueue): the local queue's simulation
(services/queue_plan.py through local_queue.estimates) replayed over one queue at a time, in the order the backend
reports, against the queue's GPU quota, with the admitted jobs' expected ends (their ETA, max runtime and earlier
runs of the same name) from the store.

Two things are Kueue's own. Its default queueing strategy (BestEffortFIFO) lets a job that fits start ahead of an
earlier one that does not, so the replay does too unless the ClusterQueue says StrictFIFO. And a job that has never
run before still has a basis once the queue has some history: how much of their max runtime the backend's latest
finished jobs used (their 10th to 90th percentile), applied to its own max runtime. Without either, "unknown".

Only the portal's own jobs are known: other workloads in the same ClusterQueue, or a cohort lending quota, make
the truth differ, and the estimate is a range for that reason. A queue without a GPU quota gets no estimate.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from services import local_queue
from services.backends.base import ActiveJob, queue_statuses, queue_summaries
from services.models import JobStatus
from services.queue_model import QueueStatus
from services.queue_plan import Limits
from services.store.orm import Job

if TYPE_CHECKING:
    from services.jobs import JobService

CACHE_SECONDS = 1.0  # a dashboard draws many cards in one render: each queue is simulated once for them
_cache: dict[int, tuple[float, dict[int, QueueStatus]]] = {}
LEARN_FROM = 40  # the latest finished jobs whose share of their max runtime is the basis for a never-run name
LEARN_AT_LEAST = 5


def _rows(service: JobService, ids: list[int]) -> dict[int, local_queue.Row]:
    with service.session() as s:
        jobs = s.execute(select(Job.id, Job.owner, Job.name, Job.gpus, Job.nodes, Job.request, Job.created_at,
                                Job.started_at, Job.eta_seconds).where(Job.id.in_(ids))).all()
    return {j.id: local_queue.Row(j.id, j.owner, j.name, j.gpus * max(1, j.nodes or 1),
                                  str((j.request or {}).get("priority", "normal")), j.created_at, j.started_at,
                                  j.eta_seconds, float((j.request or {}).get("max_runtime_hours", 8)) * 3600, {})
            for j in jobs}


def _used_share(service: JobService) -> tuple[float, float] | None:
    """The 10th and 90th percentile of the share of their max runtime the backend's latest successful jobs ran."""
    with service.session() as s:
        done = s.execute(select(Job.runtime_seconds, Job.request).where(
            Job.backend == service.backend.name, Job.status == JobStatus.SUCCEEDED.value,
            Job.runtime_seconds.is_not(None)).order_by(Job.id.desc()).limit(LEARN_FROM)).all()
    shares = sorted(min(1.0, float(d.runtime_seconds) / (float((d.request or {}).get("max_runtime_hours", 8)) * 3600))
                    for d in done)
    if len(shares) < LEARN_AT_LEAST:
        return None
    return shares[int(0.1 * (len(shares) - 1))], shares[math.ceil(0.9 * (len(shares) - 1))]


def _strict_order(service: JobService, queue: str) -> bool:
    """Whether the LocalQueue's ClusterQueue keeps StrictFIFO (a job that does not fit holds up those behind)."""
    view = getattr(getattr(service.backend, "kueue", None), "view", None)
    if view is None:
        return True
    cq = ((view.local_queues.get(queue) or {}).get("spec") or {}).get("clusterQueue") or queue
    return ((view.cluster_queues.get(cq) or {}).get("spec") or {}).get("queueingStrategy") == "StrictFIFO"


def _estimated(service: JobService) -> dict[int, QueueStatus]:
    """Every waiting job of the backend's queues, with its start range where there is a basis for one."""
    summaries = queue_summaries(service.backend)
    waiting_ids = [i for q in summaries for i in q.waiting]
    if not waiting_ids:
        return {}
    statuses = queue_statuses(service.backend, [ActiveJob(i, {}, 8.0) for i in waiting_ids])
    now = datetime.now(UTC)
    out = dict(statuses)
    share = _used_share(service)
    for q in summaries:
        if q.quota_gpus is None or not q.waiting:
            continue
        rows = _rows(service, [*q.running, *q.waiting])
        limits = Limits(q.quota_gpus, strict_order=_strict_order(service, q.name))
        snap = local_queue.Snapshot(limits, [rows[i] for i in q.running if i in rows],
                                    [rows[i] for i in q.waiting if i in rows])
        learned = {r.name: [share[0] * r.max_runtime_s, share[1] * r.max_runtime_s] for r in rows.values()} \
            if share else None
        for job_id, est in local_queue.estimates(service, snap, now, learned).items():
            if job_id in out:
                out[job_id] = replace(out[job_id], estimate=est)
    return out


def statuses_with_estimates(service: JobService, jobs: list[ActiveJob]) -> dict[int, QueueStatus]:
    """What queue_statuses says of these jobs, each with an estimated start where one can be given."""
    hit = _cache.get(id(service))
    if hit is None or time.monotonic() - hit[0] >= CACHE_SECONDS:
        hit = (time.monotonic(), _estimated(service))
        _cache[id(service)] = hit
    known = hit[1]
    missing = [j for j in jobs if j.id not in known]
    out = {j.id: known[j.id] for j in jobs if j.id in known}
    if missing:  # not (yet) in a queue's pending list: as the backend says, without an estimate
        out |= queue_statuses(service.backend, missing)
    return out
