"""Sweeps (issue 19): a hyperparameter search whose trials are ordinary jobs.

`SweepService` is what pages, the API and the client use: create a sweep from a `SweepSpec`, read it with its
progress and best trial, list its trials, stop it, extend it. The search itself (Optuna ask-and-tell, early
stopping, retries, the budget) is driven by `services.sweep_runner.SweepRunner`, a worker of the sync loop.
Visibility follows the jobs' rules: whoever may see the owner's jobs sees their sweeps; the owner and admins act.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, load_only, sessionmaker

from services.auth import may_act
from services.budgets import submit_check
from services.config import Settings
from services.costs import hourly_rate
from services.jobs import JobService
from services.models import Conflict, JobStatus, NotFound, User, ValidationProblem
from services.store.orm import Job, utcnow
from services.store.sweep_tables import Sweep
from services.sweep_importance import param_importances
from services.sweep_spec import MAX_TRIALS, SweepSpec, Value, readable_spec
from services.sweep_study import OUTCOME, REASON, StudyTrial, studies_trials, study_states
from services.teams import TeamService
from services.validation import validation_problems

TrialState = Literal["waiting", "running", "complete", "pruned", "failed", "stopped"]
OPEN = ("running", "stopping")  # the sweep states its runner still carries on


@dataclass(frozen=True)
class TrialView:
    """One trial: a parameter set, the job(s) that ran it (a retry is a second job of the same trial)."""

    number: int
    params: dict[str, Value]
    state: TrialState
    value: float | None  # the objective (final or best, as the sweep says); None until known
    job_id: int | None  # the latest job of this trial (None: not submitted yet)
    job_ids: list[int] = field(default_factory=list)
    job_status: str | None = None
    reason: str | None = None  # the job's, or why the trial was pruned
    intermediate: dict[int, float] = field(default_factory=dict)  # the objective by step, as reported to Optuna

    @property
    def attempts(self) -> int:
        return len(self.job_ids)


@dataclass(frozen=True)
class SweepProgress:
    done: int  # complete
    running: int
    pruned: int
    failed: int
    left: int  # of the budget, not started yet
    stopped: int = 0


def count_progress(states: Iterable[TrialState], budget: int, open_: bool) -> SweepProgress:
    """A sweep's counts from its trials' states; `left` is what an open (running) sweep has still to start."""
    found = list(states)
    count = {st: found.count(st) for st in ("complete", "pruned", "failed", "stopped")}
    return SweepProgress(done=count["complete"], running=found.count("running") + found.count("waiting"),
                         pruned=count["pruned"], failed=count["failed"], stopped=count["stopped"],
                         left=max(0, budget - len(found)) if open_ else 0)


@dataclass(frozen=True)
class SweepView:
    id: int
    owner: str
    name: str
    spec: SweepSpec
    state: str
    stop_reason: str | None
    created_at: datetime
    ended_at: datetime | None
    study_name: str
    progress: SweepProgress
    best: TrialView | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "stopped", "failed")


def sweep_state(row: Sweep, problem: str | None) -> tuple[str, str | None]:
    """The state and reason a sweep shows. An open one whose stored spec no longer validates cannot go on: failed,
    saying why (its runner ends it so too). One that ended keeps its state (its trials and best still stand), its
    reason followed by the sentence (why Extend is refused)."""
    if not problem:
        return row.state, row.stop_reason
    if row.state in OPEN:
        return "failed", problem
    return row.state, problem if row.stop_reason in (None, problem) else f"{row.stop_reason} {problem}"


def parse_spec(data: dict[str, Any] | SweepSpec) -> SweepSpec:
    """A sweep from the form's or the API's values; bad input is one sentence per field (ValidationProblem)."""
    if isinstance(data, SweepSpec):
        return data
    if isinstance(data, dict) and data.get("params") in ({}, []):
        raise ValidationProblem({"params": "give at least one hyperparameter: a fixed value, a list or a range"})
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise ValidationProblem(validation_problems(exc)) from None
    except ValueError as exc:  # a bad base request, raised by the spec's own check
        raise ValidationProblem({"": str(exc)}) from None


def study_name_of(sweep_id: int) -> str:
    return f"portal-sweep-{sweep_id}"


class SweepService:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], jobs: JobService):
        self.settings = settings
        self.sessions = sessions
        self.jobs = jobs
        self.teams = TeamService(settings, sessions)  # who sees a sweep: as its base's team's jobs are seen

    # Creating ---------------------------------------------------------------------------------
    def validate(self, user: User, spec: SweepSpec | dict[str, Any]) -> SweepSpec:
        """The spec, with the admin's limits and the script checked on the trial jobs its extremes make."""
        spec = parse_spec(spec)
        first = spec.first_values()
        problems: dict[str, str] = {}
        for name, param in spec.params.items():
            ends = [param.low, param.high] if param.kind in ("uniform", "loguniform") else None
            ends = [int(param.low), int(param.high)] if param.kind == "int" else ends  # type: ignore[arg-type]
            for value in ends or param.grid_values() or []:
                try:
                    data = spec.trial_request(first | {name: value}).model_dump(mode="json")  # type: ignore[dict-item]
                    self.jobs.validate(data, user)
                except ValidationProblem as exc:
                    found = exc.problems
                except ValidationError as exc:
                    found = validation_problems(exc)
                else:
                    continue
                for key, sentence in found.items():
                    problems.setdefault(key, f"{sentence} (the sweep's value {value})" if key == name else sentence)
        if problems:
            raise ValidationProblem(problems)
        return spec

    def create(self, user: User, spec: SweepSpec | dict[str, Any]) -> SweepView:
        spec = self.validate(user, spec)
        # The team its trials will belong to, kept with the sweep: who may see it follows that team's rule.
        spec.base["team"] = self.teams.choose(user, spec.base.get("team") or None) or ""
        now = utcnow()
        with self.sessions.begin() as s:
            # The whole sweep's ceiling against the team's and the user's budgets, as one job's is at submit.
            req = spec.trial_request(spec.first_values())
            cost = spec.budget * req.max_runtime_hours * hourly_rate(s, self.settings, self.jobs.backend.name,
                                                                     req.gpus, req.nodes)
            _, refusal = submit_check(s, self.settings, user, spec.base["team"], cost,
                                      spec.budget * req.max_runtime_hours, req.gpus, req.nodes)
            if refusal:
                raise ValidationProblem({"": refusal.replace("This job", f"This sweep of {spec.budget} trials", 1)})
            row = Sweep(owner=user.name, owner_groups=list(user.groups), name=spec.name,
                        spec=spec.model_dump(mode="json"), state="running", study_name=f"pending-{now.timestamp()}",
                        created_at=now)
            s.add(row)
            s.flush()
            row.study_name = study_name_of(row.id)
            sweep_id = row.id
        # The Optuna study is made by the runner on its first tick (it owns the storage); nothing waits for it.
        return self.get(user, sweep_id)

    def estimate_cost(self, user: User, spec: SweepSpec | dict[str, Any]) -> tuple[float, float]:
        """(GPU-hours, money) if every trial of the budget ran to its max runtime: the most the sweep can cost
        (retries of failed trials come on top)."""
        spec = parse_spec(spec)
        req = spec.trial_request(spec.first_values())
        hours = spec.budget * req.max_runtime_hours
        with self.sessions.begin() as s:  # the price book, as a job's estimate at submit
            rate = hourly_rate(s, self.settings, self.jobs.backend.name, req.gpus, req.nodes)
        return round(hours * req.gpus * req.nodes, 2), round(hours * rate, 2)

    # Reading ----------------------------------------------------------------------------------
    def _row(self, s: Session, user: User, sweep_id: int) -> Sweep:
        row = s.get(Sweep, sweep_id) if 0 < sweep_id < 2**62 else None
        if row is None or not self._may_see(user, row.owner, row.spec):
            raise NotFound(f"Sweep {sweep_id} was not found.")
        return row

    def _may_see(self, user: User, owner: str, spec: object) -> bool:
        """As the jobs of its base's team are seen (a hidden team's by its members only, teammates' by each other)."""
        base = spec.get("base") if isinstance(spec, dict) else None
        team = base.get("team") if isinstance(base, dict) else None
        return self.teams.may_see(user, owner, str(team) if team else None)

    def _owned(self, s: Session, user: User, sweep_id: int) -> Sweep:
        row = self._row(s, user, sweep_id)
        if not may_act(user, row.owner):
            raise NotFound(f"Sweep {sweep_id} was not found.")
        return row

    def get(self, user: User, sweep_id: int) -> SweepView:
        with self.sessions.begin() as s:
            row = self._row(s, user, sweep_id)
            return self._view(s, row, trials_of_many(s, [row], steps=False)[row.id])

    def get_with_trials(self, user: User, sweep_id: int) -> tuple[SweepView, list[TrialView]]:
        """The sweep and its trials with their reported steps (the sweep page's charts), from one read of them."""
        with self.sessions.begin() as s:
            row = self._row(s, user, sweep_id)
            trials = trials_of(s, row)
            return self._view(s, row, trials), trials

    def progress(self, user: User, sweep_id: int) -> tuple[str, SweepProgress]:
        """The sweep's state and counts only, for a page that follows a running sweep: its trials' states and no
        parameters, values or steps (a trial's end changes the counts, and with them the best)."""
        with self.sessions.begin() as s:
            row = self._row(s, user, sweep_id)
            spec, problem = readable_spec(row.spec, row.name)
            states = [_state(state, outcome, "running") for state, outcome in study_states(s, row.study_name)]
            state, _ = sweep_state(row, problem)
            return state, count_progress(states, spec.budget, state == "running")

    def names(self, user: User, ids: Iterable[int] | None = None, limit: int = 200) -> dict[int, str]:
        """Sweep id -> name, of those the user may see: of these ids (the dashboard's trials), or with none given
        the user's own sweeps, newest first (History's sweep filter)."""
        with self.sessions.begin() as s:
            stmt = select(Sweep.id, Sweep.name, Sweep.owner, Sweep.spec).order_by(Sweep.id.desc())
            if ids is None:
                stmt = stmt.where(Sweep.owner == user.name).limit(limit)
            else:
                wanted = sorted({i for i in ids if 0 < i < 2**62})
                if not wanted:
                    return {}
                stmt = stmt.where(Sweep.id.in_(wanted))
            return {i: name for i, name, owner, spec in s.execute(stmt) if self._may_see(user, owner, spec)}

    def importances(self, user: User, sweep_id: int, trials: list[TrialView] | None = None) -> dict[str, float]:
        """Each varied parameter's share of the objective's variation, largest first (services/sweep_importance.py);
        {} until enough trials have finished. `trials`: the sweep's, when the caller has read them already."""
        with self.sessions.begin() as s:
            row = self._row(s, user, sweep_id)
            spec, _ = readable_spec(row.spec, row.name)
            if trials is None:
                trials = trials_of_many(s, [row], steps=False)[row.id]
        return param_importances(spec, trials)

    def list(self, user: User, everyone: bool = False, limit: int = 100) -> list[SweepView]:
        """Newest first: the user's own, or with `everyone` all they may see (teammates' too, no hidden team's)."""
        with self.sessions.begin() as s:
            stmt = select(Sweep).order_by(Sweep.id.desc())
            if not everyone:
                stmt = stmt.where(Sweep.owner == user.name)
            rows = []
            for row in s.scalars(stmt.execution_options(yield_per=200)):
                if row.owner == user.name or self._may_see(user, row.owner, row.spec):
                    rows.append(row)
                    if len(rows) >= limit:
                        break
            trials = trials_of_many(s, rows, steps=False)
            return [self._view(s, row, trials[row.id]) for row in rows]

    def trials(self, user: User, sweep_id: int) -> list[TrialView]:
        with self.sessions.begin() as s:
            return trials_of(s, self._row(s, user, sweep_id))

    def best(self, user: User, sweep_id: int) -> TrialView | None:
        return self.get(user, sweep_id).best

    def best_values(self, user: User, sweep_id: int) -> dict[str, Any]:
        """The best trial's job values, for "submit the best as a single job" (the Submit form or the API)."""
        best = self.best(user, sweep_id)
        if best is None or best.job_id is None:
            raise Conflict("The sweep has no finished trial with a value yet.")
        values = self.jobs.clone_values(user, best.job_id)
        values["name"] = values.get("name", "").rsplit("-t", 1)[0][:50] + "-best"
        return values

    def _view(self, s: Session, row: Sweep, trials: list[TrialView]) -> SweepView:
        spec, problem = readable_spec(row.spec, row.name)
        state, reason = sweep_state(row, problem)
        progress = count_progress((t.state for t in trials), spec.budget, state == "running")
        return SweepView(id=row.id, owner=row.owner, name=row.name, spec=spec, state=state,
                         stop_reason=reason, created_at=row.created_at, ended_at=row.ended_at,
                         study_name=row.study_name, progress=progress, best=best_of(trials, spec))

    # Acting -----------------------------------------------------------------------------------
    def stop(self, user: User, sweep_id: int) -> SweepView:
        """No new trials; the running ones are stopped by the runner (its next tick), then the sweep is Stopped."""
        with self.sessions.begin() as s:
            row = self._owned(s, user, sweep_id)
            if row.state != "running":
                raise Conflict(f"Sweep {row.name} is not running ({row.state}).")
            row.state = "stopping"
            row.stop_reason = f"Stopped by {user.name}."
        return self.get(user, sweep_id)

    def extend(self, user: User, sweep_id: int, n: int) -> SweepView:
        """N more trials in the budget; a finished sweep runs again (a grid only up to its points)."""
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_TRIALS:
            raise ValidationProblem({"trials": f"give a whole number of trials from 1 to {MAX_TRIALS}"})
        with self.sessions.begin() as s:
            row = self._owned(s, user, sweep_id)
            if row.state == "stopping":
                raise Conflict(f"Sweep {row.name} is stopping; extend it once it has stopped.")
            spec, problem = readable_spec(row.spec, row.name)
            if problem:
                raise Conflict(problem)
            budget = spec.budget + n
            if budget > MAX_TRIALS:
                raise ValidationProblem({"trials": f"a sweep has at most {MAX_TRIALS} trials; it has {spec.budget}"})
            size = spec.grid_size() if spec.method == "grid" else None
            if size is not None and spec.budget >= size:
                raise Conflict(f"The grid of sweep {row.name} has {size} points and all are in its budget.")
            if size is not None:
                budget = min(budget, size)
            row.spec = spec.model_dump(mode="json") | {"budget": budget}
            if row.state != "running":
                row.state, row.stop_reason, row.ended_at = "running", None, None
        return self.get(user, sweep_id)


