"""Issue 14 figures: the portal's History API against MLflow's tracking server, side by side on the same history,
both through their REST APIs, each with its own server process and database.

For each database (SQLite, PostgreSQL) and size (--runs), the portal's store is seeded in bulk
(services/store/seed.py: finished jobs of 50 owners with learning rates, batch sizes and final loss / accuracy /
eval_loss, plus a 1,500-step loss and accuracy history for the newest job). The same jobs are then written into
MLflow's own schema as runs with params, latest_metrics and metrics rows: `mlflow db upgrade` creates the schema
and the rows go in with SQL (executemany on SQLite, COPY on PostgreSQL), because logging a million runs through
MLflow's client takes hours. MLflow's database is then ANALYZEd (the portal keeps its own statistics at start-up).

Then both servers run (`streamlit run portal_app.py`; `mlflow server --workers 1`) and each shape is timed on a
kept-alive connection, the same rows asked of both:

    first page                    GET  /api/v1/history?page_size=50
                                  POST /api/2.0/mlflow/runs/search {max_results: 50}
    parameter + owner, by metric  ?search=learning_rate=0.003&owner=user-07&sort=final_metric&metric=accuracy
                                  filter "params.learning_rate = '0.003' and attributes.user_id = 'user-07'",
                                  order_by metrics.accuracy DESC
    metric filter, by metric      ?metric_filter=accuracy > 0.9&sort=final_metric&metric=eval_loss&descending=false
                                  filter "metrics.accuracy > 0.9", order_by metrics.eval_loss ASC
    one run's metric history      GET /api/v1/jobs/{id}/metrics   |   GET /api/2.0/mlflow/metrics/get-history

MLflow runs in its own virtual environment, never the portal's:

    python3 -m venv /var/tmp/mlflow-venv && /var/tmp/mlflow-venv/bin/pip install mlflow psycopg2-binary
    .venv/bin/python bench/history_vs_mlflow.py --runs 20000 100000 --database sqlite postgresql
    .venv/bin/python bench/history_vs_mlflow.py --runs 1000000 --database sqlite --keep /var/tmp/hvm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from _common import ROOT, percentile

OWNERS = [f"user-{i:02d}" for i in range(50)]
STEPS = 1_500
BATCH = 100_000
STATUS = {"Succeeded": "FINISHED", "Failed": "FAILED", "Stopped": "KILLED", "Running": "RUNNING"}
PARAMS = ("learning_rate", "batch_size", "epochs")
SHAPES = ("first page", "parameter + owner, by metric", "metric filter, by metric", "one run's metric history")
MAX_SECONDS_PER_SHAPE = 30.0
WARM_UP = 3
WARM_SECONDS = 3.0
# After start-up the portal's sync loop makes its first pass (statistics, reconciling): let it finish.
SETTLE_SECONDS = 20


# Seeding ------------------------------------------------------------------------------------------
def seed_portal(data_dir: Path, runs: int) -> int:
    """The portal's store: `runs` jobs and one job's metric history. Returns that job's id."""
    from sqlalchemy import func, insert, select

    from services.config import Settings
    from services.portal import build_portal
    from services.store.orm import Job, MetricPoint
    from services.store.seed import seed_jobs

    portal = build_portal(Settings(data_dir=data_dir, backend="local"))
    try:
        engine = portal.jobs.sessions.kw["bind"]
        seed_jobs(engine, runs, owner=OWNERS, varied=True)
        with engine.begin() as conn:
            job_id = conn.execute(select(func.max(Job.id))).scalar_one()
            conn.execute(insert(MetricPoint), [
                {"job_id": job_id, "name": name, "step": s, "epoch": s / 150, "value": value, "ts": 1.7e9 + s,
                 "rank": None} for s in range(STEPS) for name, value in history_point(s)])
        return job_id
    finally:
        portal.close()


def history_point(step: int) -> list[tuple[str, float]]:
    return [("loss", 2.0 / (1 + step / 100)), ("accuracy", 1 - 1 / (1 + step / 50))]


def _ms(t: datetime | str | None) -> int | None:
    if t is None:
        return None
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return int(t.timestamp() * 1000)


