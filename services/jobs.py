"""Use cases: submit, stop, delete, retry, clone, save checkpoint, and the queries pages need."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.auth import may_act, may_download, may_see
from services.backends.base import Backend, BackendError, JobSubmission
from services.config import Settings
from services.downsample import lttb
from services.logs import read_tail
from services.models import (
    ACTIVE_STATUSES,
    GROUP_OF,
    Conflict,
    JobRequest,
    JobStatus,
    JobView,
    NotFound,
    StatusGroup,
    User,
    ValidationProblem,
)
from services.safe_files import open_job_file, open_read
from services.store.orm import GpuSample, Job, JobEvent, JobLog, MetricPoint, SeriesCache, utcnow
from services.store.search import matches
from services.workspace import OutputFile, Workspace, list_files

MAX_CHART_POINTS = 2000
MAX_COMPARED = 10
# Series up to this size are recomputed on view while they grow; bigger ones by the sync loop, at most every
# SERIES_REFRESH_SECONDS.
LIVE_SERIES_POINTS = 20_000
SERIES_REFRESH_SECONDS = 10.0
HIDDEN_SERIES = frozenset({"epoch", "step", "global_step"})


def validation_problems(exc: ValidationError) -> dict[str, str]:
    """pydantic errors -> one sentence per form field."""
    out: dict[str, str] = {}
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        msg = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        if not field and ":" in msg:
            field, msg = (s.strip() for s in msg.split(":", 1))
        out.setdefault(field, msg)
    return out


def parse_request(data: dict[str, Any]) -> JobRequest:
    try:
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        raise ValidationProblem(validation_problems(exc)) from None


@dataclass(frozen=True)
class Series:
    x: np.ndarray
    y: np.ndarray
    axis: str  # what x is: "step" or "epoch"


@dataclass(frozen=True)
class Page:
    jobs: list[JobView]
    has_more: bool


# The submitted values a history row shows, exports and searches.
PARAMS = ("learning_rate", "epochs", "batch_size", "dataset_path", "extra_args", "mixed_precision",
          "gradient_checkpointing", "checkpoint_every", "max_runtime_hours")


def search_text(name: str, owner: str, request: dict[str, Any], tags: list[str], note: str) -> str:
    """What text search matches: name, owner, script, every parameter as key=value, tags and note."""
    params = " ".join(f"{k}={request[k]}" for k in (*PARAMS, "template") if request.get(k) not in (None, ""))
    return " ".join([name, owner, str(request.get("script", "")), params, *tags, note]).lower()


def step_or_epoch(steps: np.ndarray, epochs: np.ndarray) -> tuple[np.ndarray, str]:
    """A series' x axis: the epoch when there is one value per epoch ("Epoch N ... Loss: x"), else the step."""
    if not np.isnan(epochs).any() and len(epochs) > 1 and (np.diff(epochs) > 0).all():
        return epochs, "epoch"
    return steps, "step"


def to_view(job: Job) -> JobView:
    return JobView(
        id=job.id,
        name=job.name,
        owner=job.owner,
        status=JobStatus(job.status),
        reason=job.reason,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        epoch=job.epoch,
        total_epochs=job.total_epochs,
        progress=job.progress,
        eta_seconds=job.eta_seconds,
        latest_metrics=job.latest_metrics or {},
        final_metrics=job.final_metrics or {},
        gpus=job.gpus,
        nodes=job.nodes,
        cost_per_hour=job.cost_per_hour,
        gpu_util=job.gpu_util,
        gpu_memory_mib=job.gpu_memory_mib,
        gpu_idle_since=job.gpu_idle_since,
        tags=list(job.tags or []),
        note=job.note or "",
        cost_total=job.cost,
        gpu_hours=job.gpu_hours,
        request=job.request,
        spec=job.spec,
        exit_code=job.exit_code,
    )


def set_status(s: Session, job: Job, status: JobStatus, message: str = "") -> None:
    """Every state change goes through here, so the events table is the job's full timeline."""
    if job.status == status and not message:
        return
    job.status = status.value
    job.status_group = GROUP_OF[status].value
    job.updated_at = utcnow()
    s.add(JobEvent(job_id=job.id, ts=job.updated_at, status=status.value, message=message))


