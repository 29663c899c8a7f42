"""CPU and memory of running jobs, GPUs or not.

Local jobs: the job's process tree, found in one pass over this machine's process table per sample (CPU: the
tree's CPU seconds since the last sample; memory: the tree's resident memory). Cluster jobs: cAdvisor's series
for the job's pods in the Prometheus that GPU metrics use (PORTAL_PROMETHEUS_URL), two instant queries per
sample however many jobs run. Never imports streamlit.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Row, select

from services.config import Settings
from services.gpu_telemetry import PrometheusTelemetry
from services.models import JobStatus
from services.promql import job_for_pod, pod_regex, pod_selector, sample_value, sorted_names
from services.store.orm import Job

CPU_SECONDS = "container_cpu_usage_seconds_total"
WORKING_SET = "container_memory_working_set_bytes"
# The pod's own cgroup (container="") and its pause container ("POD") would count the job's containers twice.
CONTAINERS = 'container!="",container!="POD"'
# irate, the last two scrapes' slope: rate() divides by the whole window, so it under-reads a pod younger than
# the window (a third of its CPU at 40 s into [2m]). The window only needs to hold two scrapes of the kubelet
# (every 30 s usually).
RATE_WINDOW = "2m"
NOT_CONFIGURED = ("CPU and memory not configured: your admin can connect Prometheus holding the kubelets' cAdvisor "
                  "series (container_cpu_usage_seconds_total, container_memory_working_set_bytes) by setting "
                  "PORTAL_PROMETHEUS_URL (docs/admin.md).")


@dataclass(frozen=True)
class ResourceReading:
    cpu_cores: float | None  # cores busy on average since the last sample (1.0: one core); None: not known
    memory_mib: float | None  # local: resident memory of the process tree; cluster: containers' working set


# Which jobs -------------------------------------------------------------------------------------------------


def running_jobs(service: Any, gpus_only: bool = False) -> Sequence[Row[Any]]:
    """(id, backend_ref) of this backend's running jobs, for the samplers."""
    query = select(Job.id, Job.backend_ref).where(Job.status == JobStatus.RUNNING.value,
                                                  Job.backend == service.backend.name)
    with service.session() as s:
        return s.execute(query.where(Job.gpus > 0) if gpus_only else query).all()


def cluster_pods(rows: Sequence[Row[Any]]) -> tuple[str, dict[int, str]]:
    """The namespace and, per job id, the Kubernetes Job name whose pods to read."""
    refs = {r.id: dict(r.backend_ref or {}) for r in rows}
    names = {i: ref["job_name"] for i, ref in refs.items() if ref.get("job_name")}
    return next((ref["namespace"] for ref in refs.values() if ref.get("namespace")), ""), names


def runner_pids(rows: Sequence[Row[Any]]) -> dict[int, int]:
    """Per job id, the pid of its local runner (0: none recorded)."""
    return {r.id: int((r.backend_ref or {}).get("runner_pid") or 0) for r in rows}


# Local ------------------------------------------------------------------------------------------------------


