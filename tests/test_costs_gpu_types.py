"""What a cluster job's pods cost by the GPU type each ran on, through accrue() as the sync loop calls it (a store on
SQLite, the pods' intervals labelled by the real GpuTypes over a stand-in CoreV1Api): an untyped pod at the default
type's price, not another pod's; a node's own price only from when it takes effect; a pod's type kept once known,
even when its node later does not answer or is gone, so a job ending then does not freeze the default's price."""

from __future__ import annotations

import json
import types as pytypes
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from sqlalchemy import select

from services.backends import k8s_gpu_types
from services.backends.base import Observation
from services.backends.k8s_gpu_types import NODE_TTL_SECONDS, GpuTypes
from services.costs import accrue, set_price
from services.models import JobStatus
from services.store.cost_tables import JobUsage
from services.store.orm import Job
from tests.conftest import portal_on
from tests.test_gpu_types import H100, Nodes, types

T0 = datetime(2026, 12, 1, 10, tzinfo=UTC)
LABEL = "nvidia.com/gpu.product"


@pytest.fixture
def p(tmp_path):
    with portal_on(f"sqlite:///{tmp_path / 'store.db'}", tmp_path) as portal:
        yield portal


def prices(p, *rows: dict[str, Any]) -> None:
    with p.jobs.session() as s:
        for row in rows:
            set_price(s, "ada", {"node_hour": 0.0, "effective_from": "2020-01-01"} | row)


def cluster_job(p, gpus: int = 1, nodes: int = 1) -> int:
    with p.jobs.session() as s:
        job = Job(submission_id=str(uuid.uuid4()), owner="ada", name="train", status=JobStatus.RUNNING.value,
                  status_group=JobStatus.RUNNING.value, backend="kubernetes", backend_ref={"job_name": "mlp-1"},
                  request={"max_runtime_hours": 8}, gpus=gpus, nodes=nodes, created_at=T0, started_at=T0,
                  updated_at=T0)
        s.add(job)
        s.flush()
        return job.id


def accrued(p, job_id: int, pods: list[dict[str, Any]], now: datetime, final: bool = False
            ) -> tuple[dict[str, float], float]:
    """The job's cost per GPU type and its card's price per hour after one accrual."""
    with p.jobs.session() as s:
        job = s.get(Job, job_id)
        accrue(s, job, p.settings, now=now, final=final, pods=pods)
        rows = s.scalars(select(JobUsage).where(JobUsage.job_id == job_id))
        return {r.gpu_type: round(r.cost, 4) for r in rows}, job.cost_per_hour


def pod(name: str, node: str | None, hours: float | None, gpu_type: str | None = None) -> dict[str, Any]:
    return {"start": T0, "end": None if hours is None else T0 + timedelta(hours=hours), "node": node, "pod": name,
            "uid": f"uid-{name}"} | ({"gpu_type": gpu_type} if gpu_type else {})


def test_a_pod_on_an_unlabelled_node_costs_the_default_types_price_not_its_neighbours(p):
    prices(p, {"gpu_type": H100, "gpu_hour": 10.0}, {"gpu_type": "gpu", "gpu_hour": 1.0})
    job_id = cluster_job(p, gpus=2, nodes=2)
    obs = Observation(JobStatus.RUNNING, extra={"pods": [pod("w0", "gpu-0", 1), pod("w1", "cpu-0", 1)]})
    types(Nodes({"gpu-0": {LABEL: H100}, "cpu-0": {}})).label(obs, None)  # no Kueue flavor either
    costs, per_hour = accrued(p, job_id, obs.extra["pods"], T0 + timedelta(hours=1))
    assert costs == {H100: 20.0, "gpu": 2.0}  # not 20 + 20 under H100
    assert per_hour == 40.0  # the card: 2 nodes x 2 GPUs at the first labelled pod's type


def test_a_node_price_from_a_later_date_leaves_its_gpu_types_price_until_then(p):
    prices(p, {"gpu_type": H100, "gpu_hour": 10.0}, {"gpu_type": "gpu", "gpu_hour": 1.0},
           {"node": "gpu-7", "gpu_hour": 30.0, "effective_from": "2026-12-01T11:00"})
    job_id = cluster_job(p)
    ran = [pod("w0", "gpu-7", 2, H100)]  # one hour at H100's $10, one at gpu-7's own $30
    assert accrued(p, job_id, ran, T0 + timedelta(hours=2)) == ({H100: 40.0}, 30.0)
    # Before the node's price takes effect the card says the type's price, not the default's $1.
    before = cluster_job(p)
    assert accrued(p, before, [pod("w1", "gpu-7", None, H100)], T0 + timedelta(minutes=30)) == ({H100: 5.0}, 10.0)