# Reading a sweep's trials: its jobs (portal tables) joined with its Optuna trials, in one session ---------------
# What a trial's view and the runner read of its jobs (a sweep page at 200 trials loads no job's metrics or request).
JOB_COLUMNS = (Job.id, Job.sweep_id, Job.sweep_trial, Job.status, Job.reason, Job.backend_ref, Job.final_metrics,
               Job.created_at, Job.finished_at)


def jobs_by_trial(s: Session, sweep_id: int) -> dict[int, list[Job]]:
    return jobs_by_sweep_trial(s, [sweep_id]).get(sweep_id, {})


def jobs_by_sweep_trial(s: Session, sweep_ids: list[int]) -> dict[int, dict[int, list[Job]]]:
    """Each sweep's jobs by trial number, oldest first (a retried trial has several)."""
    out: dict[int, dict[int, list[Job]]] = {i: {} for i in sweep_ids}
    stmt = select(Job).options(load_only(*JOB_COLUMNS)).where(Job.sweep_id.in_(sweep_ids)).order_by(Job.id)
    for job in s.scalars(stmt):
        out[job.sweep_id or 0].setdefault(job.sweep_trial or 0, []).append(job)
    return out


def trials_of(s: Session, row: Sweep) -> list[TrialView]:
    return trials_of_many(s, [row])[row.id]


