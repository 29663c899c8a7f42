"""Which GPU type a cluster pod is priced as (services/backends/k8s_gpu_types.py), without a cluster: a node's label
(its text cleaned) over the Kueue flavor over the default; a node read once per TTL; a refused or failed read falls
back and is said once. The API answers come from a stand-in for the CoreV1Api (the control-plane tests use the real
one: tests/k8s/test_gpu_types_on_cluster.py)."""

from __future__ import annotations

import itertools
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import urllib3
from kubernetes.client.rest import ApiException

from services.backends.base import Observation
from services.backends.k8s_gpu_types import GpuTypes, clean, gpu_flavor
from services.config import Settings
from services.costs import PriceBook, Rate, job_intervals, price_intervals
from services.models import JobStatus

H100 = "NVIDIA-H100-80GB-HBM3"
POD_NUMBERS = itertools.count()


class Nodes:
    """A CoreV1Api's read_node: the nodes' labels, or an error to raise."""

    def __init__(self, labels: dict[str, dict[str, str]] | None = None, error: Exception | None = None):
        self.labels = labels or {}
        self.error = error
        self.reads: list[str] = []

    def read_node(self, name: str, **kw: Any) -> Any:
        self.reads.append(name)
        assert kw.get("_request_timeout") == 7, "the backend's request timeout"
        if self.error:
            raise self.error
        if name not in self.labels:
            raise ApiException(status=404, reason="Not Found")
        return urllib3.HTTPResponse(body=json.dumps({"metadata": {"name": name, "labels": self.labels[name]}}).encode())


def types(nodes: Nodes, **settings: Any) -> GpuTypes:
    return GpuTypes(nodes, Settings(kube_request_timeout_seconds=7, **settings), lambda: None)  # type: ignore[arg-type]


def workload(flavor: str | None) -> dict[str, Any]:
    flavors = {"cpu": "default-cpu"} | ({"nvidia.com/gpu": flavor} if flavor else {})
    return {"status": {"admission": {"clusterQueue": "team-a",
                                     "podSetAssignments": [{"name": "main", "flavors": flavors}]}}}


def observed(*nodes: str | None) -> Observation:
    """New pods on these nodes (a pod's type, once known, is kept for it: each call's are other pods)."""
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    pods = [{"start": start, "end": start + timedelta(hours=1), "node": n, "pod": f"p{next(POD_NUMBERS)}"}
            for n in nodes]
    return Observation(JobStatus.SUCCEEDED, None, extra={"pods": pods})


@pytest.mark.parametrize("raw,clean_text", [
    (H100, H100),
    ("  a100\n", "a100"),
    ("H100\x1b[31m\x00\u202e-evil", "H100[31m-evil"),  # escapes, NUL and a right-to-left override removed
    ("x" * 300, "x" * 100),
    ("\x07\t ", None),
    (None, None),
])
def test_a_label_is_cleaned_before_it_names_a_gpu_type(raw, clean_text):
    assert clean(raw) == clean_text


def test_the_flavor_is_the_one_kueue_assigned_to_the_gpus():
    assert gpu_flavor(workload("a100")) == "a100"
    assert gpu_flavor(workload(None)) is None  # only CPU assigned
    assert gpu_flavor({"status": {}}) is None and gpu_flavor(None) is None  # not admitted, or no Workload


def test_node_label_wins_over_the_flavor_which_wins_over_the_default():
    nodes = Nodes({"gpu-0": {"nvidia.com/gpu.product": H100}, "cpu-0": {}})
    gt = types(nodes)
    obs = observed("gpu-0", "cpu-0", None)
    gt.label(obs, workload("a100"))
    assert [iv.get("gpu_type") for iv in obs.extra["pods"]] == [H100, "a100", "a100"]
    no_flavor = observed("gpu-0", "cpu-0")
    gt.label(no_flavor, None)
    assert [iv.get("gpu_type") for iv in no_flavor.extra["pods"]] == [H100, None]
    # And the cost: each pod at its own type's price, the one without a type at the default's.
    book = PriceBook([(H100, None, Rate(10.0, 0.0)), ("a100", None, Rate(4.0, 0.0))], Rate(1.0, 0.0))
    job = type("J", (), {"gpus": 2, "finished_at": None, "started_at": None, "nodes": 2})()
    priced = price_intervals(book, job_intervals(job, datetime.now(UTC), no_flavor.extra["pods"]), "gpu")
    assert {t: round(c, 2) for (_, t), (_, c) in priced.items()} == {H100: 20.0, "gpu": 2.0}


def test_a_node_is_read_once_and_an_empty_setting_reads_none():
    nodes = Nodes({"gpu-0": {"nvidia.com/gpu.product": H100}})
    gt = types(nodes)
    for _ in range(5):
        gt.label(observed("gpu-0", "gpu-0"), None)
    assert nodes.reads == ["gpu-0"]
    off = Nodes({"gpu-0": {"nvidia.com/gpu.product": H100}})
    obs = observed("gpu-0")
    types(off, gpu_type_node_label="").label(obs, workload("h100"))
    assert off.reads == [] and obs.extra["pods"][0]["gpu_type"] == "h100"
    custom = Nodes({"gpu-0": {"example.com/gpu": "l40s", "nvidia.com/gpu.product": H100}})
    obs = observed("gpu-0")
    types(custom, gpu_type_node_label="example.com/gpu").label(obs, None)
    assert obs.extra["pods"][0]["gpu_type"] == "l40s"


@pytest.mark.parametrize("error", [ApiException(status=403, reason="Forbidden"), ConnectionRefusedError("refused"),
                                   ApiException(status=503, reason="Service Unavailable")])
def test_a_refused_or_failed_read_falls_back_to_the_flavor_and_is_said_once(error, caplog):
    nodes = Nodes(error=error)
    gt = types(nodes)
    caplog.set_level(logging.INFO, logger="services.backends.k8s_gpu_types")
    for node in ("gpu-0", "gpu-1", "gpu-0"):
        obs = observed(node)
        gt.label(obs, workload("h100"))
        assert obs.extra["pods"][0]["gpu_type"] == "h100"
    said = [r for r in caplog.records if "GPU type label" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    # Forbidden is the same answer for every node, and in an outage each read would wait out the request timeout
    # (30 nodes x 10 s a tick): either way asked once, not once per node nor on every tick.
    assert nodes.reads == ["gpu-0"]


def test_after_an_outage_nodes_are_read_again_a_minute_later_and_a_gone_node_stops_only_itself(monkeypatch):
    from services.backends import k8s_gpu_types

    clock = [1000.0]
    monkeypatch.setattr(k8s_gpu_types, "time", type("T", (), {"monotonic": staticmethod(lambda: clock[0])}))
    nodes = Nodes({"gpu-0": {"nvidia.com/gpu.product": H100}}, error=ApiException(status=500))
    gt = types(nodes)
    for _ in range(3):
        gt.label(observed("gpu-0", "gpu-1"), None)
    assert nodes.reads == ["gpu-0"]
    clock[0] += k8s_gpu_types.RETRY_SECONDS + 1
    nodes.error = None
    obs = observed("gpu-0", "gone-0", "gpu-0")
    gt.label(obs, None)  # gone-0 answers 404: gpu-0's new pod is still read
    assert [iv.get("gpu_type") for iv in obs.extra["pods"]] == [H100, None, H100]
    assert nodes.reads == ["gpu-0", "gpu-0", "gone-0"]