def test_the_cards_price_per_hour_is_that_of_the_node_the_job_runs_on(p):
    prices(p, {"gpu_type": H100, "gpu_hour": 10.0}, {"node": "gpu-7", "gpu_hour": 30.0, "node_hour": 2.0})
    job_id = cluster_job(p, gpus=2)
    assert accrued(p, job_id, [pod("w0", "gpu-7", None, H100)], T0 + timedelta(hours=1)) == ({H100: 62.0}, 62.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(k8s_gpu_types, "time", pytypes.SimpleNamespace(monotonic=c.monotonic))
    return c


def tick(gt: GpuTypes, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One sync tick's observation: fresh interval dicts from the pods, as k8s_status builds them each time."""
    obs = Observation(JobStatus.RUNNING, extra={"pods": [dict(iv) for iv in pods]})
    gt.label(obs, None)
    return obs.extra["pods"]


@pytest.mark.parametrize("then", ["timeout", "503", "429", "gone"])
def test_a_pods_type_sticks_when_its_node_later_fails_to_answer_or_is_gone(p, clock, then):
    prices(p, {"gpu_type": H100, "gpu_hour": 10.0}, {"gpu_type": "gpu", "gpu_hour": 1.0})
    nodes = Nodes({"gpu-0": {LABEL: H100}, "gpu-1": {}})
    gt = types(nodes)
    job_id = cluster_job(p)
    first = pod("w0", "gpu-0", 1)  # failed after an hour on gpu-0; its retry runs on gpu-1, which has no label
    assert accrued(p, job_id, tick(gt, [first]), T0 + timedelta(hours=1))[0] == {H100: 10.0}
    clock.now += NODE_TTL_SECONDS + 1  # gpu-0's entry expired
    if then == "gone":  # the autoscaler removed the node
        del nodes.labels["gpu-0"]
    else:
        nodes.error = TimeoutError("timed out") if then == "timeout" else ApiException(status=int(then))
    retry = pod("w1", "gpu-1", None) | {"start": T0 + timedelta(hours=1)}
    seen = tick(gt, [first, retry])
    # The ended pod keeps H100's price; the retry (unlabelled, or its node unread) is priced as the default.
    expected = {H100: 10.0, "gpu": 1.0}
    assert accrued(p, job_id, seen, T0 + timedelta(hours=2))[0] == expected
    if then != "gone":  # a new pod on gpu-0 during the outage: the type last read for the node
        assert tick(gt, [pod("w2", "gpu-0", None)])[0]["gpu_type"] == H100
    clock.now += NODE_TTL_SECONDS + 1  # the job ends with the node still unread: frozen at what it ran on
    done = retry | {"end": T0 + timedelta(hours=2)}
    assert accrued(p, job_id, tick(gt, [first, done]), T0 + timedelta(hours=2), final=True)[0] == expected


def test_a_node_recreated_under_its_name_with_other_gpus_leaves_its_earlier_pods_type(clock):
    nodes = Nodes({"pool-a-1": {LABEL: H100}})
    gt = types(nodes)
    old = pod("w0", "pool-a-1", 1)
    assert tick(gt, [old])[0]["gpu_type"] == H100
    clock.now += NODE_TTL_SECONDS + 1
    nodes.labels["pool-a-1"] = {LABEL: "NVIDIA-L4"}
    assert [iv["gpu_type"] for iv in tick(gt, [old, pod("w1", "pool-a-1", None)])] == [H100, "NVIDIA-L4"]


def test_a_node_whose_labels_are_no_map_falls_back_to_the_flavor_and_the_tick_goes_on(clock):
    class OddNodes(Nodes):
        def read_node(self, name: str, **kw: Any) -> Any:
            import urllib3

            self.reads.append(name)
            return urllib3.HTTPResponse(body=json.dumps({"metadata": {"name": name, "labels": ["x"]}}).encode())

    from tests.test_gpu_types import workload

    obs = Observation(JobStatus.RUNNING, extra={"pods": [pod("w0", "gpu-0", None)]})
    types(OddNodes()).label(obs, workload("h100"))
    assert obs.extra["pods"][0]["gpu_type"] == "h100"


def test_a_pods_type_outlives_the_portal_process_when_its_node_is_gone_meanwhile(p):
    """The job's row keeps each pod's type: a new leader (or a restarted portal) has none of the old one's memory,
    and the node the job's first pod ran on was removed meanwhile."""
    prices(p, {"gpu_type": H100, "gpu_hour": 10.0}, {"gpu_type": "gpu", "gpu_hour": 1.0})
    job_id = cluster_job(p)
    first = [pod("w0", "gpu-0", 1)]
    obs = Observation(JobStatus.RUNNING, extra={"pods": first})
    types(Nodes({"gpu-0": {LABEL: H100}})).label(obs, None)
    assert accrued(p, job_id, obs.extra["pods"], T0 + timedelta(hours=1))[0] == {H100: 10.0}
    with p.jobs.session() as s:
        ref = dict(s.get(Job, job_id).backend_ref)
    assert ref["pod_gpu_types"] == {"uid-w0": H100} and ref["job_name"] == "mlp-1"
    gone = ApiException(status=404, reason="Not Found")
    later = Observation(JobStatus.RUNNING, extra={"pods": [pod("w0", "gpu-0", 1), pod("w1", "gpu-1", None)]})
    types(Nodes(error=gone)).label(later, None, ref["pod_gpu_types"])
    costs, _ = accrued(p, job_id, later.extra["pods"], T0 + timedelta(hours=2))
    assert costs == {H100: 10.0, "gpu": 2.0}, "w0 still H100 (its node gone); w1's node says nothing"
