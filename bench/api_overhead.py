"""Issue 14 figure: what the REST API adds to the service call behind it, per call on a kept-alive connection.

Starts a real portal (``streamlit run portal_app.py``) on a throwaway data folder holding 30 jobs, one of them
with two 1,500-point metric series, and times the Python client's calls (``/healthz`` with the client's own
connection, ``get_job``, ``job.metrics()``, ``list_jobs``) against the same service calls made in this process
(``portal.jobs.get`` / ``metric_series`` / ``list_jobs``). The overhead is the difference of the medians; the
target is a few milliseconds. ``--naive`` adds the same run on a portal started without api/tcp_nodelay.py's fix
(Nagle's algorithm meets the client's delayed ACK: ~40 ms a call).

    .venv/bin/python bench/api_overhead.py [--naive] [-n 200]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import ROOT, percentile, start_portal, time_runs

sys.path.insert(0, str(ROOT / "client"))

OWNER = "bench"
STEPS = 1_500
# The portal as `streamlit run` starts it, with the fix switched off before portal_app.py can install it.
NAIVE_LAUNCH = ("import sys; from api import tcp_nodelay; tcp_nodelay.install = lambda: None; "
                "from streamlit.web.cli import main; sys.argv[0] = 'streamlit'; sys.exit(main())")


def seed(data_dir: Path) -> tuple[int, str]:
    """30 finished jobs of OWNER, the newest with metric series; returns its id and an API token of OWNER."""
    from sqlalchemy import insert, select

    from services.config import Settings
    from services.models import User
    from services.portal import build_portal
    from services.store.orm import Job, MetricPoint
    from services.store.seed import seed_jobs

    portal = build_portal(Settings(data_dir=data_dir, backend="local"))
    try:
        engine = portal.jobs.sessions.kw["bind"]
        seed_jobs(engine, 30, owner=OWNER)
        with engine.begin() as conn:
            job_id = conn.execute(select(Job.id).order_by(Job.id.desc()).limit(1)).scalar_one()
            conn.execute(insert(MetricPoint), [
                {"job_id": job_id, "name": name, "step": s, "epoch": s / 100, "value": value(s), "ts": float(s),
                 "rank": None}
                for s in range(STEPS) for name, value in (("loss", lambda s: 2.0 / (1 + s / 100)),
                                                            ("accuracy", lambda s: 1 - 1 / (1 + s / 50)))])
        _, token = portal.tokens.create(User(name=OWNER), "bench")
        return job_id, token
    finally:
        portal.close()


def start_server(data_dir: Path, port: int, naive: bool) -> subprocess.Popen[bytes]:
    return start_portal(data_dir, port, head=[sys.executable, "-c", NAIVE_LAUNCH] if naive else None)


def row(label: str, ms: list[float]) -> tuple[str, float, float]:
    return label, statistics.median(ms), percentile(ms, 95)


def measure(data_dir: Path, job_id: int, token: str, naive: bool, n: int) -> dict[str, tuple[float, float]]:
    from ml_job_portal import JobClient

    from tests.conftest import free_port

    port = free_port()
    proc = start_server(data_dir, port, naive)
    try:
        with JobClient(f"http://127.0.0.1:{port}", token) as client:
            job = client.get_job(job_id)
            http = client._http  # /healthz on the client's own kept-alive connection
            calls: dict[str, Callable[[], object]] = {
                "/healthz": lambda: http.get(f"http://127.0.0.1:{port}/healthz").raise_for_status(),
                "get_job": lambda: client.get_job(job_id),
                "metrics": job.metrics,
                "list_jobs": client.list_jobs,
            }
            out = {}
            for name, call in calls.items():
                time_runs(call, 10)  # warm: imports, caches, the connection
                ms = time_runs(call, n)
                out[name] = (statistics.median(ms), percentile(ms, 95))
            assert len(job.metrics()["series"]["loss"]["x"]) == STEPS
            assert len(client.list_jobs()) == 30
            return out
    finally:
        proc.terminate()
        proc.wait(20)


def services_in_process(data_dir: Path, job_id: int, n: int) -> dict[str, tuple[float, float]]:
    from services.config import Settings
    from services.models import User
    from services.portal import build_portal

    portal = build_portal(Settings(data_dir=data_dir, backend="local"))
    user = User(name=OWNER)
    calls: dict[str, Callable[[], object]] = {
        "/healthz": lambda: None,
        "get_job": lambda: portal.jobs.get(user, job_id),
        # The route reads the job (visibility) and then its series.
        "metrics": lambda: (portal.jobs.get(user, job_id), portal.jobs.metric_series(job_id)),
        "list_jobs": lambda: portal.jobs.list_jobs(limit=51, owner=OWNER),
    }
    out = {}
    try:
        for name, call in calls.items():
            time_runs(call, 10)
            ms = time_runs(call, n)
            out[name] = (statistics.median(ms), percentile(ms, 95))
    finally:
        portal.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="calls per figure (default 200)")
    parser.add_argument("--naive", action="store_true", help="also time a portal without the TCP_NODELAY fix")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="portal-bench-api-")) / "portal-data"
    try:
        job_id, token = seed(data_dir)
        service = services_in_process(data_dir, job_id, args.n)
        runs = [("REST", measure(data_dir, job_id, token, naive=False, n=args.n))]
        if args.naive:
            runs.append(("REST, no fix", measure(data_dir, job_id, token, naive=True, n=args.n)))
    finally:
        shutil.rmtree(data_dir.parent, ignore_errors=True)

    print(f"per call, kept-alive connection, n={args.n}; median / p95 in ms; overhead = REST - service (medians)")
    head = f"{'call':<11}{'service':>16}"
    for label, _ in runs:
        head += f"{label:>18}{'overhead':>10}"
    print(head)
    for name in service:
        s50, s95 = service[name]
        line = f"{name:<11}{s50:>8.2f} /{s95:>6.2f}"
        for _, rest in runs:
            r50, r95 = rest[name]
            line += f"{r50:>10.2f} /{r95:>6.2f}{r50 - s50:>10.2f}"
        print(line)
    print("target: overhead at most a few ms per call")


if __name__ == "__main__":
    main()
