"""Sweeps in the pages (issue 19), under AppTest on a real portal whose trials are real local processes: the Submit
page's Sweep form (sentences by the fields, the whole sweep's cost, a sweep created), the sweep page (progress,
best trial, charts, trials table, its actions), the dashboard's trials grouped under their sweep, History's
sweep filter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.models import User
from services.portal import Portal
from services.store.sweep_tables import Sweep
from tests.conftest import run_to_end
from tests.test_sweeps import SCRIPT, drive, runner_of

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")


def app(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def table(at: AppTest, column: str):
    """The page's table that has this column (a table without row selection has no key under AppTest)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


@pytest.fixture
def curve(portal: Portal) -> str:
    (portal.settings.workspace_dir / "curve.py").write_text(SCRIPT)
    return "curve.py"


def grid_sweep(portal: Portal, user: User, script: str, name: str = "lr-grid", **more) -> int:
    """A finished grid of three learning rates and two batch sizes: six real trials, the best at lr 0.01."""
    view = portal.sweeps.create(user, {
        "name": name, "base": {"name": name, "script": script, "epochs": 3},
        "params": {"learning_rate": {"kind": "list", "values": [0.001, 0.01, 0.3]},
                   "batch_size": {"kind": "list", "values": [16, 32]}},
        "method": "grid", "budget": 6, "parallel": 3, "early_stopping": "none", **more})
    drive(portal, user, view.id)
    return view.id


# The Submit page's Sweep form -----------------------------------------------------------------------------------
def sweep_form(curve: str) -> AppTest:
    at = app("pages/submit.py")
    at.segmented_control(key="f_mode").set_value("Sweep").run()
    at.selectbox(key="f_script").select(curve).run()
    at.text_input(key="f_name").input("lr-range").run()
    return at


def vary(at: AppTest, lr: tuple[str, str], batch_sizes: str, add: str) -> AppTest:
    """A log-uniform learning rate between these ends (an empty one left as it is), a list of batch sizes, and an
    extra parameter added by name."""
    at.selectbox(key="sw_learning_rate_kind").select("loguniform").run()
    for end, text in zip(("low", "high"), lr, strict=True):
        if text:
            at.text_input(key=f"sw_learning_rate_{end}").input(text).run()
    at.selectbox(key="sw_batch_size_kind").select("list").run()
    at.text_input(key="sw_batch_size_values").input(batch_sizes).run()
    at.text_input(key="sw_new_name").input(add).run()
    at.button(key="sw_add").click().run()
    return at


def test_bad_values_get_a_sentence_by_their_own_parameter_and_nothing_is_submitted(portal, curve, user):
    at = vary(sweep_form(curve), ("0", ""), "16, big", add="Weight Decay")
    assert "name the script's argument, e.g. 'weight_decay' for --weight_decay (lower-case letters, digits and '_')" \
        in errors(at)
    at.button(key="submit").click().run()
    found = errors(at)
    assert "The sweep was not submitted: please fix the fields marked below." in found
    assert "a log-uniform range must be above 0" in found
    assert "'big' is not a number" in found
    assert portal.sweeps.list(user) == []
    # A grid cannot enumerate a continuous range: said by the method, once the values themselves are good.
    at.text_input(key="sw_learning_rate_low").input("0.0001").run()
    at.text_input(key="sw_batch_size_values").input("16, 32").run()
    at.radio(key="sw_method").set_value("grid").run()
    at.button(key="submit").click().run()
    assert "a grid needs lists or integer ranges, not continuous ranges" in errors(at)
    assert portal.sweeps.list(user) == []


def test_the_whole_sweeps_cost_shows_before_submitting(portal, curve):
    at = sweep_form(curve)
    at.number_input(key="f_gpus").set_value(2).run()
    at.number_input(key="f_max_runtime_hours").set_value(1.0).run()
    at.selectbox(key="sw_learning_rate_kind").select("loguniform").run()
    at.number_input(key="sw_budget").set_value(12).run()
    cost = 12 * portal.settings.cost_per_hour(2, 1)
    money = f"{portal.settings.currency}{cost:,.2f}"
    assert [m.value for m in at.metric if m.label == "Estimated cost of the sweep"] == [f"up to {money}"]
    assert any(c.value.startswith(f"up to 12 trials × 2 GPUs × 1 h = 24 GPU-hours ≈ {money}") for c in at.caption)


