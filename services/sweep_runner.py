"""The sweep driver: a worker of the sync loop (leader only, with replicas) that runs every open sweep with
Optuna's ask-and-tell interface.

Each tick, per sweep: the objective each running trial printed since the last tick is reported to Optuna, and a
trial the pruner gives up on is stopped ("Pruned: ..."); trials whose job ended are told to Optuna (the final or
best value of the objective), failed ones retried as the spec says; then new trials are asked for up to
`parallel` at once and never beyond `budget`; and the sweep ends, saying why, when its budget is spent, too many
trials failed, or someone stopped it.

No trial is run twice: a trial's job carries its sweep and trial number from the very insert that creates it (the
same transaction), and an Optuna trial without a job (a portal killed between the two) is given its job on the
next tick rather than replaced by a new trial.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.backends.base import BackendError
from services.config import Settings
from services.jobs import JobService
from services.models import ACTIVE_STATUSES, Conflict, JobStatus, NotFound, User, ValidationProblem
from services.store.orm import Job, JobEvent, MetricPoint, utcnow
from services.store.sweep_tables import Sweep
from services.sweep_spec import SweepSpec, readable_spec
from services.sweep_study import JOB, OUTCOME, REASON, StudyTrial, distributions, make_storage, open_study, study_trials
from services.sweeps import SweepService, best_of, jobs_by_trial, trials_of

log = logging.getLogger(__name__)
GIVE_UP_AFTER_FAILED_TICKS = 30

# The (sweep id, trial number) of the job the runner is submitting in this thread, written by the job's insert.
_submitting: ContextVar[tuple[int, int] | None] = ContextVar("sweep_trial_of_submitted_job", default=None)


@event.listens_for(Job, "before_insert")
def _link_trial(_mapper: Any, _connection: Any, job: Job) -> None:
    link = _submitting.get()
    if link is not None and job.sweep_id is None:
        job.sweep_id, job.sweep_trial = link


@contextmanager
def trial_of_next_job(sweep_id: int, number: int) -> Iterator[None]:
    token = _submitting.set((sweep_id, number))
    try:
        yield
    finally:
        _submitting.reset(token)


def tell(study: optuna.Study, number: int, value: float | None = None, state: TrialState = TrialState.COMPLETE) -> None:
    try:
        study.tell(number, value, state=state)
    except RuntimeError as exc:  # the grid sampler calls Study.stop() once every point is done (after storing)
        if "Study.stop" not in str(exc):
            raise


def _fmt(value: float) -> str:
    return f"{value:.4g}"


class SweepRunner:
    def __init__(self, sweeps: SweepService, interval: float = 1.0, leads: Callable[[], bool] = lambda: True):
        self.sweeps = sweeps
        # With replicas, whether this one still holds the Lease: checked before each sweep's writes, so a replica
        # that lost it mid-tick starts no trial the new leader would start too.
        self.leads = leads
        self.jobs = sweeps.jobs
        self.sessions = sweeps.sessions
        self.interval = interval
        self._storage: optuna.storages.RDBStorage | None = None
        self._studies: dict[int, optuna.Study] = {}
        self._failures: dict[int, int] = {}  # sweep id -> ticks in a row that failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    # Thread control (as the sync loop's other workers) ------------------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._studies.clear()  # another replica may have led meanwhile: its samplers' state is not ours
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="portal-sweeps", daemon=True)
        self._thread.start()

    @classmethod
    def of(cls, settings: Settings, sessions: sessionmaker[Session], jobs: JobService, sync: Any) -> SweepRunner:
        """The runner and its service (`runner.sweeps`), as the portal builds them, fenced by the sync loop's lease."""
        return cls(SweepService(settings, sessions, jobs), settings.sync_interval_seconds,
                   leads=lambda: sync.leadership.held())

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval)

    @property
    def storage(self) -> optuna.storages.RDBStorage:
        if self._storage is None:
            self._storage = make_storage(self.sweeps.settings)
        return self._storage

    def tick(self) -> None:
        with self._lock:
            with self.sessions.begin() as s:
                open_ids = list(s.scalars(select(Sweep.id).where(Sweep.state.in_(("running", "stopping")))
                                          .order_by(Sweep.id)))
            errors = []
            for sweep_id in open_ids:
                if self._stop.is_set() or not self.leads():
                    break
                try:
                    self.advance(sweep_id)
                    self._failures.pop(sweep_id, None)
                except Exception as exc:  # one sweep's trouble must not hold up the others
                    log.exception("sweep %s: the tick failed", sweep_id)
                    errors.append(f"sweep {sweep_id}: {type(exc).__name__}: {exc}")
                    self._give_up_after_failures(sweep_id, exc)
            self.last_error = "; ".join(errors) or None

    def _give_up_after_failures(self, sweep_id: int, exc: Exception) -> None:
        """A sweep that fails tick after tick (a database that refuses it, a spec no longer valid) ends, saying why,
        instead of stalling silently; a passing hiccup (a locked database) is retried."""
        self._failures[sweep_id] = self._failures.get(sweep_id, 0) + 1
        if self._failures[sweep_id] < GIVE_UP_AFTER_FAILED_TICKS:
            return
        self._failures.pop(sweep_id, None)
        try:
            self._finish(sweep_id, "failed", f"The sweep could not go on: {type(exc).__name__}: {exc}"[:2000])
        except Exception:
            log.exception("sweep %s: could not be marked failed", sweep_id)

    # One sweep ----------------------------------------------------------------------------------
    def _study(self, row: Sweep, spec: SweepSpec, started: int) -> optuna.Study:
        study = self._studies.get(row.id)
        if study is None:
            # Seeded per sweep, and for random draws by how far it got: a resumed sweep does not draw its first
            # points again. A grid's seed shuffles its points, and trial n runs point n: that order must not change.
            seed = row.id * 7919 + (0 if spec.method == "grid" else started)
            study = open_study(self.storage, row.study_name, spec, seed=seed)
            self._studies[row.id] = study
        return study

    def advance(self, sweep_id: int) -> None:
        with self.sessions.begin() as s:
            row = s.get_one(Sweep, sweep_id)
            trials = study_trials(s, row.study_name)
            jobs = jobs_by_trial(s, sweep_id)
        # A spec that no longer validates will not on the next tick either: its running trials stop, then it fails.
        spec, problem = readable_spec(row.spec, row.name)
        if problem and row.state == "running":
            self._set_state(sweep_id, "stopping", problem)
        study = self._study(row, spec, len(trials))
        user = User(name=row.owner, groups=tuple(row.owner_groups or ()))
        stopping = row.state == "stopping" or problem is not None
        for t in trials:
            self._follow(row, spec, study, user, t, jobs.get(t.number, []), stopping)
        with self.sessions.begin() as s:
            trials = study_trials(s, row.study_name)
            busy = _busy(trials, jobs_by_trial(s, sweep_id))
        failed = [t for t in trials if t.failed]
        if not stopping and len(failed) >= spec.max_failed:
            last = failed[-1].attrs.get(REASON) or "it failed"
            stopping = self._set_state(sweep_id, "stopping", f"Stopped after {len(failed)} failed trials (the limit "
                                       f"is {spec.max_failed}); the last, trial {failed[-1].number}: {last}")
            if busy:
                return  # its running trials are stopped next tick
        if stopping:
            if not busy:
                self._finish(sweep_id, "failed" if problem or len(failed) >= spec.max_failed else "stopped", problem)
            return
        while len(trials) < spec.budget and busy < spec.parallel and self.leads():
            trial = study.ask(distributions(spec))
            self._submit(row, spec, user, trial.number, trial.params)
            trials.append(StudyTrial(trial._trial_id, trial.number, "RUNNING"))
            busy += 1
        if len(trials) >= spec.budget and not busy:
            self._finish(sweep_id, "done", self._summary(sweep_id, spec), budget=spec.budget)

    def _follow(self, row: Sweep, spec: SweepSpec, study: optuna.Study, user: User, t: StudyTrial,
                jobs: list[Job], stopping: bool) -> None:
        """Bring one trial forward: its job's news to Optuna, Optuna's verdict to its job."""
        last = jobs[-1] if jobs else None
        status = JobStatus(last.status) if last is not None else None
        if t.state != "RUNNING":
            if last is not None and status in ACTIVE_STATUSES:
                self._stop_job(user, last)  # pruned (or the sweep stopped) and the job not yet gone
            elif last is not None and t.state == "PRUNED" and not (last.reason or "").startswith("Pruned"):
                self._say(last.id, t.attrs.get(REASON) or "Pruned")
            return
        if last is None:
            if stopping:
                self._tell_fail(study, t, "stopped", "The sweep was stopped before this trial started.")
            elif t.attrs.get(JOB):
                self._tell_fail(study, t, "stopped", f"Its job {t.attrs[JOB]} was deleted.")
            elif self.leads():  # asked for, then the portal stopped before its job was written: the job now
                self._submit(row, spec, user, t.number, self._params_of(study, spec, t))
            return
        if status in ACTIVE_STATUSES:
            if stopping:
                self._stop_job(user, last)
            else:
                self._report(study, spec, user, t, last)
            return
        if status is JobStatus.SUCCEEDED:
            value = self._objective(spec, last)
            if value is None:
                self._tell_fail(study, t, "failed", f"The job never reported '{spec.objective}' (a number).")
            else:
                tell(study, t.number, value)
            return
        if status is JobStatus.STOPPED:
            self._tell_fail(study, t, "stopped", last.reason or "Stopped")
            return
        if len(jobs) <= spec.retries and not stopping:
            if not self.leads():  # the lease lost since the tick began: the next leader retries it, once
                return
            try:
                with trial_of_next_job(row.id, t.number):
                    self.jobs.retry(user, last.id)
                return
            except (ValidationProblem, NotFound, Conflict) as exc:
                reason = f"{last.reason or 'Failed'}; it could not be retried: {exc}"
        else:
            reason = last.reason or f"Failed ({last.status})"
            if len(jobs) > 1:
                reason = f"{reason} (after {len(jobs)} attempts)"
        self._tell_fail(study, t, "failed", reason)

    @staticmethod
    def _params_of(study: optuna.Study, spec: SweepSpec, t: StudyTrial) -> dict[str, Any]:
        """A trial's parameters. ask() writes the trial, then (a grid) its point, then each parameter, each on its
        own: a portal stopped in between left some undrawn, and its job would have run the form's defaults. They are
        drawn now, as ask() would have: the grid's point for this trial number, else a sample."""
        wanted = distributions(spec)
        if all(name in t.params for name in wanted):
            return dict(t.params)
        study.sampler.before_trial(study, study._storage.get_trial(t.trial_id))  # a grid: its point, if not set
        trial = optuna.trial.Trial(study, t.trial_id)
        # Trial has no public way to draw with a distribution object (ask() itself uses this one).
        return {name: trial._suggest(name, dist) for name, dist in wanted.items()}

    def _submit(self, row: Sweep, spec: SweepSpec, user: User, number: int, params: dict[str, Any]) -> None:
        fixed = {n: p.value for n, p in spec.params.items() if p.kind == "fixed"}
        data = spec.trial_request(fixed | params).model_dump(mode="json") | {"name": f"{spec.name}-t{number}"}
        try:
            with trial_of_next_job(row.id, number):
                job_id = self.jobs.submit(user, data)
            # Only to tell a deleted job from one never written (the link itself is on the job, from its insert).
            self.storage.set_trial_user_attr(self._trial_id(row, number), JOB, job_id)
        except (ValidationProblem, ValueError) as exc:  # e.g. the script was removed from the workspace
            self.storage.set_trial_user_attr(self._trial_id(row, number), OUTCOME, "failed")
            self.storage.set_trial_user_attr(self._trial_id(row, number), REASON, f"Could not be submitted: {exc}")
            tell(self._studies[row.id], number, state=TrialState.FAIL)

    def _trial_id(self, row: Sweep, number: int) -> int:
        return self._studies[row.id]._storage.get_trial_id_from_study_id_trial_number(
            self._studies[row.id]._study_id, number)

    def _tell_fail(self, study: optuna.Study, t: StudyTrial, outcome: str, reason: str) -> None:
        study._storage.set_trial_user_attr(t.trial_id, OUTCOME, outcome)
        study._storage.set_trial_user_attr(t.trial_id, REASON, reason)
        tell(study, t.number, state=TrialState.FAIL)

    def _objective(self, spec: SweepSpec, job: Job) -> float | None:
        if spec.aggregate == "final":
            value = (job.final_metrics or {}).get(spec.objective)
            return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
        best = func.min if spec.direction == "minimize" else func.max
        with self.sessions.begin() as s:
            value = s.scalar(select(best(MetricPoint.value)).where(
                MetricPoint.job_id == job.id, MetricPoint.name == spec.objective))
        return float(value) if value is not None and math.isfinite(value) else None

    def _report(self, study: optuna.Study, spec: SweepSpec, user: User, t: StudyTrial, job: Job) -> None:
        """The objective's new points, each at its step, to Optuna; and the pruner's verdict."""
        after = max(t.intermediate, default=-1)
        with self.sessions.begin() as s:
            points = s.execute(select(MetricPoint.step, MetricPoint.value).where(
                MetricPoint.job_id == job.id, MetricPoint.name == spec.objective, MetricPoint.step > after,
                (MetricPoint.rank.is_(None)) | (MetricPoint.rank == 0)).order_by(MetricPoint.step)).all()
        points = [(int(st), float(v)) for st, v in points if math.isfinite(v)]
        if not points or spec.early_stopping == "none":
            for step, value in points:
                study._storage.set_trial_intermediate_value(t.trial_id, step, value)
            return
        trial = optuna.trial.Trial(study, t.trial_id)
        for step, value in dict(points).items():
            trial.report(value, step)
        if not trial.should_prune():
            return
        step, value = points[-1]
        rule = "median" if spec.early_stopping == "median" else "successive-halving rung"
        reason = (f"Pruned: {spec.objective} {_fmt(value)} at step {step} was worse than the other trials' {rule} "
                  "at the same step.")
        study._storage.set_trial_user_attr(t.trial_id, REASON, reason)
        tell(study, t.number, state=TrialState.PRUNED)
        self._stop_job(user, job)

    def _stop_job(self, user: User, job: Job) -> None:
        if (job.backend_ref or {}).get("stop_requested"):
            return
        try:
            self.jobs.stop(user, job.id)
        except Conflict:
            pass  # still being started: asked again next tick
        except (NotFound, BackendError) as exc:
            log.warning("sweep trial job %s could not be stopped: %s", job.id, exc)

    def _say(self, job_id: int, reason: str) -> None:
        """A pruned trial's job ends Stopped; its reason says why the sweep stopped it."""
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is not None and job.status == JobStatus.STOPPED.value:
                job.reason = reason
                s.add(JobEvent(job_id=job_id, ts=utcnow(), status=job.status, message=reason))

    def _set_state(self, sweep_id: int, state: str, reason: str) -> bool:
        with self.sessions.begin() as s:
            row = s.get_one(Sweep, sweep_id)
            row.state, row.stop_reason = state, reason
        return state == "stopping"

    def _finish(self, sweep_id: int, state: str, reason: str | None, budget: int | None = None) -> None:
        """`budget`: the one this tick saw spent; extended meanwhile, the sweep goes on instead."""
        with self.sessions.begin() as s:
            row = s.get_one(Sweep, sweep_id)
            if row.state not in ("running", "stopping") or (budget is not None and row.spec.get("budget") != budget):
                return
            row.state, row.ended_at = state, utcnow()
            if reason is not None or row.stop_reason is None:
                row.stop_reason = reason or "Stopped."
        self._studies.pop(sweep_id, None)

    def _summary(self, sweep_id: int, spec: SweepSpec) -> str:
        with self.sessions.begin() as s:
            trials = trials_of(s, s.get_one(Sweep, sweep_id))
        best = best_of(trials, spec)
        ran = f"All {spec.budget} trial{'s' if spec.budget != 1 else ''} ran"
        if best is None:
            return f"{ran}; none reported {spec.objective}."
        return f"{ran}; the best is trial {best.number} ({spec.objective} {_fmt(best.value or 0.0)})."


def _busy(trials: list[StudyTrial], jobs: dict[int, list[Job]]) -> int:
    """Trials that hold (or are about to hold) a running job: Optuna's running ones, and pruned or ended ones whose
    job is still stopping."""
    active = {st.value for st in ACTIVE_STATUSES}
    return sum(1 for t in trials if t.state == "RUNNING" or any(j.status in active for j in jobs.get(t.number, [])))