def mlflow_rows(portal_engine: Any, history_job: int) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """MLflow's rows for the portal's jobs, a batch at a time: (table, rows)."""
    from sqlalchemy import select

    from services.store.orm import Job

    cols = (Job.id, Job.name, Job.owner, Job.status, Job.created_at, Job.finished_at, Job.request, Job.final_metrics)
    with portal_engine.connect() as conn:
        result = conn.execution_options(yield_per=BATCH).execute(select(*cols).order_by(Job.id))
        for part in result.partitions():
            runs, params, latest, metrics = [], [], [], []
            for job_id, name, owner, status, created, finished, request, finals in part:
                uuid = f"{job_id:032x}"
                start, end = _ms(created), _ms(finished)
                runs.append((uuid, name, "LOCAL", "train_example.py", "", owner, STATUS.get(status, "FAILED"), start,
                             end, "", "active", f"file:///var/tmp/mlruns/1/{uuid}/artifacts", 1))
                params += [(k, str(request[k]), uuid) for k in PARAMS if k in (request or {})]
                for key, value in (finals or {}).items():
                    latest.append((key, value, end or start, 0, False, uuid))
                    if job_id != history_job:  # that run's metrics are its 1,500-step history below
                        metrics.append((key, value, end or start, uuid, 0, False))
            yield "runs", runs
            yield "params", params
            yield "latest_metrics", latest
            yield "metrics", metrics
    uuid = f"{history_job:032x}"
    yield "metrics", [(key, value, 1_700_000_000_000 + s, uuid, s, False) for s in range(STEPS)
                      for key, value in history_point(s)]


MLFLOW_COLUMNS = {
    "runs": ("run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status", "start_time",
             "end_time", "source_version", "lifecycle_stage", "artifact_uri", "experiment_id"),
    "params": ("key", "value", "run_uuid"),
    "latest_metrics": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
    "metrics": ("key", "value", "timestamp", "run_uuid", "step", "is_nan"),
}


