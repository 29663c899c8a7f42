"""Prices per GPU type on the test control plane (KWOK nodes labelled `nvidia.com/gpu.product`, testenv/gpu-nodes.yaml):
a job is priced by its node's label, or with Kueue by the flavor its Workload was admitted with; the Usage page's
GPU type breakdown names them; a price that takes effect during a run is cut in at that second; and the
node-gpu-types component is exactly the right the portal's own ServiceAccount needs to read the label."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
import yaml

from services.backends.k8s_status import parse_time
from services.models import JobStatus, Role, User
from services.portal import Portal, build_portal
from services.usage import UsageService, parse_query
from tests.conftest import wait_until
from tests.k8s.conftest import Cluster, k8s_settings, render_manifests, service_account_kubeconfig
from tests.k8s.kueue_env import kueue  # noqa: F401 - the fixture
from tests.k8s.test_kubernetes_backend import finished, until
from tests.k8s.test_kueue import KUEUE_MANIFESTS, drain, team_queues  # noqa: F401 - the fixture

ME = User(name="researcher", role=Role.ADMIN)
H100 = "NVIDIA-H100-80GB-HBM3"  # the label of testenv/gpu-nodes.yaml's nodes


def pod_spans(cluster: Cluster, namespace: str, job_id: int) -> list[tuple]:
    """Each pod's (start, end, node) as the cluster recorded them."""
    pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-l", f"job-name=mlp-{job_id}", "-o",
                                      "json"))["items"]
    return [(parse_time(p["status"]["startTime"]),
             parse_time(p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]),
             p["spec"]["nodeName"]) for p in pods]


def usage_by_type(portal: Portal) -> dict[str, tuple[float, float]]:
    rows = UsageService.of(portal.jobs).rows(ME, parse_query(None, None, "gpu_type"))
    return {r["gpu_type"]: (r["gpu_hours"], r["cost"]) for r in rows}


def set_price(portal: Portal, gpu_type: str, gpu_hour: float, node_hour: float, effective_from: str) -> None:
    UsageService.of(portal.jobs).set_price(ME, {"gpu_type": gpu_type, "gpu_hour": gpu_hour, "node_hour": node_hour,
                                                "effective_from": effective_from})


def test_a_job_on_a_labelled_node_costs_that_gpu_types_price_and_is_counted_under_it(k8s_portal, cluster, namespace):
    set_price(k8s_portal, H100, gpu_hour=36.0, node_hour=3.6, effective_from="2020-01-01")
    k8s_portal.settings.pod_annotations = {"kwok.test/runtime": "4s"}
    job_id = k8s_portal.jobs.submit(ME, {"name": "on-h100", "script": "train_example.py", "epochs": 3, "gpus": 2})
    done = finished(k8s_portal, job_id, timeout=90)
    assert done.status is JobStatus.SUCCEEDED, done.reason

    [(start, end, node)] = pod_spans(cluster, namespace, job_id)
    assert node in ("gpu-node-0", "gpu-node-1")
    ran = (end - start).total_seconds()
    assert ran >= 3
    assert done.cost_total == pytest.approx(ran / 3600 * (2 * 36.0 + 3.6), abs=0.005)  # not the default $2.50
    assert done.cost_per_hour == pytest.approx(2 * 36.0 + 3.6)
    by_type = usage_by_type(k8s_portal)
    assert set(by_type) == {H100}, by_type  # the Usage page's GPU type breakdown: the real type, no "gpu"
    assert by_type[H100][1] == pytest.approx(done.cost_total, abs=0.001)
    assert by_type[H100][0] == pytest.approx(2 * ran / 3600, abs=1e-4)


def test_a_price_that_takes_effect_during_a_run_prices_each_side_of_it_and_one_set_after_the_end_changes_nothing(
        k8s_portal, cluster, namespace):
    set_price(k8s_portal, H100, gpu_hour=3600.0, node_hour=0.0, effective_from="2020-01-01")  # $1 a GPU-second
    k8s_portal.settings.pod_annotations = {"kwok.test/runtime": "10s"}
    job_id = k8s_portal.jobs.submit(ME, {"name": "across-a-price", "script": "train_example.py", "epochs": 3,
                                         "gpus": 1})
    start = wait_until(lambda: parse_time(cluster.kubectl(
        "-n", namespace, "get", "pods", "-l", f"job-name=mlp-{job_id}", "-o", "jsonpath={.items[0].status.startTime}",
        check=False).strip() or None), timeout=60, interval=0.2)
    change = start + timedelta(seconds=4)  # a few seconds into the run: $2 a GPU-second from then on
    set_price(k8s_portal, H100, gpu_hour=7200.0, node_hour=0.0, effective_from=change.isoformat())
    running = until(k8s_portal, job_id, lambda j: j.status is JobStatus.RUNNING or not j.is_active)
    assert running.status is JobStatus.RUNNING, "the new price was set before the job ended"
    done = finished(k8s_portal, job_id, timeout=90)
    assert done.status is JobStatus.SUCCEEDED, done.reason

    [(pod_start, end, _)] = pod_spans(cluster, namespace, job_id)
    assert pod_start == start and end > change
    expected = (change - start).total_seconds() * 1.0 + (end - change).total_seconds() * 2.0
    assert done.cost_total == pytest.approx(expected, abs=1.0)  # within a second's worth
    old_only = (end - start).total_seconds()
    assert done.cost_total - old_only > 4  # the new price did count, from its second on
    assert usage_by_type(k8s_portal)[H100][1] == pytest.approx(done.cost_total, abs=0.001)

    # After its end, a price dated before its run (an admin correcting the month) leaves its cost as it was.
    before = (start - timedelta(hours=1)).isoformat()
    set_price(k8s_portal, H100, gpu_hour=360000.0, node_hour=0.0, effective_from=before)
    for _ in range(3):
        k8s_portal.sync.tick()
    assert k8s_portal.jobs.get(ME, job_id).cost_total == done.cost_total
    assert usage_by_type(k8s_portal)[H100][1] == pytest.approx(done.cost_total, abs=0.001)


