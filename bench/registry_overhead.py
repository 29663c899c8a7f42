"""Issue 21 figure: what Register model costs besides the upload itself, per registration.

A real `mlflow server` (tests/mlflow_env.py: SQLite backend, local artifact store, from .venv/mlflow-server) and a
portal in this process with one finished local job that wrote a 1 MiB model. The bench registers that job's model
N times through the registry worker (ModelRegistry.register, then RegistryWorker.run_due, as the sync loop's worker
does) and prints each registration's wall time from the request to `done`, the first apart (the upload process
starts then), beside what importing MLflow's client takes in a fresh interpreter: the part a process per
registration pays every time.

    .venv/bin/python bench/registry_overhead.py [-n 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, fresh_portal, percentile

SCRIPT = ("import os\nfrom pathlib import Path\nout = Path(os.environ['PORTAL_OUTPUT_DIR']) / 'model'\n"
          "out.mkdir()\n(out / 'weights.bin').write_bytes(bytes(range(256)) * 4096)\nprint('loss=0.25', flush=True)\n")


def import_seconds(runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from mlflow import MlflowClient; import mlflow.entities"], check=True,
                       cwd=ROOT)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10, help="registrations")
    args = ap.parse_args()
    import os

    from services.auth import local_user
    from services.model_registry import ModelRegistry
    from services.registry_worker import RegistryWorker
    from tests.conftest import run_to_end
    from tests.mlflow_env import start_mlflow, stop_mlflow

    server = start_mlflow(Path(tempfile.mkdtemp(prefix="bench-mlflow-")))
    worker = None
    try:
        os.environ["PORTAL_MLFLOW_TRACKING_URI"] = server.url
        portal = fresh_portal()
        user = local_user(portal.settings)
        (portal.settings.workspace_dir / "reg.py").write_text(SCRIPT)
        job_id = portal.jobs.submit(user, {"name": "bench-model", "script": "reg.py", "epochs": 1})
        run_to_end(portal, user, job_id)
        registry, worker = ModelRegistry(portal.jobs), RegistryWorker(portal.jobs)
        times = []
        for i in range(args.n):
            t = time.perf_counter()
            registry.register(user, job_id, ["model"], f"bench-{i}", "candidate")
            assert worker.run_due()
            times.append(time.perf_counter() - t)
            state = registry.registrations(user, job_id)[0]
            assert state.status == "done", state
        later = times[1:] or times
        print(f"registrations: {args.n} of a 1 MiB model into {server.url}")
        print(f"first (the upload process starts): {times[0]:.2f} s")
        print(f"later: p50 {statistics.median(later):.2f} s, p90 {percentile(later, 90):.2f} s, "
              f"max {max(later):.2f} s")
        print(f"importing MLflow's client in a fresh interpreter: {import_seconds():.2f} s (p50 of 3)")
    finally:
        if worker is not None and hasattr(worker, "close"):
            worker.close()
        stop_mlflow(server)


if __name__ == "__main__":
    main()