def seed_mlflow(mlflow_python: str, url: str, portal_engine: Any, history_job: int) -> None:
    """MLflow's schema by `mlflow db upgrade`, then the portal's jobs as its rows, written with SQL."""
    from sqlalchemy import create_engine

    out = subprocess.run([mlflow_python, "-m", "mlflow", "db", "upgrade", url], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise SystemExit(f"mlflow db upgrade failed: {out.stderr[-2000:]}")
    engine = create_engine(url.replace("+psycopg2://", "+psycopg://"))
    pg = engine.dialect.name == "postgresql"
    now = int(time.time() * 1000)
    with engine.begin() as conn:
        raw = conn.connection.dbapi_connection
        cur = raw.cursor()
        cur.execute("INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, "
                    "last_update_time, workspace) VALUES (1, 'portal-history', 'file:///var/tmp/mlruns/1', 'active', "
                    f"{now}, {now}, 'default')")
        if not pg:
            cur.execute("PRAGMA cache_size=-262144")
        for table, rows in mlflow_rows(portal_engine, history_job):
            names = MLFLOW_COLUMNS[table]
            quoted = ", ".join(f'"{c}"' for c in names)
            if pg:
                with cur.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cur.executemany(f"INSERT INTO {table} ({quoted}) VALUES ({', '.join('?' * len(names))})",
                                [tuple(int(v) if isinstance(v, bool) else v for v in row) for row in rows])
        cur.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


# Servers ------------------------------------------------------------------------------------------
def start_mlflow(mlflow_python: str, url: str, artifacts: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    from tests.conftest import free_port, wait_until

    port = free_port()
    proc = subprocess.Popen(
        [mlflow_python, "-m", "mlflow", "server", "--backend-store-uri", url, "--default-artifact-root",
         str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=180, interval=0.5)
    return proc, base


def timed(ours: Callable[[], Any], theirs: Callable[[], Any], n: int) -> tuple[list[float], list[float], Any, Any]:
    """Milliseconds of up to n calls of each, after WARM_UP calls and WARM_SECONDS (each connection of a server's
    pool reads its first pages once), taken in turns so that both meet the same load on the machine (fewer past
    MAX_SECONDS_PER_SHAPE, at least 3)."""
    began = time.perf_counter()
    for i in range(1_000_000):
        mine, other = ours(), theirs()
        if i + 1 >= WARM_UP and time.perf_counter() - began > WARM_SECONDS:
            break
    out: tuple[list[float], list[float]] = ([], [])
    began = time.perf_counter()
    while len(out[0]) < n and (len(out[0]) < 3 or time.perf_counter() - began < MAX_SECONDS_PER_SHAPE):
        for call, into in ((ours, out[0]), (theirs, out[1])):
            t = time.perf_counter()
            call()
            into.append((time.perf_counter() - t) * 1000)
    return out[0], out[1], mine, other


def again_once(call: Callable[[], Any]) -> Callable[[], Any]:
    """The call, made again once if the server had closed the kept-alive connection while the other server's
    slow call ran (a reset on reuse, before any answer)."""
    def call_again() -> Any:
        try:
            return call()
        except (httpx.ReadError, httpx.RemoteProtocolError):
            return call()
    return call_again


def measure(portal_url: str, token: str, mlflow_url: str, history_job: int, n: int) -> dict[str, tuple]:
    portal = httpx.Client(base_url=portal_url + "/api/v1/", headers={"Authorization": f"Bearer {token}"},
                          timeout=600)
    mlflow = httpx.Client(base_url=mlflow_url + "/api/2.0/mlflow/", timeout=600)

    def history(**params: Any) -> Callable[[], Any]:
        return lambda: portal.get("history", params={"page_size": 50, **params}).raise_for_status().json()["jobs"]

    def search(**body: Any) -> Callable[[], Any]:
        return lambda: mlflow.post("runs/search", json={"experiment_ids": ["1"], "max_results": 50, **body}
                                   ).raise_for_status().json().get("runs", [])

    uuid = f"{history_job:032x}"
    calls = {
        SHAPES[0]: (history(), search()),
        SHAPES[1]: (history(search="learning_rate=0.003", owner="user-07", sort="final_metric", metric="accuracy"),
                    search(filter="params.learning_rate = '0.003' and attributes.user_id = 'user-07'",
                           order_by=["metrics.accuracy DESC"])),
        SHAPES[2]: (history(metric_filter="accuracy > 0.9", sort="final_metric", metric="eval_loss",
                            descending="false"),
                    search(filter="metrics.accuracy > 0.9", order_by=["metrics.eval_loss ASC"])),
        SHAPES[3]: (lambda: portal.get(f"jobs/{history_job}/metrics").raise_for_status().json()["series"]["loss"],
                    lambda: mlflow.get("metrics/get-history", params={"run_id": uuid, "metric_key": "loss"}
                                       ).raise_for_status().json()["metrics"]),
    }
    out = {}
    for shape, (ours, theirs) in calls.items():
        ours_ms, theirs_ms, ours_rows, theirs_rows = timed(again_once(ours), again_once(theirs), n)
        check(shape, ours_rows, theirs_rows)
        out[shape] = (statistics.median(ours_ms), percentile(ours_ms, 95), statistics.median(theirs_ms),
                      percentile(theirs_ms, 95))
    portal.close()
    mlflow.close()
    return out


def check(shape: str, ours: Any, theirs: Any) -> None:
    """Both answered the same question: as many rows, and the same values in the sorted column."""
    if shape == SHAPES[3]:
        assert len(ours["y"]) == len(theirs) == STEPS, (len(ours["y"]), len(theirs))
        return
    assert len(ours) == len(theirs), (shape, len(ours), len(theirs))
    if shape == SHAPES[0]:
        assert [f"{j['id']:032x}" for j in ours] == [r["info"]["run_id"] for r in theirs], shape
        return
    key = "accuracy" if shape == SHAPES[1] else "eval_loss"
    mine = [j["final_metrics"][key] for j in ours]
    other = [{m["key"]: m["value"] for m in r["data"].get("metrics", [])}[key] for r in theirs]
    assert mine == other, (shape, mine[:5], other[:5])


# Main ---------------------------------------------------------------------------------------------
def run_one(database: str, runs: int, args: argparse.Namespace, pg: Any) -> dict[str, tuple]:
    from services.store.db import make_engine
    from tests.conftest import PortalServer, create_token

    keep = Path(args.keep) / f"{database}-{runs}" if args.keep else None
    work = keep or Path(tempfile.mkdtemp(prefix="portal-vs-mlflow-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "portal-data"
    marker = work / "seeded.json"
    if database == "postgresql":
        portal_db, mlflow_db = pg.create_database(), pg.create_database()
        os.environ["PORTAL_DATABASE_URL"] = pg.url(portal_db)
        mlflow_url = pg.url(mlflow_db).replace("postgresql+psycopg://", "postgresql+psycopg2://")
    else:
        os.environ.pop("PORTAL_DATABASE_URL", None)
        mlflow_url = f"sqlite:///{work / 'mlflow.db'}"
    try:
        if database == "sqlite" and marker.exists():
            history_job = json.loads(marker.read_text())["history_job"]
            print(f"  {database} {runs:,}: the stores in {work}", flush=True)
        else:
            if database == "sqlite":  # what an interrupted earlier run left
                shutil.rmtree(data, ignore_errors=True)
                (work / "mlflow.db").unlink(missing_ok=True)
            t = time.perf_counter()
            history_job = seed_portal(data, runs)
            t_portal = time.perf_counter() - t
            engine = make_engine(os.environ.get("PORTAL_DATABASE_URL") or f"sqlite:///{data / 'portal.db'}")
            seed_mlflow(args.mlflow_python, mlflow_url, engine, history_job)
            engine.dispose()
            print(f"  {database} {runs:,}: seeded the portal in {t_portal:.0f} s, MLflow's schema and rows in "
                  f"{time.perf_counter() - t - t_portal:.0f} s", flush=True)
            marker.write_text(json.dumps({"history_job": history_job}))
        token = create_token(data, "lead")
        server = PortalServer(data, env={"PORTAL_VIEWERS": "lead"}).start()
        mlflow_proc, mlflow_base = start_mlflow(args.mlflow_python, mlflow_url, work / "mlruns", work / "mlflow.log")
        time.sleep(SETTLE_SECONDS)
        try:
            return measure(server.url, token, mlflow_base, history_job, args.n)
        finally:
            server.stop()
            mlflow_proc.terminate()
            mlflow_proc.wait(30)
    finally:
        if database == "postgresql":
            os.environ.pop("PORTAL_DATABASE_URL", None)
            pg.drop_database(portal_db)
            pg.drop_database(mlflow_db)
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def start_postgresql() -> Any:
    """A throwaway cluster as the tests start one, given the buffers a server for this many runs would have."""
    from tests.pg_env import start_server

    pg = start_server()
    with pg._admin() as conn:
        conn.execute("ALTER SYSTEM SET shared_buffers = '1GB'")
        conn.execute("ALTER SYSTEM SET effective_cache_size = '4GB'")
    subprocess.run([*pg.run_as, str(pg.bindir / "pg_ctl"), "restart", "-D", str(pg.datadir), "-w", "-m", "fast",
                    "-l", str(pg.root / "server.log"), "-o", f"-p {pg.port}"], cwd=pg.root, check=True,
                   capture_output=True)
    return pg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, nargs="+", default=[20_000, 100_000])
    ap.add_argument("--database", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    ap.add_argument("--mlflow-python", default="/var/tmp/mlflow-venv/bin/python",
                    help="the Python of a virtual environment with mlflow (and psycopg2-binary for PostgreSQL)")
    ap.add_argument("-n", type=int, default=30, help="calls per shape and server (fewer past 30 s)")
    ap.add_argument("--keep", default="", help="keep the SQLite stores in this folder and reuse them next time")
    args = ap.parse_args()
    probe = subprocess.run([args.mlflow_python, "-c", "import mlflow; print(mlflow.__version__)"],
                           capture_output=True, text=True, check=False) if Path(args.mlflow_python).exists() else None
    if probe is None or probe.returncode != 0:
        raise SystemExit(f"No mlflow at {args.mlflow_python}: python3 -m venv /var/tmp/mlflow-venv && "
                         "/var/tmp/mlflow-venv/bin/pip install mlflow psycopg2-binary (or pass --mlflow-python)")
    sys.path.insert(0, str(ROOT))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a stopped bench still stops its servers
    print(f"portal vs MLflow {probe.stdout.strip()} tracking server, REST on a kept-alive connection, ms "
          "(median / p95); ratio = MLflow / portal (medians)", flush=True)
    pg = start_postgresql() if "postgresql" in args.database else None
    results = []
    try:
        for database in args.database:
            for runs in args.runs:
                results.append((database, runs, run_one(database, runs, args, pg)))
                print_table(results[-1:])
    finally:
        if pg is not None:
            pg.stop()
    print("\nall sizes")
    print_table(results)


def print_table(results: list[tuple[str, int, dict[str, tuple]]]) -> None:
    print(f"{'database':<11}{'runs':>10}  {'shape':<30}{'portal':>18}{'MLflow':>20}{'ratio':>9}")
    for database, runs, figures in results:
        for shape, (p50, p95, m50, m95) in figures.items():
            print(f"{database:<11}{runs:>10,}  {shape:<30}{p50:>9.1f} /{p95:>7.1f}{m50:>11.1f} /{m95:>7.1f}"
                  f"{m50 / p50:>8.1f}x", flush=True)


if __name__ == "__main__":
    main()
