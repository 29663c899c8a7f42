"""Issue 6 figure: a metric series of 1,000,000 points becomes a chart of at most 2,000 points (LTTB, peaks
kept) with at most 150 ms of server time. Prints the page's cost (chart cache read), the one-off build the
sync loop does in the background, and the naive way (every point into the figure).

Issue 14 figure (`--ranks`): the Metrics tab of a torchrun job with 8 ranks x 200,000 points each, every rank a
line of the chart (JobCharts.metric_ranks + rank_series, what the tab calls on each view); then the background
CPU of the sync loop's refresh while such a job keeps logging (every rank a loss per tick), per rebuild and per
minute, before (every series rebuilt every SERIES_REFRESH_SECONDS) and after (REFRESH_SHARE of a core)."""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import fresh_portal, summary, time_runs
from sqlalchemy import insert

N = 1_000_000
RANKS, RANK_POINTS = 8, 200_000


def insert_points(engine, job_id: int, name: str, steps: np.ndarray, values: np.ndarray, rank: int | None) -> None:
    from services.store.orm import MetricPoint

    with engine.begin() as conn:
        for lo in range(0, len(steps), 100_000):
            conn.execute(insert(MetricPoint), [
                {"job_id": job_id, "name": name, "step": int(st), "epoch": None, "value": float(v), "ts": 0.0,
                 "rank": rank} for st, v in zip(steps[lo:lo + 100_000], values[lo:lo + 100_000], strict=True)])


def ranks_view(window: float) -> None:
    """8 ranks x 200,000 points of one loss: the Metrics tab's service calls per view, as the sync loop leaves
    the store (its refresh has run)."""
    from sqlalchemy import text

    from services.models import JobStatus
    from services.store.orm import JobLog, utcnow
    from services.store.seed import seed_jobs

    portal = fresh_portal()
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 1, owner="bench", status=JobStatus.RUNNING)  # still logging: its refreshes are throttled
    rng = np.random.default_rng(0)
    steps = np.arange(RANK_POINTS)
    t = time.perf_counter()
    for rank in range(RANKS):
        values = np.exp(-steps / 5e4) * (1 + 0.1 * rank) + rng.normal(0, 0.01, RANK_POINTS)
        insert_points(engine, 1, "loss", steps, values, rank)
    # What the sync loop leaves after reading such a log: the ranks in the extractor's state, the latest figure.
    state = {"ranks": {str(r): {} for r in range(1, RANKS)}}
    with portal.jobs.session() as s:
        s.add(JobLog(job_id=1, path="", parser_state=state, updated_at=utcnow()))
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET latest_metrics = '{\"loss\": 0.05}' WHERE id = 1"))
    print(f"stored {RANKS} ranks x {RANK_POINTS:,} points in {time.perf_counter() - t:.1f} s")
    jobs = portal.jobs
    ranks = jobs.metric_ranks(1)
    t = time.perf_counter()
    first = jobs.rank_series(1, ranks)
    print(f"first view, nothing cached yet (one-off):  {(time.perf_counter() - t) * 1000:7.1f} ms")
    with engine.begin() as conn:  # new points arrived: the sync loop marks the series, then refreshes it
        conn.execute(text("UPDATE series_cache SET dirty = 1, updated_at = 0 WHERE job_id = 1 AND name = 'loss'"))
    t = time.perf_counter()
    jobs.refresh_series(min_age_seconds=0)
    print(f"sync loop's refresh, all ranks (background): {(time.perf_counter() - t) * 1000:7.1f} ms")
    ms = time_runs(lambda: jobs.rank_series(1, jobs.metric_ranks(1)), 10)
    print(f"Metrics tab, all {RANKS} ranks, per view:       {summary(ms)}   target <= 100 ms")
    print(f"  one rank (the filter):                  {summary(time_runs(lambda: jobs.rank_series(1, [5]), 10))}")
    lines = first["loss"]
    print(f"shape: {len(lines)} lines of at most {max(len(ser.x) for ser in lines.values())} points, "
          f"last steps {sorted({int(ser.x[-1]) for ser in lines.values()})}")
    from services.job_charts import REFRESH_SHARE

    step = RANK_POINTS
    for label, share in (("before (every 10 s)", 1.0), (f"after ({REFRESH_SHARE:.0%} share)", REFRESH_SHARE)):
        step = logging_job(jobs, engine, step, share, label, window)