def test_with_kueue_and_no_node_label_the_admitted_flavor_is_the_gpu_type(cluster, namespace, tmp_path,
                                                                          team_queues):  # noqa: F811
    cluster.kubectl("-n", namespace, "apply", "-f", str(KUEUE_MANIFESTS / "localqueues.yaml"))
    settings = k8s_settings(cluster, namespace, tmp_path / "portal-data", kueue_default_queue="team-a",
                            kueue_visibility_url=team_queues.visibility_url, gpu_type_node_label="",
                            pod_annotations={"kwok.test/runtime": "4s"})
    portal = build_portal(settings)
    try:
        set_price(portal, "h100", gpu_hour=18.0, node_hour=0.0, effective_from="2020-01-01")
        job_id = portal.jobs.submit(ME, {"name": "in-team-a", "script": "train_example.py", "epochs": 3, "gpus": 2})
        done = finished(portal, job_id, timeout=120)
        assert done.status is JobStatus.SUCCEEDED, done.reason
        flavors = cluster.kubectl("-n", namespace, "get", "workloads.kueue.x-k8s.io", "-o",
                                  "jsonpath={.items[*].status.admission.podSetAssignments[*].flavors}")
        assert '"nvidia.com/gpu":"h100"' in flavors  # what Kueue itself assigned
        [(start, end, _)] = pod_spans(cluster, namespace, job_id)
        ran = (end - start).total_seconds()
        assert done.cost_total == pytest.approx(ran / 3600 * 2 * 18.0, abs=0.005)
        assert set(usage_by_type(portal)) == {"h100"}
    finally:
        portal.close()
        drain(cluster, namespace)


def test_the_node_gpu_types_component_is_the_one_right_the_portals_account_needs(cluster, namespace, tmp_path,
                                                                                 caplog):
    rendered = render_manifests(cluster, tmp_path / "k", "overlays/kubernetes", namespace,
                                ("components/node-gpu-types",))
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    rbac = {"ServiceAccount", "Role", "RoleBinding"}
    granted = [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")
               and d["metadata"]["name"] == "ml-portal-node-gpu-types"]
    assert len(granted) == 2
    namespaced = tmp_path / "namespaced.yaml"
    namespaced.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] in rbac]))
    cluster.kubectl("apply", "-f", str(namespaced))
    token = service_account_kubeconfig(cluster, namespace, "ml-portal", tmp_path / "sa.kubeconfig")

    def run(name: str) -> tuple[object, dict]:
        portal = build_portal(k8s_settings(cluster, namespace, tmp_path / "portal-data", kubeconfig=str(token),
                                           pod_annotations={"kwok.test/runtime": "2s"}))
        try:
            job = finished(portal, portal.jobs.submit(ME, {"name": name, "script": "train_example.py", "epochs": 3,
                                                           "gpus": 1}), timeout=90)
            return job, usage_by_type(portal)
        finally:
            portal.close()

    # The Role alone: the node is not readable, so the job is priced as the default type, said once at INFO.
    caplog.set_level(logging.INFO, logger="services.backends.k8s_gpu_types")
    job, by_type = run("role-only")
    assert job.status is JobStatus.SUCCEEDED, job.reason
    assert set(by_type) == {"gpu"}
    said = [r for r in caplog.records if "GPU type label" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO and "403" in said[0].getMessage()

    cluster_wide = tmp_path / "cluster-wide.yaml"
    cluster_wide.write_text(yaml.safe_dump_all(granted))
    cluster.kubectl("apply", "-f", str(cluster_wide))
    try:
        who = f"--as=system:serviceaccount:{namespace}:ml-portal"
        assert cluster.kubectl("auth", "can-i", "get", "nodes", who, check=False).strip() == "yes"
        assert cluster.kubectl("auth", "can-i", "list", "nodes", who, check=False).strip() == "no"
        job, by_type = run("with-component")
        assert job.status is JobStatus.SUCCEEDED, job.reason
        assert set(by_type) == {"gpu", H100}  # the first job as it was, this one under its node's label
    finally:
        cluster.kubectl("delete", "-f", str(cluster_wide), "--wait=false", check=False)
