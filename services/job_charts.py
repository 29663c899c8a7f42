"""Charts of a job: its metric series (downsampled, from the chart cache the sync loop keeps fresh), GPU
telemetry, and several jobs' series side by side for the compare view. A mixin of `JobService`."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.downsample import lttb
from services.models import JobView, NotFound, User
from services.store.orm import GpuSample, Job, JobLog, MetricPoint, SeriesCache

MAX_CHART_POINTS = 2000
MAX_COMPARED = 10
# Series up to this size are recomputed on view while they grow; bigger ones by the sync loop, at most every
# SERIES_REFRESH_SECONDS.
LIVE_SERIES_POINTS = 20_000
SERIES_REFRESH_SECONDS = 10.0
HIDDEN_SERIES = frozenset({"epoch", "step", "global_step"})


@dataclass(frozen=True)
class Series:
    x: np.ndarray
    y: np.ndarray
    axis: str  # what x is: "step" or "epoch"


def step_or_epoch(steps: np.ndarray, epochs: np.ndarray) -> tuple[np.ndarray, str]:
    """A series' x axis: the epoch when there is one value per epoch ("Epoch N ... Loss: x"), else the step."""
    if not np.isnan(epochs).any() and len(epochs) > 1 and (np.diff(epochs) > 0).all():
        return epochs, "epoch"
    return steps, "step"