class JobService:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], backend: Backend):
        self.settings = settings
        self.sessions = sessions
        self.backend = backend
        self.workspace = Workspace(settings)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions.begin() as s:
            yield s

    # Validation that needs settings --------------------------------------------------------------
    def limit_problems(self, data: dict[str, Any], user: User | None = None) -> dict[str, str]:
        """The admin's limits, checked on the raw values so they are reported with the form's other problems."""
        st = self.settings
        problems: dict[str, str] = {}

        def number(field: str) -> float | None:
            try:
                return float(data.get(field))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return None

        gpus, nodes, hours = number("gpus"), number("nodes"), number("max_runtime_hours")
        if gpus is not None and gpus > st.max_gpus_per_node:
            problems["gpus"] = f"at most {st.max_gpus_per_node} GPUs per node are allowed"
        max_nodes = min(st.max_nodes, self.backend.max_nodes)
        if nodes is not None and nodes > max_nodes:
            problems["nodes"] = (
                "multi-node jobs need the Kubernetes backend; this portal runs jobs on this machine"
                if self.backend.max_nodes == 1
                else f"at most {max_nodes} nodes are allowed"
            )
        if hours is not None and hours > st.max_runtime_hours:
            problems["max_runtime_hours"] = f"at most {st.max_runtime_hours:g} hours are allowed"
        script = data.get("script")
        if user is not None and isinstance(script, str) and script.endswith(".py"):
            try:
                self.workspace.resolve(user, script)
            except FileNotFoundError:
                problems["script"] = f"'{script}' is not in your workspace"
        return problems

    def validate(self, data: dict[str, Any], user: User | None = None) -> JobRequest:
        """Every problem with a submission at once, one sentence per field (the script's for `user`)."""
        limits = self.limit_problems(data, user)
        try:
            req = parse_request(data)
        except ValidationProblem as exc:
            raise ValidationProblem(limits | exc.problems) from None
        if limits:
            raise ValidationProblem(limits)
        return req

    # Use cases ---------------------------------------------------------------------------------
    def submit(
        self,
        user: User,
        data: dict[str, Any],
        upload: tuple[str, bytes] | None = None,
        parent_id: int | None = None,
    ) -> int:
        """Validate, record, then start. Returns the job id (also for a failed start: the row says why)."""
        if upload is not None:
            data = dict(data)
            data["script"] = self.workspace.save_upload(user, upload[0], upload[1])
        req = self.validate(data, user)
        script_source = self.workspace.resolve(user, req.script)
        now = utcnow()
        with self.session() as s:
            job = Job(
                submission_id=str(uuid.uuid4()),
                owner=user.name,
                name=req.name,
                status=JobStatus.SUBMITTING.value,
                status_group=StatusGroup.ACTIVE.value,
                backend=self.backend.name,
                request=req.model_dump(mode="json"),
                gpus=req.gpus,
                nodes=req.nodes,
                cost_per_hour=self.settings.cost_per_hour(req.gpus, req.nodes),
                created_at=now,
                updated_at=now,
                total_epochs=req.epochs,
                latest_metrics={},
                final_metrics={},
                parent_id=parent_id,
                search_text=search_text(req.name, user.name, req.model_dump(mode="json"), [], ""),
                template=req.template or None,
            )
            s.add(job)
            s.flush()
            submission_id = job.submission_id
            s.add(JobEvent(job_id=job.id, ts=now, status=job.status, message="Submitted"))
            s.add(
                JobLog(job_id=job.id, path=str(self.backend.log_path(job.id)), offset=0, lines=0,
                       parser_state={}, updated_at=now)
            )
            job_id = job.id
        # The row exists before the backend is asked, so a crash here leaves a visible job, never a ghost.
        try:
            snapshot = self._snapshot(job_id, script_source)
            result = self.backend.submit(JobSubmission(job_id, user.name, req, snapshot, submission_id))
        except Exception as exc:  # any failure to start is recorded on the job, never left half-done
            if not isinstance(exc, BackendError | OSError):
                exc = BackendError(f"Could not start the job: {type(exc).__name__}: {exc}")
            with self.session() as s:
                job = s.get_one(Job, job_id)
                job.reason = str(exc)
                job.finished_at = utcnow()
                set_status(s, job, JobStatus.SUBMIT_FAILED, str(exc))
            return job_id
        with self.session() as s:
            job = s.get_one(Job, job_id)
            job.spec = result.spec
            job.backend_ref = result.ref
            if job.status == JobStatus.SUBMITTING.value:
                set_status(s, job, result.status, "Accepted by the backend")
        return job_id

    def _snapshot(self, job_id: int, source: Path) -> Path:
        """The script as submitted, kept with the job on every backend: what a clone by someone else runs."""
        folder = self.settings.jobs_dir / str(job_id) / "script"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / source.name
        shutil.copyfile(source, target)
        return target

    def _values_for(self, user: User, job: JobView | Job) -> dict[str, Any]:
        """A job's values for a new job of `user`: someone else's script is not theirs to read in the workspace,
        so its snapshot is copied into their own folder and the new job runs that."""
        values = dict(job.request)
        if job.owner != user.name and self.workspace.multi_user:
            snapshot = self.settings.jobs_dir / str(job.id) / "script" / Path(str(values.get("script", ""))).name
            try:
                values["script"] = self.workspace.adopt(user, snapshot, job.id)
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound(f"The script that job {job.id} ran is no longer kept, so it cannot be re-run.") from None
        return values

    def _owned(self, s: Session, user: User, job_id: int) -> Job:
        job = s.get(Job, job_id) if 0 < job_id < 2**62 else None
        if job is None:
            raise NotFound(f"Job {job_id} was not found.")
        if not may_act(user, job.owner):
            raise NotFound(f"Job {job_id} was not found.")
        return job

    def stop(self, user: User, job_id: int) -> None:
        with self.session() as s:
            job = self._owned(s, user, job_id)
            if JobStatus(job.status) not in ACTIVE_STATUSES:
                raise Conflict(f"Job {job.name} has already finished ({job.status}).")
            if job.backend_ref is None:
                raise Conflict(f"Job {job.name} is still being started; try Stop again in a moment.")
            # Remembered on the job: a backend that deletes the job on stop must not call it "lost".
            ref = dict(job.backend_ref or {}) | {"stop_requested": True}
            job.backend_ref = ref
            s.add(JobEvent(job_id=job.id, ts=utcnow(), status=job.status, message=f"Stop requested by {user.name}"))
        # The sync loop records the final state once the process has actually ended.
        self.backend.stop(job_id, ref)

    def save_checkpoint(self, user: User, job_id: int) -> None:
        with self.session() as s:
            job = self._owned(s, user, job_id)
            if job.status != JobStatus.RUNNING.value:
                raise Conflict("Only a running job can save a checkpoint.")
            ref = dict(job.backend_ref or {})
            s.add(JobEvent(job_id=job.id, ts=utcnow(), status=job.status, message="Checkpoint requested"))
        self.backend.signal_checkpoint(job_id, ref)

    def delete(self, user: User, job_id: int) -> None:
        with self.session() as s:
            job = self._owned(s, user, job_id)
            ref = dict(job.backend_ref or {})
        self.backend.delete(job_id, ref)
        with self.session() as s:
            s.execute(delete(MetricPoint).where(MetricPoint.job_id == job_id))
            s.execute(delete(SeriesCache).where(SeriesCache.job_id == job_id))
            s.execute(delete(GpuSample).where(GpuSample.job_id == job_id))
            s.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
            s.execute(delete(JobLog).where(JobLog.job_id == job_id))
            s.execute(delete(Job).where(Job.id == job_id))

    def clone_values(self, user: User, job_id: int) -> dict[str, Any]:
        """The submitted values of a job, to prefill the Submit form."""
        return self._values_for(user, self.get(user, job_id))

    def retry(self, user: User, job_id: int) -> int:
        with self.session() as s:
            job = self._owned(s, user, job_id)
            if JobStatus(job.status) in ACTIVE_STATUSES:
                raise Conflict("The job is still running; stop it before retrying.")
            data = self._values_for(user, job)
        return self.submit(user, data, parent_id=job_id)

    # Queries -----------------------------------------------------------------------------------
    def get(self, user: User, job_id: int) -> JobView:
        """The job if this user may see it; otherwise "not found", so ids do not reveal others' jobs."""
        if not 0 < job_id < 2**62:  # an id from a URL; SQLite cannot even look up a bigger one
            raise NotFound(f"Job {job_id} was not found.")
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None or not may_see(self.settings, user, job.owner):
                raise NotFound(f"Job {job_id} was not found.")
            return to_view(job)

    def visible_owner(self, user: User, everyone: bool) -> str | None:
        """The owner filter of a listing: None (all jobs) only for "Everyone" and only if the user may see it."""
        if everyone and (user.reads_all or self.settings.show_others_jobs):
            return None
        return user.name

    def may_see_others(self, user: User) -> bool:
        return user.reads_all or self.settings.show_others_jobs

    def _filtered(self, stmt: Any, search: str, owner: str | None) -> Any:
        if owner:
            stmt = stmt.where(Job.owner == owner)
        if search.strip():
            stmt = stmt.where(matches(self.sessions.kw["bind"].dialect.name, search.strip()))
        return stmt

    def counts(self, search: str = "", owner: str | None = None) -> dict[StatusGroup, int]:
        stmt = self._filtered(select(Job.status_group, func.count()).group_by(Job.status_group), search, owner)
        with self.session() as s:
            rows = dict(s.execute(stmt).all())
        return {g: int(rows.get(g.value, 0)) for g in StatusGroup}

    def list_group(
        self, group: StatusGroup, limit: int, search: str = "", owner: str | None = None
    ) -> Page:
        stmt = self._filtered(select(Job).where(Job.status_group == group.value), search, owner)
        stmt = stmt.order_by(Job.id.desc()).limit(limit + 1)
        with self.session() as s:
            rows = list(s.scalars(stmt))
            views = [to_view(j) for j in rows[:limit]]
        return Page(views, has_more=len(rows) > limit)

    def list_jobs(
        self, limit: int = 50, offset: int = 0, search: str = "", owner: str | None = None,
        group: StatusGroup | None = None,
    ) -> list[JobView]:
        stmt = self._filtered(select(Job), search, owner)
        if group is not None:
            stmt = stmt.where(Job.status_group == group.value)
        stmt = stmt.order_by(Job.id.desc()).limit(limit).offset(offset)
        with self.session() as s:
            return [to_view(j) for j in s.scalars(stmt)]

    def events(self, job_id: int) -> list[tuple[Any, str, str]]:
        with self.session() as s:
            rows = s.execute(
                select(JobEvent.ts, JobEvent.status, JobEvent.message)
                .where(JobEvent.job_id == job_id)
                .order_by(JobEvent.id)
            ).all()
        return [tuple(r) for r in rows]

    def log_info(self, job_id: int) -> tuple[Path, int]:
        with self.session() as s:
            log = s.get(JobLog, job_id)
            if log is None:
                raise NotFound(f"Job {job_id} has no log.")
            return Path(log.path), log.lines

    def log_tail(self, job_id: int, max_lines: int = 500, rank: int = 0) -> list[str]:
        return self.log_view(job_id, max_lines, rank)[0]

    def log_view(self, job_id: int, max_lines: int = 500, rank: int = 0) -> tuple[list[str], int]:
        """The tail of one rank's log and the log's line count (kept for rank 0 only; 0 otherwise)."""
        path, lines = self.log_info(job_id)
        if rank:
            path, lines = self._rank_log(job_id, rank), 0
        return read_tail(path, max_lines=max_lines), lines

    def log_ranks(self, job_id: int) -> list[int]:
        return self.backend.log_ranks(job_id)

    def log_file(self, job_id: int, rank: int = 0) -> Path:
        """The archive of one rank's log (rank 0 is the job's main log)."""
        path, _ = self.log_info(job_id)
        return path if rank == 0 else self._rank_log(job_id, rank)

    def _rank_log(self, job_id: int, rank: int) -> Path:
        if rank not in self.backend.log_ranks(job_id):
            raise NotFound(f"Job {job_id} has no log for node {rank}.")
        return self.backend.log_path(job_id, rank)

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

    # Retention -----------------------------------------------------------------------------------
    def prune_logs(self, days: float, limit: int = 200) -> int:
        """Delete the archived logs of jobs that ended more than `days` ago; rows, metrics and charts stay."""
        cutoff = utcnow() - timedelta(days=days)
        with self.session() as s:
            rows = s.execute(
                select(JobLog).join(Job, Job.id == JobLog.job_id)
                .where(Job.finished_at < cutoff, JobLog.pruned_at.is_(None)).limit(limit)
            ).scalars().all()
            for jl in rows:
                for rank in self.backend.log_ranks(jl.job_id) or [0]:
                    self.backend.log_path(jl.job_id, rank).unlink(missing_ok=True)
                Path(jl.path).unlink(missing_ok=True)
                jl.pruned_at = utcnow()
        return len(rows)

    def log_pruned(self, job_id: int) -> bool:
        with self.session() as s:
            jl = s.get(JobLog, job_id)
            return jl is not None and jl.pruned_at is not None

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

    def output_files(self, job_id: int) -> list[OutputFile]:
        return list_files(self.backend.output_dir(job_id))

    def open_output_file(self, user: User, job_id: int, relative: str) -> tuple[int, str]:
        """A read descriptor of one file the job wrote, and its name; opened without following any link the
        job made (a link, hard link or FIFO is "no such file")."""
        job = self.get(user, job_id)
        if not may_download(user, job.owner):
            raise NotFound(f"No file '{relative}' in job {job_id}.")
        try:
            fd = self.open_output(job_id, relative)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            raise NotFound(f"No file '{relative}' in job {job_id}.") from None
        return fd, Path(relative).name

    def open_output(self, job_id: int, relative: str) -> int:
        """A read descriptor of root/relative below the job's output (no access check: callers check)."""
        out = self.backend.output_dir(job_id)
        # From the jobs folder: on the local backend the job could even replace its own job folder.
        return open_read(out.parent.parent, f"{out.parent.name}/{out.name}/{relative}")

    def open_log(self, job_id: int, rank: int = 0) -> int:
        """A read descriptor of one rank's log archive (FileNotFoundError if there is none, or a link)."""
        return open_job_file(self.log_file(job_id, rank))

    def scripts(self, user: User) -> list[str]:
        return self.workspace.scripts(user)

    def mark(self, job_id: int, **values: Any) -> None:
        """Set plain columns (used by the sync loop and tests)."""
        with self.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(**values))
