"""The sweep page's render time (issue 19) at 20 and 200 trials, server side, under Streamlit's AppTest.

A sweep of a log-uniform learning rate, a batch-size list and a weight-decay range, with every trial finished (a
tenth pruned) and 50 reported steps each, written straight into the store: the trials' jobs as seeded jobs,
their Optuna trials through Optuna's own storage on the portal's database (the runner's way), so the page reads
what a real sweep leaves. Each figure is one full script run of /sweep?id=N on a warm process (queries, importances,
three charts, the trials table); also the bytes of the charts' Plotly specs, which the browser receives, and the
running page's check every 5 s (`SweepService.progress`; before it, the whole `get`).

    .venv/bin/python bench/sweep_page.py [--trials 20,200] [--steps 50] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

from _common import APP, ScriptTimer, fresh_portal, summary, time_runs

from services.auth import local_user
from services.store.seed import seed_jobs


def make_sweep(portal, trials: int, steps: int, seed: int) -> int:
    import optuna
    from optuna.trial import TrialState
    from sqlalchemy import select, update

    from services.store.orm import Job
    from services.sweep_study import distributions, make_storage, open_study

    user = local_user(portal.settings)
    view = portal.sweeps.create(user, {
        "name": f"bench-{trials}", "base": {"name": f"bench-{trials}", "script": "train_example.py"},
        "params": {"learning_rate": {"kind": "loguniform", "low": 1e-5, "high": 1e-1},
                   "batch_size": {"kind": "list", "values": [16, 32, 64]},
                   "weight_decay": {"kind": "uniform", "low": 0.0, "high": 0.1}},
        "method": "tpe", "budget": trials, "parallel": 4})
    with portal.jobs.sessions.begin() as s:  # finished for good: the runner must not ask for more
        from services.store.sweep_tables import Sweep

        s.get(Sweep, view.id).state = "done"
    engine = portal.jobs.sessions.kw["bind"]
    with engine.connect() as conn:
        before = conn.scalar(select(Job.id).order_by(Job.id.desc()).limit(1)) or 0
    seed_jobs(engine, trials, owner=user.name, seed=seed)
    study = open_study(make_storage(portal.settings), view.study_name, view.spec, seed=seed)
    space = distributions(view.spec)
    rnd = random.Random(seed)
    for number in range(trials):
        lr, bs, wd = 10 ** rnd.uniform(-5, -1), rnd.choice([16, 32, 64]), rnd.uniform(0, 0.1)
        final = (math.log10(lr) + 2.5) ** 2 / 4 + bs / 640 + wd + 0.1
        pruned = number % 10 == 9
        curve = {s: final + 2.0 / s + rnd.uniform(0, 0.02) for s in range(1, (steps // 3 if pruned else steps) + 1)}
        study.add_trial(optuna.trial.create_trial(
            params={"learning_rate": lr, "batch_size": bs, "weight_decay": wd}, distributions=space,
            value=None if pruned else final, intermediate_values=curve,
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE))
    with engine.begin() as conn:
        ids = list(conn.scalars(select(Job.id).where(Job.id > before).order_by(Job.id)))
        for number, job_id in enumerate(ids):
            conn.execute(update(Job).where(Job.id == job_id).values(sweep_id=view.id, sweep_trial=number))
    return view.id


def main() -> None:
    from streamlit.testing.v1 import AppTest

    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", default="20,200")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    portal = fresh_portal()
    timer = ScriptTimer()
    for n in (int(t) for t in args.trials.split(",")):
        t = time.perf_counter()
        sweep_id = make_sweep(portal, n, args.steps, seed=n)
        made = time.perf_counter() - t
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        at.query_params["id"] = str(sweep_id)
        at.switch_page("pages/sweep.py").run()  # warm-up: imports, the first build
        assert not at.exception, at.exception
        timer.take()
        round_trip = time_runs(at.run, args.runs)
        rows = next(len(d.value) for d in at.dataframe if "trial" in d.value.columns)
        spec_bytes = sum(len(c.proto.spec) for c in at.get("plotly_chart"))
        traces = sum(len(json.loads(c.proto.spec)["data"]) for c in at.get("plotly_chart"))
        print(f"{n:>4} trials x {args.steps} steps (made in {made:.1f} s): server-side script run "
              f"{summary(timer.take())}")
        print(f"{'':>4}  AppTest round trip: {summary(round_trip)}   table rows {rows}, charts' specs "
              f"{spec_bytes / 1024:.0f} KiB in {traces} traces")
        who = local_user(portal.settings)
        checks = {"get (the check before)": lambda i=sweep_id, u=who: portal.sweeps.get(u, i)}
        if hasattr(portal.sweeps, "progress"):
            checks["progress (the 5 s check)"] = lambda i=sweep_id, u=who: portal.sweeps.progress(u, i)
        for label, check in checks.items():
            print(f"{'':>4}  {label}: {summary(time_runs(check, args.runs))}")
    portal.close()


if __name__ == "__main__":
    main()
