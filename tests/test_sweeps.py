"""Sweeps on the real local backend: real trial processes running a script whose loss depends on the learning
rate, the sync loop and the sweep runner driven tick by tick, on SQLite and PostgreSQL (any_portal)."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from sqlalchemy import select, text

from services.auth import local_user
from services.config import Settings
from services.models import Conflict, JobStatus, NotFound, User, ValidationProblem
from services.portal import Portal, build_portal
from services.store.backup import backup
from services.store.orm import Job
from services.store.sweep_tables import Sweep
from services.sweep_runner import GIVE_UP_AFTER_FAILED_TICKS, SweepRunner
from services.sweep_study import distributions, study_trials
from services.sweeps import SweepService
from tests.conftest import wait_until

# Loss: far from the best learning rate (0.01) is worse at every epoch. --flaky-dir: each parameter set fails its
# first attempt (a marker file says it was tried). --slow-above: learning rates above it take 0.4 s per epoch.
SCRIPT = """
import argparse, os, sys, time
p = argparse.ArgumentParser()
p.add_argument("--learning-rate", type=float)
p.add_argument("--epochs", type=int)
p.add_argument("--batch-size", type=int)
p.add_argument("--flaky-dir", default="")
p.add_argument("--slow-above", type=float, default=1e9)
p.add_argument("--always-fail", action="store_true")
a, _ = p.parse_known_args()
if a.always_fail:
    sys.exit("this trial fails")