def test_the_objective_suggests_the_metrics_past_runs_of_the_script_reported(portal, curve, user):
    (portal.settings.workspace_dir / "report.py").write_text("print('Epoch 1/1 loss=0.5 val_acc=0.8', flush=True)\n")
    for script in ("report.py", "train_example.py"):  # the example reports an accuracy, not a val_acc
        run_to_end(portal, user, portal.jobs.submit(user, {"name": "earlier", "script": script, "epochs": 1,
                                                           "extra_args": "--seconds-per-epoch 0"}))
    at = sweep_form("report.py")
    assert at.selectbox(key="sw_objective").options == ["loss", "val_acc"]
    at = sweep_form(curve)  # never run: the loss, or any name typed in
    assert at.selectbox(key="sw_objective").options == ["loss"]


def test_submitting_the_form_creates_the_sweep_and_opens_its_page(portal, curve, user):
    at = vary(sweep_form(curve), ("0.001", "0.1"), "16, 32", add="warmup")
    at.text_input(key="sw_warmup_value").input("5").run()
    at.number_input(key="sw_budget").set_value(4).run()
    at.radio(key="sw_early_stopping").set_value("halving").run()
    at.button(key="submit").click().run()
    assert not at.exception and errors(at) == []
    [sweep] = portal.sweeps.list(user)
    assert at.query_params["id"] == str(sweep.id)
    assert any(t.value == "Sweep lr-range" for t in at.title)  # its page
    spec = sweep.spec
    assert spec.params["learning_rate"].kind == "loguniform" and (spec.params["learning_rate"].low,
                                                                  spec.params["learning_rate"].high) == (0.001, 0.1)
    assert spec.params["batch_size"].values == [16, 32] and spec.params["warmup"].value == 5
    assert (spec.budget, spec.early_stopping, spec.base["script"]) == (4, "halving", curve)


# The sweep page ----------------------------------------------------------------------------------------------------
def test_a_finished_sweeps_page_shows_its_progress_best_trial_and_every_trial(portal, curve, user):
    sweep_id = grid_sweep(portal, user, curve)
    at = app("pages/sweep.py", id=str(sweep_id))
    assert {m.label: m.value for m in at.metric} == {"Done": "6", "Running": "0", "Pruned": "0", "Failed": "0",
                                                     "Left": "0"}
    best = portal.sweeps.best(user, sweep_id)
    assert best is not None and best.params["learning_rate"] == 0.01 and best.params["batch_size"] == 16
    text = " ".join(m.value for m in at.markdown)
    assert f"Best trial so far: #{best.number}" in text and "learning_rate = 0&#46;01" in text
    trials = table(at, "trial")
    assert len(trials) == 6 and trials.iloc[0]["trial"] == best.number  # best first
    assert sorted(trials["loss (final)"]) == sorted(t.value for t in portal.sweeps.trials(user, sweep_id))
    # Its charts, parallel coordinates as SVG lines (no Parcoords: the CSP refuses WebGL), and the importances.
    specs = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    assert len(specs) == 3
    assert all(trace["type"] == "scatter" for s in specs.values() for trace in s["data"])
    assert set(table(at, "importance")["parameter"]) == {"learning_rate", "batch_size"}


def test_a_pruned_trial_is_counted_said_and_drawn_apart(portal, curve, user):
    # Three good learning rates finish fast; lr 3 is slow (0.4 s an epoch, 8 s in all, time enough on a busy
    # machine) and far worse at every epoch: the median rule stops it.
    view = portal.sweeps.create(user, {
        "name": "prune", "base": {"name": "prune", "script": curve, "epochs": 20, "extra_args": "--slow-above 1"},
        "params": {"learning_rate": {"kind": "list", "values": [0.01, 0.012, 0.014, 3.0]}},
        "method": "grid", "budget": 4, "parallel": 4, "early_stopping": "median"})
    drive(portal, user, view.id)
    at = app("pages/sweep.py", id=str(view.id))
    assert {m.label: m.value for m in at.metric} == {"Done": "3", "Running": "0", "Pruned": "1", "Failed": "0",
                                                     "Left": "0"}
    rows = table(at, "trial")
    bad = rows[rows["learning_rate"] == 3.0].iloc[0]
    assert bad["state"] == "pruned (stopped early)" and bad["why"].startswith("Pruned: loss ")
    assert rows.iloc[-1]["trial"] == bad["trial"]  # best first: a trial without a value comes last
    curves = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "every trial" in c.proto.spec)
    assert [t["name"] for t in curves["data"]][:2] == ["finished or running", "pruned, failed or stopped"]