class LocalResources:
    """CPU and memory of local jobs' process trees."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, float]] = {}  # job id → (time, CPU seconds of its tree then)

    def read(self, jobs: dict[int, tuple[int, float]]) -> dict[int, ResourceReading]:
        """``jobs``: job id → (runner pid, the runner's start time, which tells a recycled pid apart). A job whose
        runner is gone is absent. CPU counts the tree's live processes and the children they reaped; the first
        reading of a job is its average since the runner started."""
        if not jobs:
            self._last = {}
            return {}
        table = process_table()  # one pass, whatever the number of jobs
        children: dict[int, list[int]] = defaultdict(list)
        for pid, proc in table.items():
            children[proc.ppid].append(pid)
        now = time.time()
        readings: dict[int, ResourceReading] = {}
        last: dict[int, tuple[float, float]] = {}
        for job_id, (root, started) in jobs.items():
            if root not in table or abs(table[root].started - started) >= 1.0:
                continue
            cpu_seconds, rss = 0.0, 0
            stack, seen = [root], set()
            while stack:
                pid = stack.pop()
                if pid not in seen and pid in table:
                    seen.add(pid)
                    stack.extend(children.get(pid, ()))
                    cpu_seconds, rss = cpu_seconds + table[pid].cpu_seconds, rss + table[pid].rss
            before_at, before = self._last.get(job_id, (started, 0.0))
            elapsed = now - before_at
            cores = max(0.0, cpu_seconds - before) / elapsed if elapsed > 0.05 else None
            readings[job_id] = ResourceReading(cores, rss / 2**20)
            last[job_id] = (now, cpu_seconds)
        self._last = last
        return readings


@dataclass(frozen=True)
class _Proc:
    ppid: int
    cpu_seconds: float  # its own and its reaped children's, user and system
    rss: int  # bytes
    started: float  # epoch seconds


def process_table(from_proc: bool | None = None) -> dict[int, _Proc]:
    """Every process of this machine. On Linux one read of /proc/PID/stat each (a quarter of psutil's cost: 2 ms
    for 140 processes); elsewhere (or ``from_proc=False``) psutil."""
    import psutil

    if from_proc is None:
        from_proc = Path("/proc/self/stat").exists()
    if not from_proc:
        table = {}
        for p in psutil.process_iter(["ppid", "cpu_times", "memory_info", "create_time"]):
            t, m = p.info["cpu_times"], p.info["memory_info"]
            if t is not None and m is not None:
                table[p.pid] = _Proc(p.info["ppid"] or 0, t.user + t.system + t.children_user + t.children_system,
                                     m.rss, p.info["create_time"] or 0.0)
        return table
    boot, tick, page = psutil.boot_time(), os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:  # ended meanwhile
            continue
        # After the command in parentheses (which may hold spaces and parentheses): state, ppid, ...
        fields = data[data.rfind(b")") + 2:].split()
        if len(fields) < 22:
            continue
        table[int(name)] = _Proc(int(fields[1]), sum(int(v) for v in fields[11:15]) / tick, int(fields[21]) * page,
                                 boot + int(fields[19]) / tick)
    return table


# Prometheus (cAdvisor) --------------------------------------------------------------------------------------


class PrometheusResources:
    """cAdvisor's container series of Kubernetes Jobs' pods, through the GPU metrics' Prometheus client (its
    token, CA and error sentences). cAdvisor's own ``pod``/``namespace`` labels are read (the kubelet's series keep
    them, also behind the Prometheus Operator), not the DCGM labels an admin may have renamed."""

    def __init__(self, client: PrometheusTelemetry) -> None:
        self.client = client

    def read(self, namespace: str, jobs: dict[int, str]) -> dict[int, ResourceReading]:
        """``jobs``: job id → Kubernetes Job name. A job without any series is absent. Raises TelemetryError."""
        if not jobs:
            return {}
        regex, names = pod_regex(list(jobs.values())), sorted_names(jobs)
        cpu = pod_selector(CPU_SECONDS, namespace, regex, extra=CONTAINERS)
        memory = pod_selector(WORKING_SET, namespace, regex, extra=CONTAINERS)
        totals: dict[int, dict[str, float]] = defaultdict(dict)
        # max by container: the same container scraped twice (two scrape jobs, unmerged replicas) counts once.
        for key, promql in (("cpu", f"max by (pod, container) (irate({cpu}[{RATE_WINDOW}]))"),
                            ("memory", f"max by (pod, container) ({memory})")):
            for series in self.client.query(promql):
                job_id = job_for_pod(str((series.get("metric") or {}).get("pod", "")), names)
                value = sample_value(series)
                if job_id is not None and value is not None:
                    totals[job_id][key] = totals[job_id].get(key, 0.0) + value
        return {job_id: ResourceReading(t.get("cpu"), t["memory"] / 2**20 if "memory" in t else None)
                for job_id, t in totals.items()}


# The sampler the sync loop runs -----------------------------------------------------------------------------


def resources_unavailable(settings: Settings, backend_name: str) -> str | None:
    """Why no CPU and memory can be read for this portal's jobs (a sentence naming what to set), else None."""
    if backend_name == "local" or (backend_name == "kubernetes" and settings.prometheus_url.strip()):
        return None
    return NOT_CONFIGURED


class ResourceSampler:
    """One CPU and memory reading of every running job per call, stored through ``service.record_resources``."""

    def __init__(self, settings: Settings, backend_name: str, telemetry: Any = None) -> None:
        self.unavailable = resources_unavailable(settings, backend_name)
        self.error: str | None = None  # the last reading's failure, one sentence; None after a good one
        self._local = LocalResources() if backend_name == "local" else None
        self._prometheus: PrometheusResources | None = None
        if backend_name == "kubernetes" and self.unavailable is None:
            client = telemetry if isinstance(telemetry, PrometheusTelemetry) else PrometheusTelemetry(settings)
            self._prometheus = PrometheusResources(client)

    @property
    def available(self) -> bool:
        return self.unavailable is None

    def sample(self, service: Any) -> dict[int, ResourceReading]:
        if not self.available:
            return {}
        rows = running_jobs(service)
        try:
            if self._prometheus is not None:
                readings = self._prometheus.read(*cluster_pods(rows))
            else:
                assert self._local is not None
                started = {r.id: float((r.backend_ref or {}).get("runner_started") or 0) for r in rows}
                readings = self._local.read({j: (pid, started[j]) for j, pid in runner_pids(rows).items() if pid})
        except Exception as exc:  # Prometheus down or refusing: said on the job page, retried next time
            self.error = str(exc)
            return {}
        self.error = None
        service.record_resources(readings, time.time())
        return readings