def logging_job(jobs, engine, step: int, share: float, label: str, window: float) -> int:
    """The sync loop's ticks (every 0.5 s) over `window` s of a job whose 8 ranks log a loss each tick: the CPU
    its refreshes take (this thread's), per rebuild and per minute."""
    from sqlalchemy import text

    from services.store.orm import MetricPoint

    jobs._refresh_free_at = 0.0
    with engine.begin() as conn:
        conn.execute(text("UPDATE series_cache SET updated_at = 0 WHERE job_id = 1"))
    cpu: list[float] = []
    began = time.perf_counter()
    while time.perf_counter() - began < window:
        with engine.begin() as conn:  # what ingest_logs writes for one tick's lines
            conn.execute(insert(MetricPoint), [{"job_id": 1, "name": "loss", "step": step, "epoch": None,
                                                "value": 0.05, "ts": 0.0, "rank": r} for r in range(RANKS)])
            conn.execute(text("UPDATE series_cache SET dirty = 1 WHERE job_id = 1 AND name = 'loss'"))
        step += 1
        t = time.thread_time()
        if jobs.refresh_series(share=share):
            cpu.append(time.thread_time() - t)
        time.sleep(0.5)
    per_minute = sum(cpu) * 60 / (time.perf_counter() - began)
    print(f"logging job, {label}: {len(cpu)} rebuilds in {window:.0f} s, "
          f"{np.median(cpu) if cpu else 0:.2f} s CPU each, {per_minute:5.1f} s CPU per minute "
          f"({per_minute / 60:.0%} of a core)")
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ranks", action="store_true", help="only the 8-rank Metrics tab")
    parser.add_argument("--window", type=float, default=120.0,
                        help="seconds the logging job is watched, before and after (--ranks)")
    args = parser.parse_args()
    if args.ranks:
        ranks_view(args.window)
        return
    from services.downsample import lttb
    from services.store.seed import seed_jobs

    portal = fresh_portal()
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 1, owner="bench")
    rng = np.random.default_rng(0)
    steps = np.arange(N)
    values = np.exp(-steps / 2e5) + 0.05 * np.sin(steps / 500) + rng.normal(0, 0.01, N)
    values[777_777] = 3.0  # a loss spike a researcher must see
    t = time.perf_counter()
    insert_points(engine, 1, "loss", steps, values, None)
    with engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("UPDATE jobs SET latest_metrics = '{\"loss\": 0.05}' WHERE id = 1"))
    print(f"stored {N:,} points in {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    built = portal.jobs.metric_series(1)["loss"]
    build_ms = (time.perf_counter() - t) * 1000
    print(f"one-off chart build (sync loop, background): {build_ms:7.1f} ms -> {len(built.x)} points")
    ms = time_runs(lambda: portal.jobs.metric_series(1), 30)
    print(f"chart series on a page render (cache):     {summary(ms)}   target <= 150 ms")
    x = steps.astype(np.float64)
    print(f"LTTB alone, 1M -> 2,000:                   {summary(time_runs(lambda: lttb(x, values, 2000), 10))}")
    kept = built.y
    print(f"shape: spike kept {bool(np.isclose(kept.max(), 3.0))}, first/last kept "
          f"{bool(built.x[0] == 0 and built.x[-1] == N - 1)}, min kept {bool(np.isclose(kept.min(), values.min()))}")

    import plotly.graph_objects as go

    def naive() -> None:
        go.Figure(go.Scatter(x=steps, y=values)).to_json()

    naive_ms = time_runs(naive, 3)
    print(f"naive: all 1M points into the figure:      {summary(naive_ms)}  "
          f"(x{np.median(naive_ms) / np.median(ms):.0f} the cached chart, and ~{N * 16 / 1e6:.0f} MB to the browser)")


if __name__ == "__main__":
    main()