class JobCharts:
    """Metric and GPU series of one job, and the compare view's."""

    # Provided by JobService.
    session: Callable[[], AbstractContextManager[Session]]
    get: Callable[[User, int], JobView]

    def metric_names(self, job_id: int) -> list[str]:
        with self.session() as s:
            names = s.scalars(
                select(MetricPoint.name).where(MetricPoint.job_id == job_id).distinct()
            ).all()
        return sorted(n for n in names if n not in HIDDEN_SERIES)

    def metric_series(self, job_id: int, max_points: int = MAX_CHART_POINTS) -> dict[str, Series]:
        """Every numeric series of a job, each downsampled to at most max_points, from the chart cache.

        A page never reads a whole series: a small one that changed is recomputed here, a big one is
        refreshed by the sync loop in the background (refresh_series), and a missing one is built once."""
        now = time.time()
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                return {}
            names = (set(job.latest_metrics or {}) | set(job.final_metrics or {})) - HIDDEN_SERIES
            cached = {c.name: c for c in s.scalars(select(SeriesCache).where(SeriesCache.job_id == job_id))}
            out: dict[str, Series] = {}
            for name in sorted(names | set(cached)):
                c = cached.get(name)
                if c is None or (c.dirty and c.points <= LIVE_SERIES_POINTS) or max_points != MAX_CHART_POINTS:
                    series, count = self._series_from_points(s, job_id, name, max_points)
                    if series is None:
                        continue
                    if c is None and max_points == MAX_CHART_POINTS:
                        # Dirty on purpose: points that arrive while this page reads are picked up by the sync
                        # loop's refresh (only it marks a series clean). Another viewer may have stored it first.
                        try:
                            with s.begin_nested():
                                self._store_series(s, job_id, name, series, count, now, None, dirty=True)
                        except IntegrityError:
                            pass
                    out[name] = series
                else:
                    out[name] = Series(np.asarray(c.x, dtype=np.float64),
                                       np.asarray([np.nan if v is None else v for v in c.y], dtype=np.float64),
                                       c.axis)
        return out

    def metric_ranks(self, job_id: int) -> list[int]:
        """The ranks whose lines the log showed (torchrun's prefixes), from the extractor's state: [] for one
        process, else [0, 1, ...]. Read without touching the points."""
        with self.session() as s:
            state = s.scalar(select(JobLog.parser_state).where(JobLog.job_id == job_id)) or {}
        others = sorted(int(r) for r in (state.get("ranks") or {}) if str(r).isdigit())
        return [0, *others] if others else []

    def rank_series(self, job_id: int, ranks: list[int],
                    max_points: int = MAX_CHART_POINTS) -> dict[str, dict[int, Series]]:
        """Per metric, one series per rank asked for (a line each on one chart). The first rank's comes from the
        chart cache like `metric_series`; the others' are read from their points on view (multi-process jobs)."""
        out: dict[str, dict[int, Series]] = {}
        if 0 in ranks:
            for name, series in self.metric_series(job_id, max_points).items():
                out.setdefault(name, {})[0] = series
        others = [r for r in ranks if r != 0]
        if not others:
            return out
        with self.session() as s:
            rows = s.execute(
                select(MetricPoint.name, MetricPoint.rank, MetricPoint.step, MetricPoint.epoch, MetricPoint.value)
                .where(MetricPoint.job_id == job_id, MetricPoint.rank.in_(others),
                       MetricPoint.name.not_in(HIDDEN_SERIES))
                .order_by(MetricPoint.name, MetricPoint.rank, MetricPoint.step, MetricPoint.id)
            ).all()
        for (name, rank), group in groupby(rows, key=itemgetter(0, 1)):
            arr = np.asarray([r[2:] for r in group], dtype=np.float64)
            x, axis = step_or_epoch(arr[:, 0], arr[:, 1])
            dx, dy = lttb(x, arr[:, 2], max_points)
            out.setdefault(name, {})[rank] = Series(dx, dy, axis)
        return out

    def refresh_series(self, min_age_seconds: float = SERIES_REFRESH_SECONDS, limit: int = 4) -> int:
        """Recompute the chart cache of series that got new points (called by the sync loop)."""
        now = time.time()
        with self.session() as s:
            stale = list(s.scalars(select(SeriesCache).where(SeriesCache.dirty.is_(True),
                                                             SeriesCache.updated_at < now - min_age_seconds)
                                   .limit(limit)))
            for c in stale:
                series, count = self._series_from_points(s, c.job_id, c.name, MAX_CHART_POINTS)
                if series is not None:
                    self._store_series(s, c.job_id, c.name, series, count, now, c)
        return len(stale)

    @staticmethod
    def _series_from_points(s: Session, job_id: int, name: str, max_points: int) -> tuple[Series | None, int]:
        # The DBAPI cursor's plain tuples: ORM rows would triple the time for a million points.
        result = s.connection().execute(
            select(MetricPoint.step, MetricPoint.epoch, MetricPoint.value)
            .where(MetricPoint.job_id == job_id, MetricPoint.name == name,
                   MetricPoint.rank.is_(None) | (MetricPoint.rank == 0))
            .order_by(MetricPoint.step, MetricPoint.id)
        )
        rows = result.cursor.fetchall() if result.cursor is not None else []
        result.close()
        if not rows:
            return None, 0
        arr = np.array(rows, dtype=np.float64)
        x, axis = step_or_epoch(arr[:, 0], arr[:, 1])
        dx, dy = lttb(x, arr[:, 2], max_points)
        return Series(dx, dy, axis), len(rows)

    @staticmethod
    def _store_series(s: Session, job_id: int, name: str, series: Series, count: int, now: float,
                      cached: SeriesCache | None, dirty: bool = False) -> None:
        ys = [None if not np.isfinite(v) else float(v) for v in series.y]
        if cached is None:
            s.add(SeriesCache(job_id=job_id, name=name, points=count, axis=series.axis, x=series.x.tolist(), y=ys,
                              dirty=dirty, updated_at=now))
            s.flush()
        else:
            cached.points, cached.axis, cached.x, cached.y = count, series.axis, series.x.tolist(), ys
            cached.dirty, cached.updated_at = dirty, now


    # GPU telemetry -------------------------------------------------------------------------------
    def record_gpu(self, readings: dict[int, tuple[float | None, float | None]], now: float,
                   idle_percent: float) -> None:
        """Store one sample per job ((utilisation %, memory MiB)) and keep the card's figures current."""
        if not readings:
            return
        with self.session() as s:
            s.execute(insert(GpuSample), [{"job_id": j, "ts": now, "util_percent": u, "memory_mib": m}
                                          for j, (u, m) in readings.items()])
            for job in s.scalars(select(Job).where(Job.id.in_(list(readings)))):
                util, memory = readings[job.id]
                job.gpu_util, job.gpu_memory_mib = util, memory
                if util is None or util >= idle_percent:
                    job.gpu_idle_since = None
                elif job.gpu_idle_since is None:
                    job.gpu_idle_since = now

    def gpu_series(self, job_id: int, max_points: int = MAX_CHART_POINTS) -> dict[str, Series]:
        """The job's GPU utilisation (%) and memory (MiB) over seconds since its start."""
        with self.session() as s:
            job = s.get(Job, job_id)
            rows = s.execute(select(GpuSample.ts, GpuSample.util_percent, GpuSample.memory_mib)
                             .where(GpuSample.job_id == job_id).order_by(GpuSample.ts)).all()
            start = (job.started_at or job.created_at).timestamp() if job else 0.0
        if not rows:
            return {}
        arr = np.array([(r[0], np.nan if r[1] is None else r[1], np.nan if r[2] is None else r[2]) for r in rows],
                       dtype=np.float64)
        x = arr[:, 0] - start
        out = {}
        for i, name in ((1, "GPU utilisation (%)"), (2, "GPU memory (MiB)")):
            if not np.isnan(arr[:, i]).all():
                dx, dy = lttb(x, arr[:, i], max_points)
                out[name] = Series(dx, dy, "seconds")
        return out

    # Compare ------------------------------------------------------------------------------------
    def compare(self, user: User, job_ids: list[int]) -> list[JobView]:
        """The jobs of a compare view the user may see, in the order given (unknown ids are left out)."""
        out: list[JobView] = []
        for job_id in dict.fromkeys(job_ids):
            try:
                out.append(self.get(user, job_id))
            except NotFound:
                continue
        return out[:MAX_COMPARED]

    def compare_series(self, jobs: list[JobView], by: str = "step",
                       max_points: int = MAX_CHART_POINTS) -> dict[str, dict[int, Series]]:
        """Per metric, each job's series on a shared x axis: the step (or epoch) or seconds since its start."""
        started = {j.id: (j.started_at or j.created_at).timestamp() for j in jobs}
        with self.session() as s:
            rows = s.execute(
                select(MetricPoint.name, MetricPoint.job_id, MetricPoint.step, MetricPoint.epoch, MetricPoint.ts,
                       MetricPoint.value)
                .where(MetricPoint.job_id.in_(list(started)), MetricPoint.name.not_in(HIDDEN_SERIES),
                       (MetricPoint.rank.is_(None)) | (MetricPoint.rank == 0))
                .order_by(MetricPoint.name, MetricPoint.job_id, MetricPoint.step, MetricPoint.id)
            ).all()
        out: dict[str, dict[int, Series]] = {}
        for (name, job_id), group in groupby(rows, key=itemgetter(0, 1)):
            arr = np.asarray([r[2:] for r in group], dtype=np.float64)
            if by == "time":
                x, axis = arr[:, 2] - started[job_id], "seconds"
            else:
                x, axis = step_or_epoch(arr[:, 0], arr[:, 1])
            dx, dy = lttb(x, arr[:, 3], max_points)
            out.setdefault(name, {})[job_id] = Series(dx, dy, axis)
        return out
