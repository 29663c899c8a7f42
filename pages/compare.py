"""Compare 2–10 runs: metric curves overlaid, the parameters that differ, final metrics side by side, and a
parallel-coordinates view of parameters against a final metric. The selection lives in the URL."""

from __future__ import annotations

from typing import Any

import streamlit as st

from pages.charts import DASH_OF_ROLE, PALETTE, Line, chart_options, draw, parallel_figure, primary_first
from pages.common import JOB_PAGE, STATUS_ICON, me, metric_text, plain, portal
from pages.job_tensorboard import tensorboard_button
from services.checkpoints import continued_compare
from services.jobs import MAX_COMPARED
from services.metric_groups import group_metrics
from services.parallel_coords import parallel_axes

P = portal()
USER = me()
PARAMS = ["learning_rate", "epochs", "batch_size", "gpus", "nodes", "mixed_precision", "gradient_checkpointing",
          "checkpoint_every", "max_runtime_hours", "dataset_path", "extra_args", "script"]
# The parallel-coordinates axes' titles: short, so that neighbours do not run into each other.
SHORT = {"learning_rate": "lr", "batch_size": "batch", "mixed_precision": "AMP", "gradient_checkpointing": "grad ckpt",
         "checkpoint_every": "ckpt every", "max_runtime_hours": "max hours"}


def parse_ids(raw: str | None) -> list[int]:
    ids: list[int] = []
    for part in (raw or "").split(","):
        if part.strip().isdigit():
            ids.append(int(part))
    return ids


st.title("Compare runs")
chosen = P.jobs.compare(USER, parse_ids(st.query_params.get("ids")))
LISTING = P.jobs.listing(USER, "all")  # hidden teams' jobs are not offered to non-members
recent = P.jobs.list_jobs(limit=200, owner=LISTING.owner, where=LISTING.where)
options = {j.id: j for j in [*chosen, *recent]}


def label(job_id: int) -> str:
    j = options[job_id]
    return f"{j.name} · #{j.id} · {j.owner}"


def on_pick() -> None:
    ids = st.session_state["cmp_pick"]
    st.query_params["ids"] = ",".join(str(i) for i in ids)


picked = st.multiselect("Runs to compare", list(options), default=[j.id for j in chosen], format_func=label,
                        key="cmp_pick", max_selections=MAX_COMPARED, on_change=on_pick,
                        help="Pick 2 to 10 runs; the address of this page keeps the selection, so it can be shared.")
jobs = [options[i] for i in picked]
if len(jobs) < 2:
    st.info("Pick at least two runs (or tick *Compare* on the dashboard and in the history).")
    st.stop()
# A run keeps its colour on every chart of the page.
COLOUR = {j.id: PALETTE[i % len(PALETTE)] for i, j in enumerate(jobs)}

# Final metrics side by side ------------------------------------------------------------------------
import pandas as pd  # noqa: E402 - only this page pays for pandas

st.subheader("Runs")
cols = st.columns(len(jobs))
for col, j in zip(cols, jobs, strict=True):
    col.page_link(JOB_PAGE, label=f"**{plain(j.name)}**", query_params={"id": str(j.id)})
    col.caption(f"{STATUS_ICON[j.status]} {j.status.value} · #{j.id} · {plain(j.owner)}")
tensorboard_button(st, jobs)

finals: dict[str, dict[str, Any]] = {}
for j in jobs:
    values = j.final_metrics or j.latest_metrics
    for name, value in values.items():
        finals.setdefault(name, {})[f"{j.name} #{j.id}"] = value
if finals:
    st.subheader("Final metrics")
    table = pd.DataFrame(finals).T
    st.dataframe(table.style.format(metric_text, na_rep="–"), width="stretch")

# Parameters, differences highlighted ---------------------------------------------------------------
st.subheader("Parameters")
# What each script printed once before its first step ("lr=0.02") is configuration too: a row per name.
printed = P.jobs.printed_at_start(jobs)
printed_names = sorted({k for values in printed.values() for k in values})


def printed_rows(job_id: int) -> dict[str, str | None]:
    mine = printed.get(job_id, {})
    return {f"{k} (printed at start)": metric_text(mine[k]) if k in mine else None for k in printed_names}


params = pd.DataFrame({f"{j.name} #{j.id}": {p: j.request.get(p) for p in PARAMS} | printed_rows(j.id)
                       for j in jobs})
differs = params.astype(str).nunique(axis=1) > 1


def highlight(row: pd.Series) -> list[str]:
    return ["background-color: rgba(255, 196, 0, 0.25)" if differs[row.name] else "" for _ in row]


only_diff = st.toggle("Only parameters that differ", key="cmp_only_diff", value=False)
shown = params[differs] if only_diff else params
st.dataframe(shown.astype(str).style.apply(highlight, axis=1), width="stretch")
st.caption(f"{int(differs.sum())} of {len(params)} parameters differ (highlighted).")

# Curves overlaid per metric ------------------------------------------------------------------------
st.subheader("Curves")
by = st.segmented_control("X axis", ["step", "time"], key="cmp_x", default="step", required=True,
                          format_func=lambda v: "Step / epoch" if v == "step" else "Time since start")
series = P.jobs.compare_series(jobs, by=by or "step")
if by != "time":  # a run retried from a checkpoint continues its parent's curve, as on its job page
    series = continued_compare(P.jobs, USER, jobs, series)
if not series:
    st.info("None of these runs has metrics yet.")
else:
    chosen_options = chart_options("cmp", [len(ser.x) for by_job in series.values() for ser in by_job.values()])
    groups = {g.title: g for g in group_metrics({n: next(iter(series[n].values())).axis for n in sorted(series)})}
    grid = st.columns(2)
    for i, title in enumerate(primary_first(groups)):
        members = groups[title].lines
        # Colour says the run, the dash its role (validation dashed): the legend names each run once, then the dashes.
        lines = [Line(f"{j.name} #{j.id}" + (f" · {role}" if len(members) > 1 else ""), series[name][j.id],
                      COLOUR[j.id], DASH_OF_ROLE.get(role, "solid"), group=f"{j.name} #{j.id}")
                 for j in jobs for role, name in members.items() if j.id in series[name]]
        draw(grid[i % 2], title, lines, lines[0].series.axis, chosen_options, f"cmp-{title}", legend=True)

# Parallel coordinates: parameters against a chosen final metric ---------------------------------------
numeric = [p for p in PARAMS if all(isinstance(j.request.get(p), int | float) for j in jobs)]
if finals and numeric:
    st.subheader("Parameters against a result")
    target = st.selectbox("Final metric", sorted(finals), key="cmp_target",
                          index=sorted(finals).index("loss") if "loss" in finals else 0)
    values = [(j.final_metrics or j.latest_metrics).get(target) for j in jobs]
    # Only the parameters that differ: an axis where every run has the same value says nothing and takes room.
    varied = [p for p in numeric if differs[p]] or numeric
    columns: dict[str, list[float | None]] = {SHORT.get(p, p): [float(j.request[p]) for j in jobs] for p in varied}
    # A metric named like a parameter's short label (a script that logs "lr") gets its own axis, not that one.
    columns[target if target not in columns else f"{target} (final)"] = values
    axes = parallel_axes(columns)
    fig = parallel_figure(axes, [(f"{j.name} #{j.id}", COLOUR[j.id]) for j in jobs])
    st.plotly_chart(fig, key="cmp-parcoords", width="stretch")
