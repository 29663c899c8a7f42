"""Issue 7 figures: a store of 1,000,000 jobs and 20,000,000 metric points (seeded in bulk, timed), then the
history page's queries server side: unfiltered first page, filtered + sorted page, a parameter search, and a
streamed CSV export of 100,000 rows (peak memory). SQLite by default; --postgresql URL for PostgreSQL.

    .venv/bin/python bench/history_scale.py                 # 1M jobs, 20M points, SQLite
    .venv/bin/python bench/history_scale.py --jobs 100000 --points 2000000
    .venv/bin/python bench/history_scale.py --postgresql start   # the same on a throwaway PostgreSQL
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from _common import APP, ScriptTimer, percentile, time_runs
from sqlalchemy import func, select

from services.store.orm import Job
from services.store.seed import indexes_rebuilt_after, skip_triggers

OWNERS = [f"user-{i:02d}" for i in range(50)]


def seed_points(engine, n_points: int, n_jobs: int) -> None:
    """Metric points in bulk, 200k at a time: COPY on PostgreSQL, executemany on SQLite."""
    rng = np.random.default_rng(0)
    per_job = max(1, n_points // min(n_jobs, 100_000))
    jobs = min(n_jobs, max(1, n_points // per_job))
    batch = 200_000
    done = 0
    with indexes_rebuilt_after(engine, "metric_points"), engine.begin() as conn:
        skip_triggers(conn)  # the job ids exist by construction: no foreign-key check per point
        raw = conn.connection.dbapi_connection
        while done < n_points:
            k = min(batch, n_points - done)
            idx = np.arange(done, done + k)
            job_ids = (idx // per_job) % jobs + 1
            steps = idx % per_job
            values = np.exp(-steps / 50) + rng.normal(0, 0.01, k)
            if engine.dialect.name == "postgresql":
                # COPY's text format written by pandas in C, not row by row in Python.
                text = pd.DataFrame({"job_id": job_ids, "name": "loss", "step": steps, "value": values,
                                     "ts": 0.0}).to_csv(sep="\t", header=False, index=False)
                with raw.cursor() as cur, cur.copy(
                        "COPY metric_points (job_id, name, step, value, ts) FROM STDIN") as copy:
                    copy.write(text)
            else:
                rows = list(zip(job_ids.tolist(), steps.tolist(), values.tolist(), strict=True))
                raw.executemany("INSERT INTO metric_points (job_id, name, step, value, ts) VALUES (?, 'loss', ?, ?, 0)",
                                rows)
            done += k


def _forget_statistics(engine) -> None:
    if engine.dialect.name != "sqlite":
        return
    with engine.begin() as conn:
        if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
            conn.exec_driver_sql("DELETE FROM sqlite_stat1")
    engine.dispose()  # connections load the statistics with the schema


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--points", type=int, default=20_000_000)
    ap.add_argument("--postgresql", default="",
                    help="a postgresql+psycopg:// URL of an empty database, or 'start' for a throwaway server "
                         "(Debian's postgresql, as the tests start it: 127.0.0.1, fsync off)")
    ap.add_argument("--reuse", default="", help="the data directory of an earlier SQLite run: time the queries "
                                                "again without seeding (the store is kept after each run)")
    ap.add_argument("--without-statistics", action="store_true",
                    help="time the store without the planner statistics the portal keeps (on SQLite those there "
                         "are deleted; on PostgreSQL autovacuum may still collect them)")
    args = ap.parse_args()
    server = None
    if args.postgresql == "start":
        from tests.pg_env import start_server

        server = start_server()
        args.postgresql = server.url(server.create_database())
    data = args.reuse or tempfile.mkdtemp(prefix="portal-history-bench-")
    os.environ["PORTAL_DATA_DIR"] = data
    if args.postgresql:
        os.environ["PORTAL_DATABASE_URL"] = args.postgresql
    from services.history import HistoryQuery, csv_chunks
    from services.models import Role, StatusGroup, User
    from services.portal import get_portal, reset_portal
    from services.store import maintenance
    from services.store.seed import seed_jobs

    if args.without_statistics:  # as before issue 14: the portal kept no planner statistics
        maintenance.refresh_statistics = lambda _engine: []
    portal = get_portal()
    engine = portal.jobs.sessions.kw["bind"]
    if args.reuse:
        print(f"{engine.dialect.name}: the store in {data}")
    else:
        print(f"{engine.dialect.name}: seeding {args.jobs:,} jobs and {args.points:,} metric points into {data}")
        t = time.perf_counter()
        seed_jobs(engine, args.jobs, owner=OWNERS, varied=True)
        t_jobs = time.perf_counter() - t
        seed_points(engine, args.points, args.jobs)
        t_all = time.perf_counter() - t
        print(f"seeded in {t_all:.0f} s (jobs {t_jobs:.0f} s, points {t_all - t_jobs:.0f} s; target < 300 s)")
        # The store as the portal leaves it: no ANALYZE here, a restart (its start-up keeps the statistics).
        reset_portal()
        t = time.perf_counter()
        portal = get_portal()
        engine = portal.jobs.sessions.kw["bind"]
        print(f"portal start-up on the seeded store (migrations, planner statistics): {time.perf_counter() - t:.1f} s")
    if args.without_statistics:
        _forget_statistics(engine)

    lead = User("lead", Role.VIEWER)
    h = portal.history
    today = datetime.now(UTC).date()
    week_ago = today - timedelta(days=7)

    views = {
        "unfiltered first page (target <= 20 ms)": HistoryQuery(),
        "Completed, by final loss (target <= 50 ms)":
            HistoryQuery(status=[StatusGroup.SUCCEEDED], sort="final_loss", descending=False),
        "Failed, GPUs >= 1, by cost": HistoryQuery(status=[StatusGroup.FAILED], gpus_min=1, sort="cost"),
        "one owner, template, by GPU-hours": HistoryQuery(owner="user-07", template="llm-lora", sort="gpu_hours"),
        "parameter search 'learning_rate=0.003' by final loss":
            HistoryQuery(search="learning_rate=0.003", sort="final_loss", descending=False),
        "name search 'exp-0999999'": HistoryQuery(search="exp-0999999"),
        "a week of one owner, newest first": HistoryQuery(owner="user-03", date_from=week_ago, date_to=today),
        "everyone by name": HistoryQuery(sort="name", descending=False),
        "everyone by owner": HistoryQuery(sort="owner", descending=False),
        "Completed by GPUs, page 20": HistoryQuery(status=[StatusGroup.SUCCEEDED], sort="gpus", page=20),
        "by batch size, GPUs <= 1": HistoryQuery(sort="batch_size", gpus_max=1),
        "one owner, by runtime": HistoryQuery(owner="user-07", sort="runtime_seconds"),
        "everyone by final accuracy": HistoryQuery(sort="final_metric", metric="accuracy"),
        "Failed by final eval_loss (half report it)":
            HistoryQuery(status=[StatusGroup.FAILED], sort="final_metric", metric="eval_loss", descending=False),
        "one owner by final accuracy, page 5": HistoryQuery(owner="user-07", sort="final_metric", metric="accuracy",
                                                            page=5),
    }

    def short(ms: list[float]) -> str:
        return f"p50 {statistics.median(ms):6.1f}  p95 {percentile(ms, 95):6.1f}"

    print(f"{'first view of (milliseconds)':56s} {'rows':>21s} | {'summary strip':>21s} | {'page total':>21s}")
    for label, q in views.items():
        h.page(lead, q)
        h.summary(lead, q)
        rows_ms = time_runs(lambda q=q: h.page(lead, q), 30)
        # The first view of a filter: a text search's summary is kept for reruns, so forget it each time.
        strip_ms = time_runs(lambda q=q: (h._scanned.clear(), h.summary(lead, q)), 30)
        total_ms = time_runs(lambda q=q: (h._scanned.clear(), h.page(lead, q), h.summary(lead, q)), 30)
        print(f"{label:56s} {short(rows_ms):>21s} | {short(strip_ms):>21s} | {short(total_ms):>21s}")

    # The whole History page (the script run Streamlit does per view: filters, rows, strip, table, links).
    from streamlit.testing.v1 import AppTest

    timer = ScriptTimer()
    pages = {"unfiltered": {}, "Completed, by final loss": {"status": "Completed", "sort": "final loss ↑"},
             "one owner and template, by GPU-hours": {"owner": "user-07", "template": "llm-lora",
                                                      "sort": "GPU-hours ↓"},
             "parameter search, by final loss": {"q": "learning_rate=0.003", "sort": "final loss ↑"},
             "everyone by final accuracy": {"sort": "final accuracy ↓"}}
    for label, params in pages.items():
        at = AppTest.from_file(APP, default_timeout=120)
        at.switch_page("pages/history.py")
        at.query_params.update(params)
        for _ in range(3):  # warm-up: the page module's first runs (imports, Streamlit's caches)
            at.run()
        assert not at.exception, at.exception
        timer.take()
        for _ in range(20):
            h._scanned.clear()
            at.run()
        first = timer.take()
        for _ in range(20):  # the same view rerun: a row selected, another column shown
            at.run()
        print(f"History page, {label:38s} script run: first view {short(first)}, rerun {short(timer.take())}")

    def export(traced: bool) -> tuple[int, int, float, float]:
        if traced:  # tracemalloc slows every allocation: the time comes from a run without it
            tracemalloc.start()
        t = time.perf_counter()
        rows = size = 0
        view = HistoryQuery(status=[StatusGroup.SUCCEEDED])
        for chunk in csv_chunks(h.rows(lead, view, batch=2000), h.export_metric_names(lead, view)):
            size += len(chunk)
            rows += chunk.count("\n")
            if rows >= 100_000:
                break
        seconds = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1] / 1e6 if traced else 0.0
        tracemalloc.stop()
        return rows, size, seconds, peak

    # The dashboard's section counts: from the running totals without a search (a GROUP BY of every job before).
    jobs = portal.jobs

    def group_by_every_job() -> None:
        with jobs.session() as s:
            s.execute(select(Job.status_group, func.count()).group_by(Job.status_group)).all()

    for label, fn in {"everyone": jobs.counts, "one owner": lambda: jobs.counts(owner="user-07"),
                      "everyone, the GROUP BY of every job it was": group_by_every_job}.items():
        print(f"dashboard counts, {label:44s} {short(time_runs(fn, 10))}")

    # An export's metric columns: the names its view's jobs reported (before the first row goes out).
    for label, view in {"everyone": HistoryQuery(), "Completed (600,000 jobs)": HistoryQuery(
            status=[StatusGroup.SUCCEEDED]), "one owner": HistoryQuery(owner="user-07")}.items():
        ms = time_runs(lambda view=view: h.export_metric_names(lead, view), 3)
        print(f"export's metric columns, {label:26s} {short(ms)}")
    rows, size, seconds, _ = export(traced=False)
    peak = export(traced=True)[3]
    print(f"CSV export: {rows:,} rows, {size / 1e6:.1f} MB in {seconds:.1f} s ({rows / seconds:,.0f} rows/s), "
          f"peak Python memory {peak:.1f} MB (streamed)")
    portal.close()
    if server is not None:
        server.stop()


if __name__ == "__main__":
    main()