def test_submit_the_best_makes_a_job_with_its_values(portal, curve, user):
    sweep_id = grid_sweep(portal, user, curve)
    best = portal.sweeps.best(user, sweep_id)
    at = app("pages/sweep.py", id=str(sweep_id))
    at.button(key="sweep_submit_best").click().run()
    assert not at.exception
    job = portal.jobs.list_jobs(limit=1)[0]
    assert job.sweep_id is None and job.name == "lr-grid-best"
    assert (job.request["learning_rate"], job.request["batch_size"]) == (0.01, 16)
    assert job.parent_id == best.job_id


def test_stop_and_extend_a_running_sweep(portal, curve, user):
    view = portal.sweeps.create(user, {
        "name": "slow", "base": {"name": "slow", "script": curve, "epochs": 50, "extra_args": "--slow-above 0"},
        "params": {"learning_rate": {"kind": "uniform", "low": 0.001, "high": 0.1}},
        "method": "random", "budget": 4, "parallel": 2, "early_stopping": "none"})
    runner = runner_of(portal)
    for _ in range(3):
        portal.sync.tick()
        runner.tick()
    at = app("pages/sweep.py", id=str(view.id))
    assert {m.label: m.value for m in at.metric}["Running"] == "2"
    at.number_input(key="sweep_extend_n").set_value(3).run()
    at.button(key="sweep_extend").click().run()
    assert "Added 3 trials to sweep slow." in [s.value for s in at.success]
    assert portal.sweeps.get(user, view.id).spec.budget == 7
    at.button(key="sweep_stop").click().run()
    assert any(s.value.startswith("Stopping sweep slow") for s in at.success)
    ended = drive(portal, user, view.id)
    assert ended.state == "stopped" and ended.progress.running == 0
    at.run()
    assert all(b.key != "sweep_stop" for b in at.button)
    assert any("Stopped by" in i.value for i in at.info)


def test_clone_with_edits_fills_the_sweep_form(portal, curve, user):
    sweep_id = grid_sweep(portal, user, curve)
    at = app("pages/submit.py", sweep=str(sweep_id))
    assert at.segmented_control(key="f_mode").value == "Sweep"
    assert at.text_input(key="f_name").value == "lr-grid-clone"
    assert at.text_input(key="sw_learning_rate_values").value == "0.001, 0.01, 0.3"
    assert at.radio(key="sw_method").value == "grid"
    at.text_input(key="sw_learning_rate_values").input("0.005, 0.01").run()
    at.button(key="submit").click().run()
    assert errors(at) == []
    clone = portal.sweeps.list(user)[0]
    assert clone.name == "lr-grid-clone" and clone.spec.params["learning_rate"].values == [0.005, 0.01]
    assert clone.spec.budget == 4  # the grid's points


def test_an_unknown_sweep_is_a_sentence(portal):
    at = app("pages/sweep.py", id="999")
    assert errors(at) == ["Sweep 999 was not found."]
    at = app("pages/sweep.py", id="abc")
    assert errors(at) == ["Sweep abc was not found."]


# The dashboard and History -------------------------------------------------------------------------------------------
def test_the_dashboard_groups_a_sweeps_trials_under_it_collapsed(portal, curve, user):
    sweep_id = grid_sweep(portal, user, curve)
    portal.jobs.submit(user, {"name": "on-its-own", "script": curve, "epochs": 1})
    at = app("pages/dashboard.py")
    [box] = at.expander
    assert box.label.startswith("Sweep **lr-grid** · ") and not box.proto.expanded
    assert {pl.proto.query_string for pl in box.get("page_link")} >= {f"id={sweep_id}"}
    # Its trials' cards are inside the box; the other job's card is not.
    inside = {pl.label for pl in box.get("page_link")}
    assert "**on-its-own**" not in inside and any(label.startswith("**lr-grid-t") for label in inside)
    assert "**on-its-own**" in {pl.label for pl in at.get("page_link")}


