"""The estimated start of a job waiting in a Kueue queue (services/kueue_estimates.py), over the real store.

Kueue's own answers (its pending list, its ClusterQueue) are given as the Kubernetes backend keeps them after a
read; tests/k8s/test_kueue.py and bench/kueue_estimate.py check the estimate against a real Kueue.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from services import kueue_estimates
from services.backends.base import ActiveJob
from services.backends.k8s_kueue import KueueView
from services.models import JobStatus
from services.portal import Portal
from services.queue_model import QueueStatus, QueueSummary
from services.queue_plan import Holder, Limits, Waiter, simulate
from services.store.orm import Job

NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _now() -> None:
    """Each test's own now: a module-level one is the suite's collection time, minutes before the test runs."""
    global NOW
    NOW = datetime.now(UTC)


class KueueAnswers:
    """What the Kubernetes backend answers from its last read of Kueue: one LocalQueue `team` of 8 GPUs."""

    name = "kubernetes"

    def __init__(self, running: list[int], waiting: list[int], strategy: str | None = None):
        self.running, self.waiting = running, waiting
        spec = {"queueingStrategy": strategy} if strategy else {}
        self.kueue = SimpleNamespace(view=KueueView(local_queues={"team": {"spec": {"clusterQueue": "cq"}}},
                                                    cluster_queues={"cq": {"spec": spec}}))

    def queue_summaries(self) -> list[QueueSummary]:
        return [QueueSummary("team", 8, 8, list(self.waiting), list(self.running))]

    def queue_statuses(self, jobs: list[ActiveJob]) -> dict[int, QueueStatus]:
        return {j.id: QueueStatus("team", self.waiting.index(j.id) + 1, self.waiting[: self.waiting.index(j.id)],
                                  "team's quota of 8 GPUs is in use", None) for j in jobs if j.id in self.waiting}


def add_job(portal: Portal, name: str, gpus: int, status: JobStatus, max_hours: float, *,
            runtime: float | None = None, started: datetime | None = None) -> int:
    with portal.jobs.session() as s:
        job = Job(submission_id=str(uuid.uuid4()), owner="ada", name=name, status=status.value,
                  status_group=status.value, backend="kubernetes", backend_ref={"queue": "team"},
                  request={"max_runtime_hours": max_hours}, gpus=gpus, created_at=NOW - timedelta(hours=1),
                  started_at=started, updated_at=NOW, runtime_seconds=runtime)
        s.add(job)
        s.flush()
        return job.id


def service_on(portal: Portal, backend: KueueAnswers):
    service = copy.copy(portal.jobs)
    service.backend = backend
    kueue_estimates._cache.clear()
    return service


def test_a_never_run_job_gets_a_range_learned_from_the_queues_finished_jobs(portal: Portal) -> None:
    """Six finished jobs ran 40-60 % of their max runtime; an 8-GPU job of a name that never ran holds the queue
    (started 10 min ago, max 2 h) and another new name waits behind it: its card shows a range from when the
    holder should end soonest (48 min after its start) to a margin past its latest (60 min x 1.25), not "unknown"."""
    for i, share in enumerate([0.4, 0.45, 0.5, 0.5, 0.55, 0.6]):
        add_job(portal, f"done-{i}", 1, JobStatus.SUCCEEDED, 1.0, runtime=share * 3600)
    holder = add_job(portal, "pretrain", 8, JobStatus.RUNNING, 2.0, started=NOW - timedelta(minutes=10))
    waiter = add_job(portal, "finetune", 8, JobStatus.QUEUED, 1.0)
    service = service_on(portal, KueueAnswers([holder], [waiter]))
    est = kueue_estimates.statuses_with_estimates(service, [ActiveJob(waiter, {}, 1.0)])[waiter].estimate
    assert est is not None
    assert timedelta(minutes=37) <= est.earliest - NOW <= timedelta(minutes=39)
    assert timedelta(minutes=79) <= est.latest - NOW <= timedelta(minutes=82)

    # With fewer than five finished jobs there is no basis yet: "unknown", as before.
    with portal.jobs.session() as s:
        for job in s.query(Job).filter(Job.name.in_(["done-0", "done-1"])):
            s.delete(job)
    service = service_on(portal, KueueAnswers([holder], [waiter]))
    assert kueue_estimates.statuses_with_estimates(service, [ActiveJob(waiter, {}, 1.0)])[waiter].estimate is None


def test_a_small_job_behind_a_big_one_is_estimated_to_start_first_as_kueue_admits_it(portal: Portal) -> None:
    """6 of 8 GPUs held for 30 min; an 8-GPU job waits first, a 1-GPU job behind it. Kueue's default strategy
    (BestEffortFIFO) admits the small one at once, and its estimate says so; a StrictFIFO queue holds it."""
    for i in range(5):
        add_job(portal, "small", 1, JobStatus.SUCCEEDED, 1.0, runtime=600 + 10 * i)
        add_job(portal, "holder", 6, JobStatus.SUCCEEDED, 1.0, runtime=1800)
    holder = add_job(portal, "holder", 6, JobStatus.RUNNING, 1.0, started=NOW)
    big = add_job(portal, "holder", 8, JobStatus.QUEUED, 1.0)
    small = add_job(portal, "small", 1, JobStatus.QUEUED, 1.0)
    jobs = [ActiveJob(big, {}, 1.0), ActiveJob(small, {}, 1.0)]
    est = kueue_estimates.statuses_with_estimates(service_on(portal, KueueAnswers([holder], [big, small])),
                                                  jobs)[small].estimate
    assert est is not None and est.earliest - NOW < timedelta(seconds=5)
    strict = kueue_estimates.statuses_with_estimates(
        service_on(portal, KueueAnswers([holder], [big, small], "StrictFIFO")), jobs)[small].estimate
    assert strict is not None and strict.earliest - NOW > timedelta(minutes=25)


def test_the_replay_lets_a_job_that_fits_pass_one_that_does_not_only_when_the_queue_allows_it() -> None:
    holders = [Holder(1, "ada", 6, 1800.0)]
    waiting = [Waiter(2, "bob", 8, 600.0), Waiter(3, "cy", 1, 600.0)]
    assert simulate(Limits(8, strict_order=False), holders, waiting) == {3: 0.0, 2: 1800.0}
    assert simulate(Limits(8), holders, waiting) == {2: 1800.0, 3: 2400.0}
