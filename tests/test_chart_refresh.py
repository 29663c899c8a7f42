"""The sync loop's chart refresh of a running job's big series: its rebuilds take a bounded share of the portal's
one core, a viewer still gets the new points, and the chart of a finished job is the whole series' at once."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sqlalchemy import insert, select, update

from services.downsample import lttb
from services.job_charts import LIVE_SERIES_POINTS, MAX_CHART_POINTS, REFRESH_SHARE
from services.models import JobStatus
from services.store.orm import Job, MetricPoint, SeriesCache
from services.store.seed import seed_jobs

POINTS = 3 * LIVE_SERIES_POINTS  # past what a view recomputes itself: only the sync loop's refresh redraws it


def log_points(portal, job_id: int, steps: range) -> None:
    """What the sync loop writes when the job logs a loss at these steps: the points, then the series marked."""
    with portal.jobs.session() as s:
        s.execute(insert(MetricPoint), [{"job_id": job_id, "name": "loss", "step": st, "epoch": None,
                                         "value": 1.0 / (1 + st) + 0.01 * (st % 7), "ts": 0.0, "rank": None}
                                        for st in steps])
        s.execute(update(SeriesCache).where(SeriesCache.job_id == job_id, SeriesCache.name == "loss")
                  .values(dirty=True))


def expected_chart(steps: int) -> tuple[list[float], list[float]]:
    x = np.arange(steps, dtype=np.float64)
    dx, dy = lttb(x, 1.0 / (1 + x) + 0.01 * (x % 7), MAX_CHART_POINTS)
    return dx.tolist(), dy.tolist()


@pytest.fixture
def running_job(any_portal) -> int:
    """A running job that has logged POINTS losses, its chart built once by the sync loop's refresh."""
    engine = any_portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 1, owner="alice", status=JobStatus.RUNNING)
    with any_portal.jobs.session() as s:
        job_id = s.scalar(select(Job.id))
        s.get(Job, job_id).latest_metrics = {"loss": 0.1}
        s.add(SeriesCache(job_id=job_id, name="loss", points=0, axis="step", x=[], y=[], dirty=True, updated_at=0.0))
    log_points(any_portal, job_id, range(POINTS))
    assert any_portal.jobs.refresh_series(min_age_seconds=0) == 1
    assert any_portal.jobs.metric_series(job_id)["loss"].x[-1] == POINTS - 1
    return job_id


def test_a_running_jobs_rebuilds_take_a_small_share_of_the_core_yet_new_points_reach_the_chart(any_portal,
                                                                                              running_job):
    jobs = any_portal.jobs
    jobs._refresh_free_at = 0.0  # the fixture's own build is not counted here
    step, rebuilds, busy, began, last = POINTS, 0, 0.0, time.perf_counter(), 0.0
    # A job that logs all the time, and a sync loop that ticks every 100 ms (five times the real one): before, every
    # tick rebuilt the whole series again, most of the time spent rebuilding.
    while rebuilds < 2 and time.perf_counter() - began < 60:
        log_points(any_portal, running_job, range(step, step + 1))
        step += 1
        t = time.perf_counter()
        rebuilds += jobs.refresh_series(min_age_seconds=0)
        last = time.perf_counter() - t
        busy += last
        time.sleep(0.1)
    elapsed = time.perf_counter() - began
    assert rebuilds == 2, "a second rebuild came within the share's wait: the viewer sees the new points"
    # The second rebuild's own wait lies after the loop: its time is left out, or a busy machine that makes it slower
    # than the first would count it without the quiet time it buys.
    busy, elapsed = busy - last, elapsed - last
    assert busy / elapsed < 3 * REFRESH_SHARE, f"{busy:.2f} s of {elapsed:.2f} s spent rebuilding one chart"
    shown = jobs.metric_series(running_job)["loss"]
    assert POINTS < shown.x[-1] <= step - 1, "the chart shows points logged since the first build"


def test_a_finished_jobs_chart_is_the_whole_series_at_once(any_portal, running_job):
    jobs = any_portal.jobs
    # The job's last losses land just after a refresh (its share spent, the series rebuilt moments ago), and the
    # job ends: before, the chart waited 10 s (or for ever, were the series never marked again) without them.
    log_points(any_portal, running_job, range(POINTS, POINTS + 500))
    with jobs.session() as s:
        s.get(Job, running_job).status = JobStatus.SUCCEEDED.value
    assert jobs.refresh_series() == 1, "the finished job's series is rebuilt in the very tick it ends"
    shown = jobs.metric_series(running_job)["loss"]
    x, y = expected_chart(POINTS + 500)
    assert shown.x.tolist() == x and shown.y.tolist() == pytest.approx(y), "exactly the full recompute"
    assert jobs.refresh_series(min_age_seconds=0) == 0, "and nothing is left to redo"
