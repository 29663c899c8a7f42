"""The ONE background loop per process: backend state -> store, log bytes -> metrics. With more than one replica it
runs on the holder of the Lease only (services/leader.py); the others just follow.

Pages never watch the backend themselves; they read what this loop wrote.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from services import local_queue
from services.backends.base import ActiveJob, Observation
from services.budgets import alert_thresholds, spent
from services.costs import PriceBook, accrue, load_book, month_of, team_of
from services.gpu_telemetry import process_tree
from services.jobs import JobService, set_status, to_view
from services.leader import Leadership, SoleReplica
from services.logs import read_from
from services.metrics import MetricExtractor, ParserState, eta_seconds
from services.models import ACTIVE_STATUSES, JobStatus, Role, User
from services.notifications_alerts import scan as scan_alerts
from services.resource_telemetry import ResourceSampler, cluster_pods, runner_pids, running_jobs
from services.store import maintenance
from services.store.orm import Job, JobEvent, JobLog, MetricPoint, SeriesCache, utcnow
from services.sync_pending import PendingWork

log = logging.getLogger(__name__)
PRUNE_EVERY_SECONDS = 3600.0
FINAL_LOG_WAIT_SECONDS = 60.0  # how long a finished job waits for the last of its log that could not be read
FOLLOW_EVERY_SECONDS = 2.0  # a follower's reads of Kueue's places in line (the leader's pace)
ACCRUE_EVERY_SECONDS = 5.0  # a running job's cost so far is written this often (each write moves its totals)
READ_LIMIT = 8 * 1024 * 1024  # bytes of log read per job per tick: one huge burst cannot stall the loop


class NotLeading(Exception):
    """The lease was lost in the middle of a tick."""


class SyncLoop(PendingWork):
    def __init__(self, service: JobService, interval: float, telemetry: Any = None):
        self.service = service
        self.interval = interval
        self.telemetry = telemetry
        self.gpu_error: str | None = None
        # CPU and memory of every running job, on the GPU samples' cadence (a process-table pass or two queries).
        self.resources = ResourceSampler(service.settings, service.backend.name, telemetry)
        self._last_prune = 0.0
        self._last_statistics = time.time()  # the start-up migration has just refreshed them
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self.started_at = utcnow()
        # time.time() at the end of the last pass without an error: what the sync lag is measured from.
        self.last_tick_at: float | None = None
        self._log_waits: dict[int, float] = {}  # job id -> when reading its logs first failed
        self.last_error: str | None = None
        self._lock = threading.Lock()
        # Threads the loop owns besides its own (the notification sender): run while this replica leads.
        self.workers: list[Any] = []
        self.leadership: Leadership = SoleReplica()  # with replicas, a Lease (services/leader.py)
        self._leading = False
        self._followed = 0.0  # when this replica, following, last read Kueue's view
        self._accrued: dict[int, float] = {}  # job id -> when its cost was last accrued (time.monotonic())
        self._over_budget: set[int] = set()  # running jobs to stop: their budget is spent
        self._book: PriceBook | None = None

    # Thread control -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self.leadership.start()
        self.leads()  # a sole replica starts the backend and the workers here, before the first request
        self._thread = threading.Thread(target=self._run, name="portal-sync", daemon=True)
        self._thread.start()
        if self.telemetry is not None or self.resources.available:
            # Its own thread: a slow or unreachable Prometheus must not hold up job states and logs.
            threading.Thread(target=self._run_gpu, name="portal-gpu", daemon=True).start()

    def leads(self) -> bool:
        """Whether this replica leads now; starts or stops what only the leader runs when that changed."""
        held = self.leadership.held()
        if held and not self._leading:
            # What this process remembers of the jobs' progress may be stale: another replica led meanwhile.
            self._log_waits.clear()
            for memo in ("_cursors", "_last_pull", "_finishing"):  # the Kubernetes backend's log cursors
                getattr(self.service.backend, memo, {}).clear()
            self.service.backend.start()
            for worker in self.workers:
                worker.start()  # one that fails (the database away) is started again next time, with the others
            self._leading = True
        elif not held and self._leading:
            self._leading = False
            for worker in self.workers:
                worker.stop()
        return held

    def follow(self) -> None:
        """A follower's pages show Kueue's places in line too: it reads them itself (reads only, writes nothing)."""
        svc = self.service
        kueue = getattr(svc.backend, "kueue", None)
        if kueue is None or time.monotonic() - self._followed < FOLLOW_EVERY_SECONDS:
            return
        self._followed = time.monotonic()
        with svc.session() as s:
            refs = s.scalars(select(Job.backend_ref).where(
                Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]), Job.backend == svc.backend.name
            )).all()
        try:
            kueue.refresh(any((ref or {}).get("queue") for ref in refs))
        except Exception as exc:  # the places are kept from the last read, as on the leader
            log.info("could not read Kueue's workloads: %s", exc)

    def fence(self) -> None:
        """Before each of a tick's writes: a replica that lost the lease applies nothing more of what it observed."""
        if not self.leadership.held():
            raise NotLeading

    def _run_gpu(self) -> None:
        while not self._stop.wait(self.service.settings.gpu_sample_seconds):
            if not self.leadership.held():
                continue
            for what, sample in (("GPU", self.sample_gpus), ("CPU and memory", self.sample_resources)):
                try:
                    sample()
                except Exception:
                    log.exception("%s sampling failed", what)

    def sample_resources(self) -> None:
        self.resources.sample(self.service)
        if self.resources.error:
            log.warning("CPU and memory telemetry: %s", self.resources.error)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for worker in self.workers:
            worker.stop(timeout)
        if self._thread:
            self._thread.join(timeout)
        self._leading = False
        self.leadership.stop()  # after the last write: the lease is handed back to another replica

    @property
    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def _run(self) -> None:
        backoff = self.interval
        while not self._stop.is_set():
            try:
                if self.leads():
                    self.tick()
                else:
                    self.follow()
                self.last_error = None
                backoff = self.interval
            except NotLeading:
                log.warning("this replica lost the lease during a sync tick: the rest of it was not applied")
            except Exception as exc:  # the loop must survive a locked database or a backend hiccup
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("sync tick failed")
                backoff = min(backoff * 2, 30.0)
            self._stop.wait(backoff)

    # One pass -----------------------------------------------------------------------------------
    def tick(self) -> None:
        with self._lock:
            svc = self.service
            self._book = None  # the price book, read once per tick by the first accrual that needs it
            with svc.session() as s:
                rows = s.execute(
                    select(Job.id, Job.backend_ref, Job.request).where(
                        Job.status.in_([st.value for st in ACTIVE_STATUSES]), Job.backend == svc.backend.name
                    )
                ).all()
            active = [
                ActiveJob(r.id, dict(r.backend_ref or {}), float(r.request.get("max_runtime_hours", 8)))
                for r in rows
                if r.backend_ref is not None
            ]
            self.fence()
            self.resume_submissions({r.id for r in rows if r.backend_ref is None})
            self.carry_out_stops([job for job in active if job.ref.get("stop_pending")])
            svc.backend.remove_ghosts(self.recent_failed_submissions())
            # Also with nothing active: the local backend reaps its runners there (the last one to end included).
            observed = svc.backend.observe(active)
            for job in active:
                self.fence()  # what was observed is applied whole per job, never after the lease is lost
                # Logs first: a job's final metrics must be in before it is shown as finished.
                obs = observed.get(job.id)
                finished = obs is not None and obs.status not in ACTIVE_STATUSES
                try:
                    svc.backend.pull_logs(job)
                    self._log_waits.pop(job.id, None)
                except Exception as exc:  # logs are retried next tick; a state change still goes in
                    log.warning("could not read the logs of job %s: %s", job.id, exc)
                    # Except the end: a finished job leaves with its whole log, so it waits for it a while (not
                    # forever: a node that is gone takes its pods' logs with it).
                    first = self._log_waits.setdefault(job.id, time.monotonic())
                    if finished and time.monotonic() - first < FINAL_LOG_WAIT_SECONDS:
                        obs, finished = None, False
                if finished:
                    self._log_waits.pop(job.id, None)
                try:
                    svc.note_log_growth(job.id, final=finished)  # received times, for the log pane
                except Exception:
                    log.exception("could not note when the log of job %s grew", job.id)
                try:
                    # A finished job is read to its end: it leaves the active list after this tick.
                    while self.ingest_logs(job.id, final=finished) and finished:
                        pass
                except Exception:  # one job's bad log must not stall every other job
                    log.exception("could not extract metrics of job %s", job.id)
                if obs is not None:
                    self.fence()  # the log reads above can outlast the lease (10 s timeouts on a cluster)
                    self.apply(job.id, obs)
            self.fence()
            self.stop_over_budget()
            try:
                local_queue.admit(svc)  # in the same tick a job ended: its GPUs are free at once
            except Exception:
                log.exception("could not start the queue's next jobs")
            if svc.settings.log_retention_days and time.time() - self._last_prune > PRUNE_EVERY_SECONDS:
                self._last_prune = time.time()
                try:
                    svc.prune_logs(svc.settings.log_retention_days)
                except Exception:
                    log.exception("could not prune old logs")
            try:
                svc.refresh_series()  # big charts are rebuilt here, never during a page render
            except Exception:
                log.exception("could not refresh the chart cache")
            self.refresh_statistics()
            self.ticks += 1
            self.last_tick_at = time.time()

    def refresh_statistics(self, now: float | None = None) -> list[str]:
        """The planner's statistics of the tables that grew or shrank a lot, every CHECK_EVERY_SECONDS."""
        now = time.time() if now is None else now
        if now - self._last_statistics < maintenance.CHECK_EVERY_SECONDS:
            return []
        self._last_statistics = now
        try:
            return maintenance.refresh_statistics(self.service.sessions.kw["bind"])
        except Exception:  # a locked database: tried again at the next check
            log.exception("could not refresh the planner's statistics")
            return []

    def sample_gpus(self) -> None:
        """One GPU reading for every running job that holds GPUs: a constant number of queries per tick."""
        svc = self.service
        rows = running_jobs(svc, gpus_only=True) if self.telemetry is not None else []
        if not rows:
            return
        try:
            if svc.backend.name == "kubernetes":
                readings = self.telemetry.read(*cluster_pods(rows))
            else:
                pids = runner_pids(rows)
                readings = self.telemetry.read({j: process_tree(pid) if pid else [] for j, pid in pids.items()})
        except Exception as exc:  # Prometheus down or refusing: said on the job page, retried next time
            self.gpu_error = str(exc)
            log.warning("GPU telemetry: %s", exc)
            return
        self.gpu_error = None
        svc.record_gpu({j: (g.util_percent, g.memory_used_mib) for j, g in readings.items()}, time.time(),
                       svc.settings.gpu_idle_percent)

    def apply(self, job_id: int, obs: Observation) -> None:
        with self.service.session() as s:
            job = s.get(Job, job_id, with_for_update=True)  # its status stays the one read here till commit
            if job is None or JobStatus(job.status) not in ACTIVE_STATUSES:
                return  # ended already (by another replica, or a stop): a stale observation never reopens it
            if obs.started_at and job.started_at is None:
                job.started_at = obs.started_at
            if obs.status is JobStatus.FAILED and (obs.reason or "").startswith("Lost") and (
                job.backend_ref or {}
            ).get("stop_requested"):
                obs = Observation(JobStatus.STOPPED, "Stopped by user", obs.exit_code, obs.started_at,
                                  obs.finished_at)
            if obs.status is JobStatus.RUNNING and job.started_at is not None:
                self._accrue(s, job, obs)
            if obs.status.value == job.status:
                if obs.reason != job.reason:  # e.g. Queued: "Waiting for 4 GPUs", Running: "2/2 pods running"
                    job.reason = obs.reason
                    s.add(JobEvent(job_id=job.id, ts=utcnow(), status=job.status, message=obs.reason or ""))
                return
            if obs.status not in ACTIVE_STATUSES:
                if obs.started_at and job.status != JobStatus.RUNNING.value:
                    # Started and ended between two ticks: the timeline still shows when it ran.
                    s.add(JobEvent(job_id=job.id, ts=obs.started_at, status=JobStatus.RUNNING.value, message=""))
                job.finished_at = obs.finished_at or utcnow()
                job.exit_code = obs.exit_code
                job.reason = obs.reason
                job.eta_seconds = None
                job.final_metrics = dict(job.latest_metrics or {})
                if obs.status is JobStatus.SUCCEEDED:
                    job.progress = 1.0
                # The history sorts and sums these without reading every row's JSON.
                loss = to_view(job).loss
                job.final_loss = loss if loss is not None and math.isfinite(loss) else None
                seconds = max(0.0, (job.finished_at - job.started_at).total_seconds()) if job.started_at else None
                job.runtime_seconds = seconds
                self._accrue(s, job, obs, final=True)  # its cost and GPU-hours, frozen
            set_status(s, job, obs.status, obs.reason or "")

    def _accrue(self, s: Session, job: Job, obs: Observation, final: bool = False) -> None:
        """The job's cost so far (live on its page and card), every ACCRUE_EVERY_SECONDS; at its end for good; then
        the budget alerts that usage crossed."""
        if not final and time.monotonic() - self._accrued.get(job.id, 0.0) < ACCRUE_EVERY_SECONDS:
            return
        self._accrued[job.id] = time.monotonic()
        if final:
            self._accrued.pop(job.id, None)
        settings = self.service.settings
        self._book = self._book or load_book(s, settings)  # once per tick: tick() forgets it
        months = accrue(s, job, settings, final=final, pods=obs.extra.get("pods"), book=self._book)
        team = team_of(s, job)
        alert_thresholds(s, settings, job.owner, team, months)
        if not final and settings.budget_stops_running and spent(s, job.owner, team, month_of(utcnow())):
            self._over_budget.add(job.id)  # stopped after this transaction, by stop_over_budget

    def stop_over_budget(self) -> None:
        """The running jobs whose budget is spent, when the admin chose so (budget_stops_running)."""
        ids, self._over_budget = self._over_budget, set()
        for job_id in sorted(ids):
            try:
                self.service.stop(User("portal", Role.ADMIN), job_id)
            except Exception:  # ended meanwhile, or the backend away: asked again at its next accrual
                log.exception("could not stop job %s over its budget", job_id)

    def ingest_logs(self, job_id: int, final: bool = False) -> int:
        """Read new log bytes from the stored cursor; extract metrics; advance the cursor. Returns bytes read."""
        with self.service.session() as s:
            jl = s.get(JobLog, job_id)
            if jl is None:
                return 0
            path, offset, state_json = Path(jl.path), jl.offset, jl.parser_state
        data = read_from(path, offset, READ_LIMIT)
        last = final and len(data) < READ_LIMIT  # the end of a finished job's log: its last line counts as it is
        if not final or len(data) == READ_LIMIT:
            # Only whole lines (a half-written one, or one cut by the read limit, is read again next time),
            # except at the very end of a finished job's log.
            cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
            if cut >= 0:
                data = data[: cut + 1]
            elif len(data) < READ_LIMIT:
                data = b""  # an unfinished line; a single line longer than the limit is taken as it is
        # At the end of a finished job's log the extractor has a last word even without new bytes (what it held
        # for a step that never came), once.
        if not data and not (last and any((state_json or {}).get(k) for k in ("held", "deferred", "pending"))):
            return 0
        now = time.time()
        extractor = MetricExtractor(ParserState.from_json(state_json))
        points = extractor.feed(data, now, final=last)
        st = extractor.state
        with self.service.session() as s:
            job = s.get(Job, job_id)
            jl = s.get(JobLog, job_id)
            if job is None or jl is None or jl.offset != offset:
                return 0  # deleted meanwhile, or another reader advanced the cursor
            if points:
                s.execute(
                    insert(MetricPoint),
                    [
                        {"job_id": job_id, "name": n, "step": x, "epoch": ep, "value": v, "ts": now, "rank": r}
                        for (n, x, ep, v, r) in points
                    ],
                )
                names = {p[0] for p in points}
                s.execute(update(SeriesCache).where(SeriesCache.job_id == job_id, SeriesCache.name.in_(names))
                          .values(dirty=True))
                known = set(s.scalars(select(SeriesCache.name).where(SeriesCache.job_id == job_id)))
                # New series get an empty, dirty chart entry that refresh_series fills at the end of this tick.
                s.add_all(SeriesCache(job_id=job_id, name=n, points=0, axis="step", x=[], y=[], dirty=True,
                                      updated_at=0.0) for n in names - known if len(n) <= 80)
            jl.offset = offset + len(data)
            jl.lines += data.count(b"\n")
            jl.parser_state = st.to_json()
            jl.updated_at = utcnow()
            planned = (job.request or {}).get("epochs")
            if st.epoch is not None:
                job.epoch = int(st.epoch)
            if st.total_epochs:
                job.total_epochs = st.total_epochs
            job.step = st.step
            job.total_steps = st.total_steps
            job.progress = st.progress(planned)
            job.eta_seconds = eta_seconds(st.marks, now)
            job.latest_metrics = dict(job.latest_metrics or {}) | st.latest  # with the event files' (tb_scalars)
            job.updated_at = utcnow()
            # In this transaction: an alert is recorded with the bytes that caused it, once.
            scan_alerts(s, job, data, points)
        return len(data)