def trials_of_many(s: Session, rows: list[Sweep], steps: bool = True) -> dict[int, list[TrialView]]:
    found = studies_trials(s, [r.study_name for r in rows], steps=steps)
    jobs = jobs_by_sweep_trial(s, [r.id for r in rows])
    out = {}
    for row in rows:
        fixed = {n: p["value"] for n, p in row.spec.get("params", {}).items() if p.get("kind") == "fixed"}
        out[row.id] = [_trial_view(t, jobs[row.id].get(t.number, []), fixed) for t in found.get(row.study_name, [])]
    return out


def _state(optuna_state: str, outcome: str | None, running: TrialState) -> TrialState:
    """A trial's state from Optuna's and the portal's outcome; `running`: what a trial Optuna still runs is."""
    if optuna_state == "COMPLETE":
        return "complete"
    if optuna_state == "PRUNED":
        return "pruned"
    if optuna_state == "FAIL":
        return "stopped" if outcome == "stopped" else "failed"
    return running


def _trial_view(t: StudyTrial, jobs: list[Job], fixed: dict[str, Any]) -> TrialView:
    last = jobs[-1] if jobs else None
    status = JobStatus(last.status) if last is not None else None
    # An ended job whose trial Optuna still runs: the runner tells Optuna on its next tick; running until then.
    waiting = status is None or status in (JobStatus.SUBMITTING, JobStatus.QUEUED)
    state = _state(t.state, t.attrs.get(OUTCOME), "waiting" if waiting else "running")
    # The runner's sentence for an ended trial (pruned, failed after retries, job deleted), else its job's reason.
    said = t.attrs.get(REASON) if t.state in ("PRUNED", "FAIL") else None
    reason = said or (last.reason if last else None)
    return TrialView(number=t.number, params=fixed | t.params, state=state, value=t.value,
                     job_id=last.id if last else None, job_ids=[j.id for j in jobs],
                     job_status=status.value if status else None, reason=reason, intermediate=t.intermediate)


def best_of(trials: list[TrialView], spec: SweepSpec) -> TrialView | None:
    scored = [t for t in trials if t.state == "complete" and t.value is not None and math.isfinite(t.value)]
    if not scored:
        return None
    pick = min if spec.direction == "minimize" else max
    return pick(scored, key=lambda t: t.value)  # type: ignore[arg-type, return-value]
