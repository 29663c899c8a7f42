"""GPU telemetry end to end: a job on the test cluster, its pod's GPUs reported by a DCGM exporter through a
real Prometheus, and the portal's sync loop turning that into the card's GPU %, the job page's GPU graphs and
the "idle GPUs" badge."""

from __future__ import annotations

import json
import time
from pathlib import Path

from services.models import JobStatus, Role, User
from services.portal import build_portal
from tests.gpu_telemetry_env import PrometheusEnv, gpu
from tests.k8s.conftest import Cluster, k8s_settings
from tests.k8s.test_kubernetes_backend import until
from tests.test_gpu_telemetry import _require_prometheus

ME = User("researcher", Role.ADMIN)


def test_gpu_utilisation_memory_and_idle_badge_from_prometheus(cluster: Cluster, namespace: str,
                                                              tmp_path: Path) -> None:
    prom = PrometheusEnv(tmp_path / "prom", binary=_require_prometheus()).start()
    portal = build_portal(k8s_settings(cluster, namespace, tmp_path / "data", prometheus_url=prom.url,
                                       pod_annotations={"kwok.test/outcome": "hang"}, gpu_idle_minutes=0.02))
    try:
        assert portal.telemetry is not None and portal.sync.telemetry is portal.telemetry
        job_id = portal.jobs.submit(ME, {"name": "gpu-busy", "gpus": 2, "script": "train_example.py"})
        until(portal, job_id, lambda j: j.status is JobStatus.RUNNING)
        pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-l", f"ml-portal/job-id={job_id}",
                                          "-o", "json"))["items"]
        pod_name = pods[0]["metadata"]["name"]
        busy = {"namespace": namespace, "pod": pod_name, "hostname": "gpu-node-0",
                "gpus": [gpu(engine=0.9, util=91, fb_mib=30_000), gpu(engine=0.7, util=72, fb_mib=20_000)]}
        prom.set_gpus([busy])
        portal.sync.sample_gpus()
        job = portal.jobs.get(ME, job_id)
        assert job.gpu_util == 80.0 and job.gpu_memory_mib == 50_000
        assert not job.gpus_idle(time.time(), portal.settings.gpu_idle_minutes)

        idle = dict(busy, gpus=[gpu(engine=0.02, util=2, fb_mib=1_000), gpu(engine=0.03, util=3, fb_mib=1_000)])
        prom.set_gpus([idle])
        portal.sync.sample_gpus()
        time.sleep(1.5)  # the idle threshold is 0.02 minutes here
        portal.sync.sample_gpus()
        job = portal.jobs.get(ME, job_id)
        assert job.gpu_util == 2.5 and job.gpus_idle(time.time(), portal.settings.gpu_idle_minutes)
        graphs = portal.jobs.gpu_series(job_id)
        assert list(graphs["GPU utilisation (%)"].y) == [80.0, 2.5, 2.5]
        assert graphs["GPU memory (MiB)"].y[0] == 50_000
        portal.jobs.stop(ME, job_id)
    finally:
        portal.close()
        prom.stop()


def test_an_unreachable_prometheus_is_a_sentence_and_leaves_the_job_alone(cluster: Cluster, namespace: str,
                                                                          tmp_path: Path) -> None:
    portal = build_portal(k8s_settings(cluster, namespace, tmp_path / "data", prometheus_url="http://127.0.0.1:9",
                                       pod_annotations={"kwok.test/outcome": "hang"}))
    try:
        job_id = portal.jobs.submit(ME, {"name": "gpu-nomon", "gpus": 1, "script": "train_example.py"})
        until(portal, job_id, lambda j: j.status is JobStatus.RUNNING)
        portal.sync.sample_gpus()
        assert portal.sync.gpu_error and "127.0.0.1:9" in portal.sync.gpu_error
        assert portal.jobs.get(ME, job_id).gpu_util is None, "no reading is not a 0 %"
        portal.jobs.stop(ME, job_id)
    finally:
        portal.close()
