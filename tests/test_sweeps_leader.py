"""A sweep's runner that loses the lease in the middle of a tick submits nothing more (real SQLite store, real
local jobs): neither a retry of a failed trial nor the job of a trial asked for before a crash; the next leader
does, once. Else both leaders submit it and the trial runs twice."""

from __future__ import annotations

from collections.abc import Callable

from services.auth import local_user
from services.sweep_study import distributions
from tests.conftest import wait_until
from tests.test_sweeps import SCRIPT, runner_of, spec, sweep_jobs


def lost_after(calls: int) -> Callable[[], bool]:
    """A lease held for the first `calls` checks, lost from then on."""
    left = [calls]

    def held() -> bool:
        left[0] -= 1
        return left[0] >= 0

    return held


def test_a_runner_that_lost_the_lease_mid_tick_neither_retries_nor_resubmits(portal, tmp_path) -> None:
    me = local_user(portal.settings)
    (portal.settings.workspace_dir / "lr_sweep.py").write_text(SCRIPT)
    flaky = tmp_path / "flaky"
    flaky.mkdir()
    sweep = portal.sweeps.create(me, spec(method="grid", budget=2, parallel=1, retries=1, base={
        "extra_args": f"--flaky-dir {flaky}", "epochs": 1}, params={
        "learning_rate": {"kind": "list", "values": [0.01, 0.1]}}))
    runner = runner_of(portal)
    runner.tick()  # the first trial's job, which fails (its first attempt)
    wait_until(lambda: (portal.sync.tick(), [j.status for j in sweep_jobs(portal, sweep.id)] == ["Failed"])[1],
               timeout=30)
    study = runner._studies[sweep.id]
    study.ask(distributions(sweep.spec))  # and a trial asked for, its job never written (a crash)
    runner.leads = lost_after(1)  # held when the tick began, lost right after
    runner.tick()
    assert [j.status for j in sweep_jobs(portal, sweep.id)] == ["Failed"], "a replica no longer leading submitted"
    runner.leads = lambda: True  # the next leader
    runner.tick()
    assert sorted(j.sweep_trial for j in sweep_jobs(portal, sweep.id)) == [0, 0, 1]