if a.flaky_dir:
    marker = os.path.join(a.flaky_dir, f"{a.learning_rate!r}-{a.batch_size}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        sys.exit("the first attempt fails")
for epoch in range(1, a.epochs + 1):
    loss = (a.learning_rate - 0.01) ** 2 * 100 + 1.0 / epoch + a.batch_size / 1000
    print(f"Epoch {epoch}/{a.epochs} loss={loss:.6f}", flush=True)
    time.sleep(0.4 if a.learning_rate > a.slow_above else 0.01)
"""


def runner_of(portal: Portal) -> SweepRunner:
    return next(w for w in portal.sync.workers if isinstance(w, SweepRunner))


def drive(portal: Portal, user: User, sweep_id: int, timeout: float = 120.0, each=None):
    """The sync loop and the sweep runner, tick by tick, until the sweep has ended; returns its view."""
    runner = runner_of(portal)

    def ended():
        portal.sync.tick()
        runner.tick()
        assert runner.last_error is None, runner.last_error
        if each is not None:
            each()
        view = portal.sweeps.get(user, sweep_id)
        return view if view.finished else None

    return wait_until(ended, timeout=timeout, interval=0.05)


def sweep_jobs(portal: Portal, sweep_id: int) -> list[Job]:
    with portal.jobs.session() as s:
        return list(s.scalars(select(Job).where(Job.sweep_id == sweep_id).order_by(Job.id)))


def most_at_once(jobs: list[Job]) -> int:
    """The most trial jobs the portal held active at one time (from submission to end)."""
    edges: list[tuple[datetime, int]] = []
    for j in jobs:
        edges += [(j.created_at, 1), (j.finished_at or datetime.max.replace(tzinfo=j.created_at.tzinfo), -1)]
    now = peak = 0
    for _, d in sorted(edges, key=lambda e: (e[0], e[1])):
        now += d
        peak = max(peak, now)
    return peak


@pytest.fixture
def me(any_portal: Portal) -> User:
    (any_portal.settings.workspace_dir / "lr_sweep.py").write_text(SCRIPT)
    return local_user(any_portal.settings)


def spec(**kw):
    base = {"script": "lr_sweep.py", "epochs": 2} | kw.pop("base", {})
    return {"name": "lr", "base": base, "early_stopping": "none"} | kw


def test_a_3x2_grid_runs_exactly_its_6_points_and_names_the_best(any_portal, me):
    sweep = any_portal.sweeps.create(me, spec(method="grid", budget=50, parallel=4, params={
        "learning_rate": {"kind": "list", "values": [0.001, 0.01, 0.1]},
        "batch_size": {"kind": "list", "values": [16, 64]}}))
    assert sweep.spec.budget == 6 and sweep.progress.left == 6  # a grid's budget is its size
    view = drive(any_portal, me, sweep.id)

    jobs = sweep_jobs(any_portal, sweep.id)
    assert len(jobs) == 6 and all(j.status == JobStatus.SUCCEEDED.value for j in jobs)
    points = {(j.request["learning_rate"], j.request["batch_size"]) for j in jobs}
    assert points == {(lr, bs) for lr in (0.001, 0.01, 0.1) for bs in (16, 64)}
    assert sorted(j.name for j in jobs) == [f"lr-t{n}" for n in range(6)]
    assert (view.state, view.progress.done, view.progress.left) == ("done", 6, 0)
    assert view.best is not None and view.best.params == {"learning_rate": 0.01, "batch_size": 16}
    assert view.stop_reason == f"All 6 trials ran; the best is trial {view.best.number} (loss {view.best.value:.4g})."
    assert most_at_once(jobs) <= 4
    # Trials are ordinary jobs that know their sweep.
    assert {any_portal.jobs.get(me, j.id).sweep_id for j in jobs} == {sweep.id}


def test_random_and_tpe_never_run_more_than_parallel_nor_more_than_the_budget_with_retries(any_portal, me, tmp_path):
    flaky = tmp_path / "flaky"
    flaky.mkdir()
    peaks = []
    for method in ("random", "tpe"):
        sweep = any_portal.sweeps.create(me, spec(
            name=f"s-{method}", method=method, budget=12, parallel=3, retries=1, max_failed=3,
            base={"extra_args": f"--flaky-dir {flaky}", "epochs": 1},
            params={"learning_rate": {"kind": "loguniform", "low": 1e-4, "high": 1.0},
                    "batch_size": {"kind": "int", "low": 8, "high": 64}}))

        def count_active(sweep_id=sweep.id):
            peaks.append(sum(1 for j in sweep_jobs(any_portal, sweep_id) if JobStatus(j.status).value in
                             ("Submitting", "Queued", "Running")))

        view = drive(any_portal, me, sweep.id, each=count_active)
        jobs = sweep_jobs(any_portal, sweep.id)
        trials = {j.sweep_trial for j in jobs}
        # Every trial failed once and was run again: 12 trials, 24 jobs, each trial's second one a retry.
        assert trials == set(range(12)) and len(jobs) == 24, [(j.sweep_trial, j.status) for j in jobs]
        for n in trials:
            first, second = [j for j in jobs if j.sweep_trial == n]
            assert (first.status, second.status, second.parent_id) == ("Failed", "Succeeded", first.id)
        assert most_at_once(jobs) <= 3
        assert (view.state, view.progress.done, view.progress.failed) == ("done", 12, 0)
        with any_portal.jobs.session() as s:
            assert len(study_trials(s, view.study_name)) == 12
    assert max(peaks) <= 3 and max(peaks) >= 2


def test_too_many_failures_end_the_sweep_with_a_sentence(any_portal, me):
    sweep = any_portal.sweeps.create(me, spec(
        name="broken", method="random", budget=10, parallel=2, max_failed=2, base={"extra_args": "--always-fail"},
        params={"learning_rate": {"kind": "uniform", "low": 0.001, "high": 0.1}}))
    view = drive(any_portal, me, sweep.id)
    assert view.state == "failed"
    # Two run at once: the one started after the first failure may fail before the sweep sees the second.
    assert re.match(r"Stopped after [23] failed trials \(the limit is 2\); the last, trial ", view.stop_reason)
    assert "this trial fails" in view.stop_reason or "Exited with code 1" in view.stop_reason
    assert len(sweep_jobs(any_portal, sweep.id)) <= 3  # it did not go on to spend the budget


@pytest.mark.parametrize("rule", ["median", "halving"])
def test_early_stopping_prunes_the_clearly_worse_trial(any_portal, me, rule):
    # All four start at once; three good ones finish fast, the bad one (lr 3) is slow and far worse at each epoch.
    sweep = any_portal.sweeps.create(me, spec(
        name="prune", method="grid", parallel=4, early_stopping=rule, base={"epochs": 8, "extra_args":
                                                                         "--slow-above 1"},
        params={"learning_rate": {"kind": "list", "values": [0.01, 0.012, 0.014, 3.0]}}))
    view = drive(any_portal, me, sweep.id)
    trials = {t.params["learning_rate"]: t for t in any_portal.sweeps.trials(me, sweep.id)}
    bad = trials[3.0]
    assert bad.state == "pruned" and bad.reason.startswith("Pruned: loss ")
    job = any_portal.jobs.get(me, bad.job_id)
    assert job.status is JobStatus.STOPPED and job.reason == bad.reason
    assert job.epoch is not None and job.epoch < 8  # stopped early, not run to its end
    if rule == "median":  # the median rule waits for two finished trials: the fast good ones all finish
        assert [t.state for lr, t in trials.items() if lr != 3.0] == ["complete"] * 3
        assert (view.state, view.progress.pruned, view.progress.done) == ("done", 1, 3)
    else:  # successive halving keeps the best third at each rung: the best good one always finishes
        assert trials[0.01].state == "complete" and view.best.params == {"learning_rate": 0.01}
        assert view.state == "done"


def test_an_optuna_trial_without_its_job_gets_one_job_not_a_new_trial(any_portal, me):
    """The portal killed between asking Optuna for a trial and writing its job: the next tick submits that trial."""
    sweep = any_portal.sweeps.create(me, spec(name="resume", method="grid", parallel=2, params={
        "learning_rate": {"kind": "list", "values": [0.001, 0.01, 0.1]}}))
    runner = runner_of(any_portal)
    runner.tick()  # the study and its first two trials' jobs
    with any_portal.jobs.session() as s:
        row_trials = study_trials(s, sweep.study_name)
    assert len(row_trials) == 2
    # What a crash leaves: a third Optuna trial asked for, no job written.
    study = runner._studies[sweep.id]
    orphan = study.ask(distributions(sweep.spec))
    runner._studies.clear()  # as after a restart
    view = drive(any_portal, me, sweep.id)
    jobs = sweep_jobs(any_portal, sweep.id)
    assert sorted(j.sweep_trial for j in jobs) == [0, 1, 2] and len(jobs) == 3
    assert next(j for j in jobs if j.sweep_trial == orphan.number).request["learning_rate"] == orphan.params[
        "learning_rate"]
    assert view.progress.done == 3 and view.state == "done"


@pytest.mark.parametrize("left", ["a trial row only", "its grid point, not its parameters"])
def test_a_trial_the_portal_stopped_before_optuna_drew_its_parameters_runs_its_own_grid_point(any_portal, me, left):
    """Killed inside ask(): Optuna writes the trial, then the grid point, then each parameter, each on its own. The
    job the next tick gives that trial must run the grid's point for it, not the form's defaults (a killed portal
    once ran 0.001 twice and never 0.03)."""
    sweep = any_portal.sweeps.create(me, spec(name="half-asked", method="grid", parallel=2, params={
        "learning_rate": {"kind": "list", "values": [0.003, 0.03, 0.3]}}))
    runner = runner_of(any_portal)
    runner.tick()  # trials 0 and 1 and their jobs
    study = runner._studies[sweep.id]
    trial_id = study._storage.create_new_trial(study._study_id)
    if left != "a trial row only":
        study.sampler.before_trial(study, study._storage.get_trial(trial_id))
    runner._studies.clear()  # as after a restart
    view = drive(any_portal, me, sweep.id)
    jobs = sweep_jobs(any_portal, sweep.id)
    assert sorted(j.sweep_trial for j in jobs) == [0, 1, 2]
    assert sorted(j.request["learning_rate"] for j in jobs) == [0.003, 0.03, 0.3]
    assert view.state == "done"


def test_stop_extend_visibility_and_cost(any_portal, me):
    sweep = any_portal.sweeps.create(me, spec(name="ext", method="random", budget=2, parallel=1, base={
        "gpus": 0, "max_runtime_hours": 2.0}, params={"learning_rate": {"kind": "uniform", "low": 0.001,
                                                                        "high": 0.1}}))
    assert any_portal.sweeps.estimate_cost(me, sweep.spec) == (0.0, round(2 * 2.0 * any_portal.settings.cost_per_hour(
        0, 1), 2))
    view = drive(any_portal, me, sweep.id)
    assert view.progress.done == 2
    view = any_portal.sweeps.extend(me, sweep.id, 2)
    assert view.state == "running" and view.spec.budget == 4
    view = drive(any_portal, me, sweep.id)
    assert (view.state, view.progress.done) == ("done", 4)

    other = User(name="mallory")
    with pytest.raises(NotFound):
        any_portal.sweeps.stop(other, sweep.id)
    assert any_portal.sweeps.list(other) == []
    long = any_portal.sweeps.create(me, spec(name="long", method="random", budget=5, parallel=1,
                                             base={"epochs": 200, "extra_args": "--slow-above 0"},
                                             params={"learning_rate": {"kind": "uniform", "low": 0.001, "high": 0.1}}))
    runner = runner_of(any_portal)
    runner.tick()
    wait_until(lambda: (any_portal.sync.tick(), any_portal.sweeps.trials(me, long.id)[0].state == "running")[1])
    any_portal.sweeps.stop(me, long.id)
    view = drive(any_portal, me, long.id)
    assert (view.state, view.stop_reason) == ("stopped", f"Stopped by {me.name}.")
    assert [j.status for j in sweep_jobs(any_portal, long.id)] == ["Stopped"]


def test_bad_sweeps_are_refused_with_a_sentence_per_field(any_portal, me):
    with pytest.raises(ValidationProblem) as exc:
        any_portal.sweeps.create(me, spec(params={"learning_rate": {"kind": "list", "values": [0.01, 500]}}))
    assert "learning_rate" in exc.value.problems and "500" in exc.value.problems["learning_rate"]
    with pytest.raises(ValidationProblem) as exc:
        any_portal.sweeps.create(me, spec(base={"script": "missing.py"}, params={
            "learning_rate": {"kind": "uniform", "low": 0.001, "high": 0.1}}))
    assert exc.value.problems == {"script": "'missing.py' is not in your workspace"}
    with pytest.raises(ValidationProblem) as exc:
        any_portal.sweeps.create(me, spec(method="grid", params={
            "learning_rate": {"kind": "uniform", "low": 0.001, "high": 0.1}}))
    assert "grid" in str(exc.value)


def test_a_trial_whose_job_is_deleted_ends_and_is_not_run_again(any_portal, me):
    sweep = any_portal.sweeps.create(me, spec(name="gone", method="grid", parallel=2, base={
        "epochs": 100, "extra_args": "--slow-above 1"}, params={"learning_rate": {"kind": "list",
                                                                                  "values": [0.01, 3.0]}}))
    runner = runner_of(any_portal)
    runner.tick()
    slow = next(t for t in any_portal.sweeps.trials(me, sweep.id) if t.params["learning_rate"] == 3.0)
    any_portal.jobs.delete(me, slow.job_id)
    view = drive(any_portal, me, sweep.id)
    assert len(sweep_jobs(any_portal, sweep.id)) == 1  # the fast one; the deleted trial got no second job
    gone = next(t for t in any_portal.sweeps.trials(me, sweep.id) if t.number == slow.number)
    assert (gone.state, gone.reason, gone.job_id) == ("stopped", f"Its job {slow.job_id} was deleted.", None)
    assert (view.state, view.progress.done, view.progress.stopped) == ("done", 1, 1)


def test_a_sweep_the_runner_cannot_carry_on_ends_saying_why(any_portal, me):
    sweep = any_portal.sweeps.create(me, spec(method="random", params={
        "learning_rate": {"kind": "uniform", "low": 0.001, "high": 0.1}}))
    with any_portal.jobs.session() as s:  # a database that refuses the sweep's reads tick after tick
        s.execute(text("DROP TABLE trial_intermediate_values"))
    runner = runner_of(any_portal)
    for _ in range(GIVE_UP_AFTER_FAILED_TICKS):
        runner.tick()
    with any_portal.jobs.session() as s:
        row = s.get(Sweep, sweep.id)
        assert row.state == "failed" and row.stop_reason.startswith("The sweep could not go on: ")
    assert sweep_jobs(any_portal, sweep.id) == []


def private(portal: Portal) -> SweepService:
    """The portal's sweeps where users see only their own jobs (PORTAL_SHOW_OTHERS_JOBS=false)."""
    return SweepService(portal.settings.model_copy(update={"show_others_jobs": False}), portal.sweeps.sessions,
                        portal.jobs)


def test_the_sweep_page_reads_its_trials_once_and_follows_it_by_its_counts(any_portal, me):
    sweep = any_portal.sweeps.create(me, spec(method="grid", parallel=2, params={
        "learning_rate": {"kind": "list", "values": [0.001, 0.01, 0.1]}}))
    runner = runner_of(any_portal)
    runner.tick()
    state, progress = any_portal.sweeps.progress(me, sweep.id)
    assert (state, progress.running, progress.left) == ("running", 2, 1)
    assert progress == any_portal.sweeps.get(me, sweep.id).progress
    done = drive(any_portal, me, sweep.id)
    assert any_portal.sweeps.progress(me, sweep.id) == ("done", done.progress)
    view, trials = any_portal.sweeps.get_with_trials(me, sweep.id)
    assert (view.progress, view.best.number, view.best.value) == (done.progress, done.best.number, done.best.value)
    assert [t.number for t in trials] == [0, 1, 2]
    assert [t.intermediate for t in trials] == [t.intermediate for t in any_portal.sweeps.trials(me, sweep.id)]
    with pytest.raises(NotFound):
        private(any_portal).progress(User(name="mallory"), sweep.id)


def test_sweep_names_for_the_cards_and_the_history_filter(any_portal, me):
    first = any_portal.sweeps.create(me, spec(name="warm-t2", params={"learning_rate": {"kind": "fixed",
                                                                                         "value": 0.01}}))
    second = any_portal.sweeps.create(me, spec(name="second", params={"learning_rate": {"kind": "fixed",
                                                                                         "value": 0.01}}))
    theirs = any_portal.sweeps.create(User(name="mallory"), spec(name="theirs", params={
        "learning_rate": {"kind": "fixed", "value": 0.01}}))
    assert any_portal.sweeps.names(me, [first.id, second.id, 999]) == {first.id: "warm-t2", second.id: "second"}
    assert any_portal.sweeps.names(me) == {second.id: "second", first.id: "warm-t2"}  # yours, newest first
    assert any_portal.sweeps.names(User(name="eve"), [first.id, theirs.id]) == {first.id: "warm-t2",
                                                                                theirs.id: "theirs"}
    assert private(any_portal).names(User(name="eve"), [first.id, theirs.id]) == {}  # only the sweeps one may see


def test_a_sweep_whose_stored_spec_no_longer_validates_reads_as_failed_saying_why(any_portal, me):
    sweep = any_portal.sweeps.create(me, spec(method="grid", params={
        "learning_rate": {"kind": "list", "values": [0.001, 0.01]}}))
    with any_portal.jobs.session() as s:  # its script renamed to a name the portal refuses since
        row = s.get(Sweep, sweep.id)
        row.spec = row.spec | {"base": row.spec["base"] | {"script": "lr_sweep.txt"}}
    said = ("This sweep's settings are no longer valid (script: the training script must be a Python file (.py)): "
            "it cannot go on.")
    view = any_portal.sweeps.get(me, sweep.id)
    assert (view.state, view.stop_reason, view.finished) == ("failed", said, True)
    assert view.spec.params["learning_rate"].values == [0.001, 0.01] and view.progress.left == 0
    assert any_portal.sweeps.progress(me, sweep.id)[0] == "failed"
    assert [v.state for v in any_portal.sweeps.list(me)] == ["failed"]
    with pytest.raises(Conflict, match="no longer valid"):
        any_portal.sweeps.extend(me, sweep.id, 1)
    runner = runner_of(any_portal)
    for _ in range(2):  # not 30 ticks of trying: it cannot get better
        runner.tick()
    with any_portal.jobs.session() as s:
        row = s.get(Sweep, sweep.id)
        assert (row.state, row.stop_reason) == ("failed", said)
    assert sweep_jobs(any_portal, sweep.id) == []


def test_a_backup_holds_the_sweeps_with_their_optuna_trials(portal, tmp_path):
    (portal.settings.workspace_dir / "lr_sweep.py").write_text(SCRIPT)
    me = local_user(portal.settings)
    sweep = portal.sweeps.create(me, spec(method="grid", parallel=2, params={
        "learning_rate": {"kind": "list", "values": [0.001, 0.01]}}))
    done = drive(portal, me, sweep.id)
    copy = backup(portal.settings, tmp_path / "backup.db")
    restored = tmp_path / "restored"
    restored.mkdir()
    copy.rename(restored / "portal.db")
    again = build_portal(Settings(data_dir=restored, backend="local"))
    try:
        view, trials = again.sweeps.get_with_trials(me, sweep.id)
    finally:
        again.close()
    # The best as both views give it (one reads the trials' steps, the other not): same trial, values and params.
    best = (view.best.number, view.best.params, view.best.value) if view.best else None
    assert (view.state, view.progress, best) == ("done", done.progress,
                                                (done.best.number, done.best.params, done.best.value))
    assert [(t.params, t.value) for t in trials] == [(t.params, t.value) for t in portal.sweeps.trials(me, sweep.id)]
