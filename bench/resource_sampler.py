"""What the CPU and memory sampler costs the portal's one core per sample, with N running local jobs (default 20).

The jobs are real: the local backend's runner and a script each (a sleeping Python, so the machine stays quiet).
Printed: the machine's process count, then per sample the wall and CPU time of reading every job's process tree
(one pass over the process table) and of storing the samples, as median and 95th percentile over the samples,
and the share of one core that is at the default PORTAL_GPU_SAMPLE_SECONDS.

    .venv/bin/python bench/resource_sampler.py [JOBS] [SAMPLES]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p95 {ordered[int(len(ordered) * 0.95)] * 1000:.2f} ms"


def main(jobs: int = 20, samples: int = 50) -> None:
    import psutil

    from services.auth import local_user
    from services.config import Settings
    from services.models import JobStatus
    from services.portal import build_portal
    from services.resource_telemetry import running_jobs

    data = Path(tempfile.mkdtemp(prefix="resource-bench-"))
    portal = build_portal(Settings(data_dir=data, backend="local", stop_grace_seconds=2))
    me = local_user(portal.settings)
    stop = data / "stop"
    (portal.settings.workspace_dir / "wait.py").write_text(
        f"import pathlib, time\nwhile not pathlib.Path({str(stop)!r}).exists():\n    time.sleep(0.5)\n")
    ids = [portal.jobs.submit(me, {"name": f"bench-{i}", "script": "wait.py"}) for i in range(jobs)]
    try:
        deadline = time.monotonic() + 120
        while sum(portal.jobs.get(me, i).status is JobStatus.RUNNING for i in ids) < jobs:
            if time.monotonic() > deadline:
                raise SystemExit("the jobs did not all start within 120 s")
            portal.sync.tick()
            time.sleep(0.2)
        sampler = portal.sync.resources
        assert sampler._local is not None
        local = sampler._local
        reads, read_cpu, totals, total_cpu = [], [], [], []
        for _ in range(samples):
            w, c = time.perf_counter(), time.process_time()
            rows = running_jobs(portal.jobs)
            readings = local.read({r.id: (int(r.backend_ref["runner_pid"]), float(r.backend_ref["runner_started"]))
                                   for r in rows})
            reads.append(time.perf_counter() - w)
            read_cpu.append(time.process_time() - c)
            w, c = time.perf_counter(), time.process_time()
            sampler.sample(portal.jobs)  # the sync loop's call: query, read, store
            totals.append(time.perf_counter() - w)
            total_cpu.append(time.process_time() - c)
            time.sleep(0.1)
        assert len(readings) == jobs, readings
        period = portal.settings.gpu_sample_seconds
        print(f"{jobs} running local jobs, {len(psutil.pids())} processes on this machine, {samples} samples")
        print(f"read the trees (wall):           {_ms(reads)}")
        print(f"read the trees (CPU):            {_ms(read_cpu)}")
        print(f"whole sample, stored (wall):     {_ms(totals)}")
        print(f"whole sample, stored (CPU):      {_ms(total_cpu)}")
        print(f"share of one core every {period:g} s: {statistics.median(total_cpu) / period * 100:.3f} %")
    finally:
        stop.touch()  # the scripts end by themselves within half a second
        portal.close()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
