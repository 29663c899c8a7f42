"""A sweep (`/sweep?id=N`, issue 19): its progress, the best trial so far, the search's charts, every trial in a
table, and what to do next (stop, extend, clone with edits, submit the best as a job). Without an id: your sweeps."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from pages import sweep_charts as charts
from pages.common import (
    JOB_PAGE,
    SUBMIT_PAGE,
    ago,
    goto_pending_job,
    me,
    metric_text,
    plain,
    portal,
    run_action,
    show_flash,
)
from pages.submit_sweep import EARLY, METHODS
from services.auth import may_act
from services.models import NotFound
from services.sweep_spec import MAX_TRIALS

SWEEP_PAGE = "pages/sweep.py"
STATE_ICON = {"running": "🟢", "stopping": "⏹️", "stopped": "⏹️", "done": "✅", "failed": "❌"}
REFRESH = "5s"  # a running sweep's page redraws when its progress changes
RELATIVE_TIMES_REFRESH = 60

P = portal()
goto_pending_job()
show_flash()
raw_id = st.query_params.get("id")

if not raw_id:
    st.title("Sweeps")
    st.page_link(SUBMIT_PAGE, label="New sweep", icon=":material/add:")
    sweeps = P.sweeps.list(me())
    if not sweeps:
        st.info("No sweeps yet. On **Submit job**, choose **Sweep** to search over learning rates, batch sizes or "
                "any argument of your script.")
    for s in sweeps:
        p = s.progress
        st.page_link(SWEEP_PAGE, label=f"{STATE_ICON.get(s.state, '')} **{plain(s.name)}** · #{s.id} · "
                     f"{p.done} done, {p.running} running, {p.pruned} pruned, {p.failed} failed, {p.left} left"
                     + (f" · best {plain(s.spec.objective)} {metric_text(s.best.value)}" if s.best else ""),
                     query_params={"id": str(s.id)})
    st.stop()

try:
    SWEEP_ID = int(raw_id)
except ValueError:
    SWEEP_ID = 0  # not a number: not found, as an unknown id
try:
    view, trials = P.sweeps.get_with_trials(me(), SWEEP_ID)
except NotFound:
    st.error(f"Sweep {plain(raw_id)} was not found.")
    st.page_link(SWEEP_PAGE, label="Your sweeps", icon=":material/tune:")
    st.stop()
spec, progress, best = view.spec, view.progress, view.best
MINE = may_act(me(), view.owner)
DRAWN_AT = time.monotonic()


# Actions -----------------------------------------------------------------------------------------------------------
def stop_sweep() -> None:
    run_action(lambda: P.sweeps.stop(me(), SWEEP_ID), f"Stopping sweep {view.name}: no new trials, and the running "
               "ones stop.")


def extend_sweep() -> None:
    n = int(st.session_state.get("sweep_extend_n") or 0)
    run_action(lambda: P.sweeps.extend(me(), SWEEP_ID, n), f"Added {n} trials to sweep {view.name}.")


def submit_best() -> None:
    def submit() -> int:
        values = P.sweeps.best_values(me(), SWEEP_ID)
        return P.jobs.submit(me(), values, parent_id=best.job_id if best else None)

    job_id = run_action(submit, f"Submitted the best trial's values of {view.name} as a job.")
    if job_id is not None:
        st.session_state["_goto_job"] = job_id


# Header and progress -----------------------------------------------------------------------------------------------
st.title(f"Sweep {plain(view.name)}")
direction = "lowest" if spec.direction == "minimize" else "highest"
st.caption(f"{STATE_ICON.get(view.state, '')} {view.state.capitalize()} · #{view.id} · {plain(view.owner)} · started "
           f"{ago(view.created_at)} · {METHODS[spec.method]} over "
           f"{', '.join(plain(charts.param_column(n)) for n, p in spec.params.items() if p.kind != 'fixed') or '–'}"
           f" · objective: the {direction} {spec.aggregate} {plain(spec.objective)} · early stopping: "
           f"{EARLY[spec.early_stopping].lower()}")
if view.stop_reason:
    (st.info if view.state in ("done", "stopping", "stopped") else st.warning)(plain(view.stop_reason))

cols = st.columns(5)
for col, (label, n) in zip(cols, (("Done", progress.done), ("Running", progress.running),
                                  ("Pruned", progress.pruned), ("Failed", progress.failed),
                                  ("Left", progress.left)), strict=True):
    col.metric(label, n)
ended = progress.done + progress.pruned + progress.failed + progress.stopped
stopped = f", {progress.stopped} stopped with the sweep" if progress.stopped else ""
st.progress(min(1.0, ended / spec.budget) if spec.budget else 0.0,
            text=f"{ended} of {spec.budget} trials ended{stopped} ({spec.parallel} at once)")

with st.container(border=True, key="sweep_best"):
    if best is None:
        st.markdown("**Best trial so far:** none yet (a trial counts once it has finished with a value).")
    else:
        values = " · ".join(f"{plain(charts.param_column(n))} = {plain(f'{v:.4g}' if isinstance(v, float) else v)}"
                            for n, v in best.params.items())
        st.markdown(f"**Best trial so far: #{best.number}**, {plain(spec.objective)} = **{metric_text(best.value)}**"
                    f"  \n{values}")
        if best.job_id is not None:
            st.page_link(JOB_PAGE, label=f"Open its job #{best.job_id}", icon=":material/open_in_new:",
                         query_params={"id": str(best.job_id)})

with st.container(horizontal=True, vertical_alignment="bottom", key="sweep_actions"):
    if MINE and view.state == "running":
        st.button("Stop sweep", key="sweep_stop", icon=":material/stop:", on_click=stop_sweep)
    if MINE and view.state != "stopping":
        st.number_input("Trials to add", key="sweep_extend_n", value=5, step=1, min_value=1, max_value=MAX_TRIALS,
                        width=130)
        st.button("Extend", key="sweep_extend", icon=":material/add:", on_click=extend_sweep,
                  help="Adds these trials to the budget; a finished sweep runs again.")
    st.page_link(SUBMIT_PAGE, label="Clone with edits", icon=":material/content_copy:",
                 query_params={"sweep": str(SWEEP_ID)})
    if best is not None and best.job_id is not None:
        st.button("Submit the best as a job", key="sweep_submit_best", icon=":material/rocket_launch:",
                  type="primary", on_click=submit_best, help="A single job with the best trial's values.")
        st.page_link(SUBMIT_PAGE, label="Edit the best first", icon=":material/edit:",
                     query_params={"clone": str(best.job_id)})
    st.page_link("pages/history.py", label="Trials in History", icon=":material/history:",
                 query_params={"sweep": str(SWEEP_ID)})

# Charts -------------------------------------------------------------------------------------------------------------
if not trials:
    st.info("No trial has started yet: the first ones start within a few seconds.")
else:
    left, right = st.columns(2)
    left.plotly_chart(charts.objective_figure(spec, trials), key="sweep_objective", width="stretch")
    right.plotly_chart(charts.curves_figure(spec, trials, best.number if best else None), key="sweep_curves",
                       width="stretch")
    par, words = charts.parallel(spec, trials)
    imp_col, par_col = st.columns([1, 3])
    with par_col:
        st.markdown("**Parameters against the objective**")
        if par is None:
            st.caption("Shown once two trials have finished with a value and a parameter varies.")
        else:
            st.plotly_chart(par, key="sweep_parallel", width="stretch")
            st.caption("One line per finished trial, dark blue the best objective, light orange the worst."
                       + (f" Not drawn (not numbers): {plain(', '.join(words))}." if words else ""))
    with imp_col:
        st.markdown("**Parameter importances**")
        importances = P.sweeps.importances(me(), SWEEP_ID, trials)
        if not importances:
            st.caption("Shown once a few trials have finished and two or more parameters vary.")
        else:
            st.dataframe(pd.DataFrame({"parameter": [charts.param_column(n) for n in importances],
                                       "importance": list(importances.values())}),
                         hide_index=True, key="sweep_importances",
                         column_config={"importance": st.column_config.ProgressColumn(format="%.0f%%", min_value=0,
                                                                                      max_value=1)})
            st.caption("Each parameter's share of the objective's variation (Optuna's PED-ANOVA).")

    st.subheader(f"Trials ({len(trials)})")
    order = st.segmented_control("Order", ["Best first", "Newest first", "By number"], key="sweep_order",
                                 default="Best first", required=True, label_visibility="collapsed")
    frame = pd.DataFrame(charts.table_rows(spec, trials))
    objective = charts.objective_column(spec)
    if order == "Best first":
        frame = frame.sort_values(objective, ascending=spec.direction == "minimize", na_position="last", kind="stable")
    elif order == "Newest first":
        frame = frame.iloc[::-1]
    st.dataframe(frame, key="sweep_trials", hide_index=True, width="stretch", height=min(38 + 35 * len(frame), 600),
                 column_config={"trial": st.column_config.NumberColumn(width=50, format="%d"),
                                objective: st.column_config.NumberColumn(format="%.4g"),
                                "job": st.column_config.LinkColumn(display_text=r"id=(\d+)", width=60,
                                                                   help="Opens the trial's job")})
    st.caption("Click a column's name to sort by it.")


@st.fragment(run_every=REFRESH if not view.finished else None)
def live() -> None:
    """A running sweep's page redraws when a trial starts or ends, or the sweep does (charts stay out of the timer)."""
    if view.finished:
        return
    # The counts alone (a trial that ends changes them, and so maybe the best): no trial's values or steps.
    if P.sweeps.progress(me(), SWEEP_ID) != (view.state, progress) or \
            time.monotonic() - DRAWN_AT > RELATIVE_TIMES_REFRESH:
        st.rerun(scope="app")


live()
