"""Charts of a job: its metric series (downsampled, from the chart cache the sync loop keeps fresh), GPU
telemetry, and several jobs' series side by side for the compare view. A mixin of `JobService`."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from itertools import groupby
from operator import itemgetter

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.downsample import lttb
from services.metric_state import printed_at_start
from services.models import ACTIVE_STATUSES, JobView, NotFound, User
from services.smoothing import bucket_means
from services.store.orm import GpuSample, Job, JobLog, MetricPoint, SeriesCache

MAX_CHART_POINTS = 2000
MAX_COMPARED = 10
# Series up to this size are recomputed on view while they grow; bigger ones by the sync loop, at most every
# SERIES_REFRESH_SECONDS.
LIVE_SERIES_POINTS = 20_000
SERIES_REFRESH_SECONDS = 10.0
# The share of one core that rebuilding running jobs' big series may take (the portal serves every viewer from
# the same process): with it a series of 8 ranks x 200,000 points (3.7 s a rebuild) is redrawn every ~75 s.
REFRESH_SHARE = 0.05
HIDDEN_SERIES = frozenset({"epoch", "step", "global_step"})


# Between a series' name and a rank in the chart cache ("loss" + RANK_SEP + "3"): a metric name is printable text
# (the extractor's rule), so it never holds this character, and the first rank's entry stays the plain name.
RANK_SEP = "\x1f"


@dataclass(frozen=True)
class Series:
    x: np.ndarray
    y: np.ndarray
    axis: str  # what x is: "step" or "epoch"
    # Of a downsampled series, its LTTB buckets' means (what smoothing averages, services.smoothing.bucket_means);
    # None when it is not downsampled or they are not at hand (then y is what is smoothed).
    mean: np.ndarray | None = None


EMPTY_SERIES = Series(np.zeros(0), np.zeros(0), "step")


def _cache_name(name: str, rank: int | str) -> str:
    return f"{name}{RANK_SEP}{rank}"


# A series' buckets' means (Series.mean) sit in the chart cache under its name + RANK_SEP + MEANS, x as its entry's.
MEANS = "mean"


def _other_ranks(s: Session, job_id: int) -> list[int]:
    """The ranks after the first that the job's log showed, from the extractor's state (no point is read)."""
    state = s.scalar(select(JobLog.parser_state).where(JobLog.job_id == job_id)) or {}
    return sorted(int(r) for r in (state.get("ranks") or {}) if str(r).isdigit())


def _cached_series(c: SeriesCache) -> Series:
    return Series(np.asarray(c.x, dtype=np.float64),
                  np.asarray([np.nan if v is None else v for v in c.y], dtype=np.float64), c.axis)


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
    # When the running jobs' share of rebuild time (refresh_series) allows the next rebuild (time.monotonic).
    _refresh_free_at: float = 0.0

    def printed_at_start(self, jobs: list[JobView]) -> dict[int, dict[str, float]]:
        """What each of these (visible) jobs printed once before its first step: configuration, not a series."""
        with self.session() as s:
            rows = s.execute(select(JobLog.job_id, JobLog.parser_state)
                             .where(JobLog.job_id.in_([j.id for j in jobs]))).all()
        return {job_id: printed_at_start(state) for job_id, state in rows}

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
            # Not the ranks' and means' entries (a multi-node job's are most of its rows, each a whole series).
            cached = {c.name: c for c in s.scalars(select(SeriesCache).where(
                SeriesCache.job_id == job_id, ~SeriesCache.name.contains(RANK_SEP)))}
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
                    out[name] = _cached_series(c)
        return out

    def metric_ranks(self, job_id: int) -> list[int]:
        """The ranks whose lines the log showed (torchrun's prefixes), from the extractor's state: [] for one
        process, else [0, 1, ...]. Read without touching the points."""
        with self.session() as s:
            others = _other_ranks(s, job_id)
        return [0, *others] if others else []

    def rank_series(self, job_id: int, ranks: list[int],
                    max_points: int = MAX_CHART_POINTS) -> dict[str, dict[int, Series]]:
        """Per metric, one series per rank asked for (a line each on one chart). Every rank's comes from the chart
        cache like `metric_series` (the first rank's is its very entry): a view never reads all ranks' points."""
        out: dict[str, dict[int, Series]] = {}
        if 0 in ranks:
            for name, series in self.metric_series(job_id, max_points).items():
                out.setdefault(name, {})[0] = series
        others = sorted({r for r in ranks if r != 0})
        if not others:
            return out
        now = time.time()
        with self.session() as s:
            cached = {c.name: c for c in s.scalars(select(SeriesCache).where(SeriesCache.job_id == job_id))}
            for name, base in sorted(cached.items()):
                if RANK_SEP in name or name in HIDDEN_SERIES:
                    continue
                entries = {rank: cached.get(_cache_name(name, rank)) for rank in others}
                # Read from the points: what is not cached yet (then kept), and small series that grew.
                live = base.dirty and base.points <= LIVE_SERIES_POINTS
                read = [r for r, c in entries.items() if c is None or max_points != MAX_CHART_POINTS
                        or (live and c.points <= LIVE_SERIES_POINTS)]
                built = self._rank_series_from_points(s, job_id, name, read, max_points) if read else {}
                for rank, c in entries.items():
                    if rank in read:
                        series, count = built.get(rank, (EMPTY_SERIES, 0))
                        if c is None and max_points == MAX_CHART_POINTS:
                            try:  # kept even when empty: a rank without this metric is not read again
                                with s.begin_nested():
                                    self._store_series(s, job_id, _cache_name(name, rank), series, count, now, None)
                            except IntegrityError:
                                pass  # another viewer stored it first
                    elif c is not None and c.points:
                        series = _cached_series(c)
                    else:
                        continue
                    if len(series.x):
                        out.setdefault(name, {})[rank] = series
        return out

    def refresh_series(self, min_age_seconds: float = SERIES_REFRESH_SECONDS, limit: int = 4,
                       share: float = REFRESH_SHARE) -> int:
        """Recompute the chart cache of series that got new points (called by the sync loop); how many were.

        A rebuild reads all of a series' points (every rank's): seconds of the portal's one core (GIL) for a long
        multi-node job. So the rebuilds for running jobs together get at most `share` of the time: after one that
        took t, the next waits t * (1 / share - 1), oldest series first. A finished job's series are rebuilt at
        once, in full, whatever the share: its final chart is the whole series'."""
        now = time.time()
        finished = Job.status.not_in([st.value for st in ACTIVE_STATUSES])
        done = 0
        with self.session() as s:
            stale = s.execute(select(SeriesCache, finished).join(Job, Job.id == SeriesCache.job_id)
                              .where(SeriesCache.dirty.is_(True),
                                     (SeriesCache.updated_at < now - min_age_seconds) | finished)
                              .order_by(finished.desc(), SeriesCache.updated_at).limit(limit)).all()
            for c, ended in stale:
                if not ended and time.monotonic() < self._refresh_free_at:
                    continue  # the running jobs' share is spent: a later tick, this series first
                began = time.perf_counter()
                self._rebuild_series(s, c, now)
                done += 1
                if not ended:
                    spent = time.perf_counter() - began
                    self._refresh_free_at = time.monotonic() + spent * (1 / share - 1)
        return done

    def _rebuild_series(self, s: Session, c: SeriesCache, now: float) -> None:
        """One series' entry and its other ranks' entries, from all their points."""
        series, count = self._series_from_points(s, c.job_id, c.name, MAX_CHART_POINTS)
        if series is not None:
            self._store_series(s, c.job_id, c.name, series, count, now, c)
            self._store_means(s, c.job_id, c.name, series, count, now)
        # The other ranks' entries of this series (the sync loop marks only the series' own entry), made here too,
        # so that a page's first view finds them.
        ranks = _other_ranks(s, c.job_id)
        if not ranks:
            return
        entries = {int(e.name.rsplit(RANK_SEP, 1)[1]): e for e in s.scalars(
            select(SeriesCache).where(SeriesCache.job_id == c.job_id,
                                      SeriesCache.name.startswith(c.name + RANK_SEP, autoescape=True)))
            if e.name.rsplit(RANK_SEP, 1)[1].isdigit()}  # not the MEANS entry
        built = self._rank_series_from_points(s, c.job_id, c.name, ranks, MAX_CHART_POINTS)
        for rank in ranks:
            try:  # a viewer may store a missing entry at the same time
                with s.begin_nested():
                    self._store_series(s, c.job_id, _cache_name(c.name, rank),
                                       *built.get(rank, (EMPTY_SERIES, 0)), now, entries.get(rank))
            except IntegrityError:
                pass

    def with_means(self, job_id: int, series: dict[str, Series]) -> dict[str, Series]:
        """These series of the job with their buckets' means (what smoothing averages) where they are downsampled:
        from the chart cache's MEANS entries, which the sync loop's refresh keeps with the series; a series small
        enough to be read on view (LIVE_SERIES_POINTS) gets them from its points, kept then. A big series without
        them is marked for the refresh (entries from before means were kept) and, until then, has none."""
        wanted = {n: ser for n, ser in series.items() if ser.mean is None and len(ser.x) >= MAX_CHART_POINTS}
        if not wanted:
            return series
        out, now = dict(series), time.time()
        with self.session() as s:
            keys = [*wanted, *(_cache_name(n, MEANS) for n in wanted)]
            rows = {c.name: c for c in s.scalars(select(SeriesCache).where(SeriesCache.job_id == job_id,
                                                                           SeriesCache.name.in_(keys)))}
            for name, ser in wanted.items():
                means, base = rows.get(_cache_name(name, MEANS)), rows.get(name)
                if means is not None and np.array_equal(np.asarray(means.x, dtype=np.float64), ser.x):
                    out[name] = replace(ser, mean=_cached_series(means).y)
                elif base is not None and base.points <= LIVE_SERIES_POINTS:
                    built, count = self._series_from_points(s, job_id, name, MAX_CHART_POINTS)
                    if built is not None:
                        self._store_means(s, job_id, name, built, count, now)
                        out[name] = built
                elif base is not None and not base.dirty:
                    base.dirty = True
        return out

    @staticmethod
    def _store_means(s: Session, job_id: int, name: str, series: Series, count: int, now: float) -> None:
        if series.mean is None:
            return
        key = _cache_name(name, MEANS)
        try:  # a viewer may store them at the same time
            with s.begin_nested():
                JobCharts._store_series(s, job_id, key, Series(series.x, series.mean, series.axis), count, now,
                                        s.get(SeriesCache, (job_id, key)))
        except IntegrityError:
            pass

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
        return Series(dx, dy, axis, bucket_means(arr[:, 2], max_points)), len(rows)

    @staticmethod
    def _rank_series_from_points(s: Session, job_id: int, name: str, ranks: list[int],
                                 max_points: int) -> dict[int, tuple[Series, int]]:
        """Some ranks' points of one series, in one read along the (job, name, step) index; split by rank here."""
        result = s.connection().execute(
            select(MetricPoint.rank, MetricPoint.step, MetricPoint.epoch, MetricPoint.value)
            .where(MetricPoint.job_id == job_id, MetricPoint.name == name, MetricPoint.rank.in_(ranks))
            .order_by(MetricPoint.step, MetricPoint.id)
        )
        rows = result.cursor.fetchall() if result.cursor is not None else []
        result.close()
        out: dict[int, tuple[Series, int]] = {}
        if not rows:
            return out
        arr = np.array(rows, dtype=np.float64)
        arr = arr[np.argsort(arr[:, 0], kind="stable")]  # by rank, each in step order
        for part in np.split(arr, np.flatnonzero(np.diff(arr[:, 0])) + 1):
            x, axis = step_or_epoch(part[:, 1], part[:, 2])
            dx, dy = lttb(x, part[:, 3], max_points)
            out[int(part[0, 0])] = (Series(dx, dy, axis), len(part))
        return out

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
            out.setdefault(name, {})[job_id] = Series(dx, dy, axis, bucket_means(arr[:, 3], max_points))
        return out
