"""Issue 6 figure: a metric series of 1,000,000 points becomes a chart of at most 2,000 points (LTTB, peaks
kept) with at most 150 ms of server time. Prints the page's cost (chart cache read), the one-off build the
sync loop does in the background, and the naive way (every point into the figure)."""

from __future__ import annotations

import time

import numpy as np
from _common import fresh_portal, summary, time_runs
from sqlalchemy import insert

N = 1_000_000


def main() -> None:
    from services.downsample import lttb
    from services.store.orm import MetricPoint
    from services.store.seed import seed_jobs

    portal = fresh_portal()
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 1, owner="bench")
    rng = np.random.default_rng(0)
    steps = np.arange(N)
    values = np.exp(-steps / 2e5) + 0.05 * np.sin(steps / 500) + rng.normal(0, 0.01, N)
    values[777_777] = 3.0  # a loss spike a researcher must see
    t = time.perf_counter()
    with engine.begin() as conn:
        for lo in range(0, N, 100_000):
            conn.execute(insert(MetricPoint), [
                {"job_id": 1, "name": "loss", "step": int(s), "epoch": None, "value": float(v), "ts": 0.0,
                 "rank": None} for s, v in zip(steps[lo:lo + 100_000], values[lo:lo + 100_000], strict=True)])
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