def test_history_filters_by_sweep(portal, curve, user):
    sweep_id = grid_sweep(portal, user, curve)
    grid_sweep(portal, user, curve, name="other")
    portal.jobs.submit(user, {"name": "on-its-own", "script": curve, "epochs": 1})
    at = app("pages/history.py", sweep=str(sweep_id))
    names = at.dataframe(key="hist_table").value["name"].tolist()
    assert len(names) == 6 and all("#lr-grid-t" in n for n in names)
    assert {m.label: m.value for m in at.metric}["Jobs"] == "6"


def test_the_sweeps_page_lists_your_sweeps_with_their_progress(portal, curve, user):
    at = app("pages/sweep.py")
    assert any("No sweeps yet." in i.value for i in at.info)
    sweep_id = grid_sweep(portal, user, curve)
    at = app("pages/sweep.py")
    [link] = [pl for pl in at.get("page_link") if "lr-grid" in pl.label]
    assert link.proto.query_string == f"id={sweep_id}"
    assert "6 done, 0 running, 0 pruned, 0 failed, 0 left · best loss 0.3" in link.label


def test_a_fixed_row_starts_from_the_single_job_form(portal, curve):
    at = app("pages/submit.py")
    at.number_input(key="f_learning_rate").set_value(0.02).run()
    at.number_input(key="f_epochs").set_value(4).run()
    at.segmented_control(key="f_mode").set_value("Sweep").run()
    assert (at.text_input(key="sw_learning_rate_value").value, at.text_input(key="sw_epochs_value").value) == \
        ("0.02", "4")
    at.segmented_control(key="f_mode").set_value("Single job").run()
    assert at.number_input(key="f_learning_rate").value == 0.02  # kept while the sweep's rows were shown


def test_the_dashboard_names_the_box_by_the_sweeps_own_name(portal, curve, user):
    sweep_id = grid_sweep(portal, user, curve)
    for trial in portal.sweeps.trials(user, sweep_id):  # trials not named "<sweep>-t<n>" (an older portal's)
        portal.jobs.mark(trial.job_id, name=f"imported-run-{trial.number}")
    [box] = app("pages/dashboard.py").expander
    assert box.label.startswith("Sweep **lr-grid** · ") and "imported-run" not in box.label


def test_historys_sweep_filter_offers_your_sweeps_by_name(portal, curve, user):
    first = grid_sweep(portal, user, curve)
    other = grid_sweep(portal, user, curve, name="other")
    at = app("pages/history.py")
    assert at.selectbox(key="h_sweep").options == [f"other (#{other})", f"lr-grid (#{first})"]
    at.selectbox(key="h_sweep").select(first).run()
    names = at.dataframe(key="hist_table").value["name"].tolist()
    assert len(names) == 6 and all("#lr-grid-t" in n for n in names)
    assert at.query_params["sweep"] == str(first)  # the view in the URL


def test_a_sweep_whose_settings_no_longer_validate_shows_failed_saying_why(portal, curve, user):
    view = portal.sweeps.create(user, {
        "name": "renamed", "base": {"name": "renamed", "script": curve, "epochs": 3},
        "params": {"learning_rate": {"kind": "list", "values": [0.001, 0.01]}}, "method": "grid"})
    with portal.jobs.session() as s:  # its script's name one the portal refuses since
        row = s.get(Sweep, view.id)
        row.spec = row.spec | {"base": row.spec["base"] | {"script": "curve.txt"}}
    at = app("pages/sweep.py", id=str(view.id))
    assert errors(at) == [] and [t.value for t in at.title] == ["Sweep renamed"]
    assert [w.value for w in at.warning] == [
        "This sweep's settings are no longer valid (script: the training script must be a Python file (.py)): it "
        "cannot go on."]
    assert at.caption[0].value.startswith("❌ Failed · ")
    assert all(b.key != "sweep_stop" for b in at.button)
