"""CPU and memory of a job beside its GPU graphs (issue 15, "Charts"): real local jobs sampled by the portal's own
sampler and drawn on the job page (AppTest); cluster jobs' cAdvisor series read from a real Prometheus scraping a
kubelet stand-in (tests/resource_telemetry_env.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from services.auth import local_user
from services.config import Settings
from services.gpu_telemetry import PrometheusTelemetry
from services.models import JobStatus
from services.resource_telemetry import (
    NOT_CONFIGURED,
    PrometheusResources,
    ResourceReading,
    ResourceSampler,
    process_table,
)
from services.store.orm import ResourceSample
from tests.conftest import run_to_end, wait_until
from tests.resource_telemetry_env import CadvisorPrometheusEnv, container
from tests.test_gpu_telemetry import _require_prometheus
from tests.test_pages import APP
from tests.test_rank_charts import ys

BLOCK_MIB = 300


def burner(stop: Path) -> str:
    """A script that holds BLOCK_MIB of memory (written, so resident) and keeps one core busy until `stop` exists."""
    return (f"import pathlib, time\nblock = b'x' * ({BLOCK_MIB} * 2**20)\nprint('holding', len(block), flush=True)\n"
            f"stop = pathlib.Path({str(stop)!r})\nwhile not stop.exists():\n"
            "    end = time.time() + 0.2\n    while time.time() < end:\n        pass\n")


def sleeper(stop: Path) -> str:
    return f"import pathlib, time\nstop = pathlib.Path({str(stop)!r})\nwhile not stop.exists():\n    time.sleep(0.1)\n"


def charts(at: AppTest) -> dict[str, list[float]]:
    """Title → y values of every chart on the page."""
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {s["layout"]["title"]["text"]: ys(s["data"][0]) for s in specs}


def job_page(job_id: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/job.py")
    at.query_params.update({"id": str(job_id), "tab": "Metrics"})
    at.run()
    assert not at.exception
    return at


def running(portal, user, job_id: int) -> bool:
    portal.sync.tick()
    return portal.jobs.get(user, job_id).status is JobStatus.RUNNING


def test_a_busy_jobs_cpu_and_memory_are_drawn_live_and_kept_when_it_ends(portal, user, workspace_script, tmp_path):
    stop = tmp_path / "stop"
    busy = portal.jobs.submit(user, {"name": "busy", "script": workspace_script("burn.py", burner(stop))})
    idle = portal.jobs.submit(user, {"name": "idle", "script": workspace_script("idle.py", sleeper(stop))})
    try:
        wait_until(lambda: running(portal, user, busy) and running(portal, user, idle))
        # The burner holds its memory once it printed; then a few samples a second apart, as the sync loop takes them.
        wait_until(lambda: portal.sync.resources.sample(portal.jobs).get(busy, ResourceReading(0, 0)).memory_mib
                   > BLOCK_MIB, interval=0.5)
        for _ in range(3):
            time.sleep(1.0)
            readings = portal.sync.resources.sample(portal.jobs)
        assert portal.sync.resources.error is None

        # A job without GPUs: no GPU section, and its CPU and memory beside where the GPUs would be.
        at = job_page(busy)
        assert [h.value for h in at.subheader] == ["CPU and memory"]
        drawn = charts(at)
        assert set(drawn) == {"CPU (cores)", "Memory (MiB)"}
        assert len(drawn["CPU (cores)"]) >= 4
        # One busy thread: about one core (much less when this shared machine is loaded), never two.
        busy_cores = drawn["CPU (cores)"][-3:]
        assert all(0.1 < c <= 1.3 for c in busy_cores), drawn["CPU (cores)"]
        assert BLOCK_MIB < drawn["Memory (MiB)"][-1] < BLOCK_MIB + 200, drawn["Memory (MiB)"]
        # The sleeping job beside it: next to no CPU, a Python interpreter's memory.
        assert readings[idle].cpu_cores is not None and readings[idle].cpu_cores < 0.1
        assert readings[idle].memory_mib is not None and readings[idle].memory_mib < 100
        quiet = charts(job_page(idle))
        # (Its first point is its start-up's average, the interpreter's imports: not next to nothing.)
        assert max(quiet["CPU (cores)"][-3:]) < 0.1 and max(quiet["Memory (MiB)"]) < 100
        assert min(busy_cores) > 5 * max(quiet["CPU (cores)"][-3:])
    finally:
        stop.touch()
    run_to_end(portal, user, busy)
    run_to_end(portal, user, idle)
    assert portal.sync.resources.sample(portal.jobs) == {}  # nothing runs: nothing sampled

    after = charts(job_page(busy))
    assert after == drawn, "a finished job shows the graphs it recorded"
    portal.jobs.delete(user, busy)
    with portal.jobs.session() as s:
        left = s.scalar(select(func.count()).select_from(ResourceSample).where(ResourceSample.job_id == busy))
    assert left == 0
    assert portal.jobs.resource_series(busy) == {}


@pytest.fixture
def fast_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTAL_GPU_SAMPLE_SECONDS", "0.3")  # before the portal fixture builds the portal


def test_the_sync_loop_samples_a_job_without_gpus_by_itself(fast_sampling, portal, user, workspace_script, tmp_path):
    assert portal.telemetry is None  # no GPU telemetry here: the sampling thread still runs, for CPU and memory
    stop = tmp_path / "stop"
    job_id = portal.jobs.submit(user, {"name": "alone", "script": workspace_script("idle.py", sleeper(stop))})
    portal.sync.start()
    try:
        memory = wait_until(lambda: (s := portal.jobs.resource_series(job_id).get("Memory (MiB)")) is not None
                            and len(s.y) >= 3 and s)
    finally:
        stop.touch()
        portal.sync.stop()
    assert all(5 < mib < 100 for mib in memory.y), memory.y


def test_the_process_table_reads_the_same_from_proc_as_through_psutil():
    import os

    child = subprocess.Popen([sys.executable, "-c", "import time; b = b'x' * (64 * 2**20); time.sleep(30)"])
    try:
        wait_until(lambda: process_table().get(child.pid, None) and process_table()[child.pid].rss > 64 * 2**20)
        fast, portable = process_table(from_proc=True)[child.pid], process_table(from_proc=False)[child.pid]
    finally:
        child.kill()
        child.wait()
    assert fast.ppid == portable.ppid == os.getpid()
    assert fast.started == pytest.approx(portable.started, abs=0.05)
    assert fast.rss == pytest.approx(portable.rss, rel=0.05) and fast.rss > 64 * 2**20
    assert fast.cpu_seconds == pytest.approx(portable.cpu_seconds, abs=0.05)


def test_memory_is_drawn_in_gib_once_a_job_holds_gigabytes(portal, user, workspace_script):
    job_id = portal.jobs.submit(user, {"name": "big", "script": workspace_script("quick.py", "print('done')\n")})
    run_to_end(portal, user, job_id)
    start = portal.jobs.get(user, job_id).started_at.timestamp()
    for i, mib in enumerate((1024.0, 3072.0, 6144.0)):
        portal.jobs.record_resources({job_id: ResourceReading(2.0 + i, mib)}, start + 15 * i)
    drawn = charts(job_page(job_id))
    assert drawn == {"CPU (cores)": [2.0, 3.0, 4.0], "Memory (GiB)": [1.0, 3.0, 6.0]}


def test_samples_are_kept_and_deleted_with_the_job_on_sqlite_and_postgresql(any_portal):
    me = local_user(any_portal.settings)
    (any_portal.settings.workspace_dir / "quick.py").write_text("print('done')\n")
    job = run_to_end(any_portal, me, any_portal.jobs.submit(me, {"name": "db", "script": "quick.py"}))
    t0 = job.started_at.timestamp()
    any_portal.jobs.record_resources({job.id: ResourceReading(None, 50.0)}, t0 + 1)
    any_portal.jobs.record_resources({job.id: ResourceReading(0.5, 60.0)}, t0 + 16)
    series = any_portal.jobs.resource_series(job.id)
    assert series["CPU (cores)"].x.tolist() == pytest.approx([16.0], abs=1e-3)  # no CPU yet: no point, no gap
    assert series["Memory (MiB)"].y.tolist() == [50.0, 60.0] and series["Memory (MiB)"].axis == "seconds"
    any_portal.jobs.delete(me, job.id)
    assert any_portal.jobs.resource_series(job.id) == {}


def test_a_finished_job_without_samples_says_so(portal, user, workspace_script):
    job_id = portal.jobs.submit(user, {"name": "none", "script": workspace_script("quick.py", "print('done')\n")})
    run_to_end(portal, user, job_id)
    at = job_page(job_id)
    assert "No CPU or memory samples were recorded for this job." in [c.value for c in at.caption]


def test_a_cluster_portal_without_prometheus_says_what_to_configure(portal, user, workspace_script, monkeypatch):
    job_id = portal.jobs.submit(user, {"name": "k8s", "script": workspace_script("quick.py", "print('done')\n")})
    run_to_end(portal, user, job_id)
    sampler = ResourceSampler(Settings(prometheus_url=""), "kubernetes")
    assert sampler.unavailable == NOT_CONFIGURED and not sampler.available
    assert ResourceSampler(Settings(prometheus_url="http://127.0.0.1:9"), "kubernetes").available
    monkeypatch.setattr(portal.sync, "resources", sampler)  # the page reads the portal's own sampler
    at = job_page(job_id)
    assert NOT_CONFIGURED in [i.value for i in at.info]
    assert "PORTAL_PROMETHEUS_URL" in NOT_CONFIGURED and "cAdvisor" in NOT_CONFIGURED


# Prometheus (cAdvisor series) ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubelet_prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CadvisorPrometheusEnv]:
    env = CadvisorPrometheusEnv(tmp_path_factory.mktemp("prometheus-cadvisor"), binary=_require_prometheus()).start()
    try:
        yield env
    finally:
        env.stop()


def resources(url: str) -> PrometheusResources:
    return PrometheusResources(PrometheusTelemetry(Settings(prometheus_url=url)))


def test_cadvisor_series_give_each_jobs_cores_and_working_set(kubelet_prom: CadvisorPrometheusEnv) -> None:
    kubelet_prom.set_containers([
        # Job 7: two pods (two nodes), one with a sidecar; all of its containers count.
        container("team-a", "mlp-7-0-k2j4d", "main", cores=1.5, memory_mib=2048),
        container("team-a", "mlp-7-0-k2j4d", "sidecar", cores=0.25, memory_mib=100),
        container("team-a", "mlp-7-1-p9x7c", "main", cores=0.5, memory_mib=512),
        # Names that start like job 7's, and job 7's name in another namespace: not job 7's.
        container("team-a", "mlp-77-aaaaa", cores=3.0, memory_mib=10),
        container("team-b", "mlp-7-0-zzzzz", cores=6.0, memory_mib=10),
    ])
    readings = resources(kubelet_prom.url).read("team-a", {7: "mlp-7", 1: "mlp-1"})
    assert readings.keys() == {7}, "a job without series is absent"
    r = readings[7]
    # Not the pod cgroups' sums nor the pause containers (both served, as the kubelet does), and each series
    # counted once although two scrape jobs carry it.
    assert r.cpu_cores == pytest.approx(2.25, rel=0.05)
    assert r.memory_mib == pytest.approx(2660.0)
    assert resources(kubelet_prom.url).read("team-b", {7: "mlp-7"})[7].cpu_cores == pytest.approx(6.0, rel=0.05)


def cluster_job(portal, user, workspace_script) -> tuple[int, object]:
    """A job row as the Kubernetes backend leaves it while its pods run, and the portal's store as a cluster portal's
    sync loop sees it."""
    job_id = portal.jobs.submit(user, {"name": "pod", "script": workspace_script("quick.py", "print('done')\n")})
    run_to_end(portal, user, job_id)
    portal.jobs.mark(job_id, backend="kubernetes", status=JobStatus.RUNNING.value,
                     backend_ref={"job_name": f"mlp-{job_id}", "namespace": "team-a"})

    class ClusterService:
        backend = type("Backend", (), {"name": "kubernetes"})()
        session = portal.jobs.session
        record_resources = portal.jobs.record_resources

    return job_id, ClusterService()


def test_the_sampler_stores_cluster_jobs_samples_for_their_graphs(portal, user, workspace_script,
                                                                  kubelet_prom: CadvisorPrometheusEnv) -> None:
    job_id, cluster = cluster_job(portal, user, workspace_script)
    kubelet_prom.set_containers([container("team-a", f"mlp-{job_id}-abcde", cores=0.75, memory_mib=4096)])
    sampler = ResourceSampler(Settings(prometheus_url=kubelet_prom.url), "kubernetes")
    for _ in range(2):
        readings = sampler.sample(cluster)
    assert sampler.error is None
    assert readings[job_id].cpu_cores == pytest.approx(0.75, rel=0.05)
    series = portal.jobs.resource_series(job_id)
    assert series["Memory (GiB)"].y.tolist() == [4.0, 4.0]
    assert series["CPU (cores)"].y == pytest.approx([0.75, 0.75], rel=0.05)


def test_an_unreachable_prometheus_is_one_sentence_and_nothing_is_stored(portal, user, workspace_script,
                                                                        monkeypatch) -> None:
    job_id, cluster = cluster_job(portal, user, workspace_script)
    sampler = ResourceSampler(Settings(prometheus_url="http://127.0.0.1:9"), "kubernetes")
    assert sampler.sample(cluster) == {}
    assert sampler.error == "Prometheus at http://127.0.0.1:9 refused the connection: nothing listens there."
    assert portal.jobs.resource_series(job_id) == {}
    # The running job's page says it, with the graphs' place kept.
    monkeypatch.setattr(portal.sync, "resources", sampler)
    at = job_page(job_id)
    assert [w.value for w in at.warning] == [f"CPU and memory could not be read: {sampler.error}"]
