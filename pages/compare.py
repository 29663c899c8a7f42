"""Compare 2–10 runs: metric curves overlaid, the parameters that differ, final metrics side by side, and a
parallel-coordinates view of parameters against a final metric. The selection lives in the URL."""

from __future__ import annotations

from typing import Any

import streamlit as st

from pages.common import JOB_PAGE, STATUS_ICON, chart_text, me, metric_text, plain, portal
from services.jobs import MAX_COMPARED

P = portal()
USER = me()
PARAMS = ["learning_rate", "epochs", "batch_size", "gpus", "nodes", "mixed_precision", "gradient_checkpointing",
          "checkpoint_every", "max_runtime_hours", "dataset_path", "extra_args", "script"]


def parse_ids(raw: str | None) -> list[int]:
    ids: list[int] = []
    for part in (raw or "").split(","):
        if part.strip().isdigit():
            ids.append(int(part))
    return ids


st.title("Compare runs")
chosen = P.jobs.compare(USER, parse_ids(st.query_params.get("ids")))
recent = P.jobs.list_jobs(limit=200, owner=P.jobs.visible_owner(USER, everyone=True))
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

# Final metrics side by side ------------------------------------------------------------------------
import pandas as pd  # noqa: E402 - only this page pays for pandas and Plotly
import plotly.graph_objects as go  # noqa: E402

st.subheader("Runs")
cols = st.columns(len(jobs))
for col, j in zip(cols, jobs, strict=True):
    col.page_link(JOB_PAGE, label=f"**{plain(j.name)}**", query_params={"id": str(j.id)})
    col.caption(f"{STATUS_ICON[j.status]} {j.status.value} · #{j.id} · {plain(j.owner)}")

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
params = pd.DataFrame({f"{j.name} #{j.id}": {p: j.request.get(p) for p in PARAMS} for j in jobs})
differs = params.astype(str).nunique(axis=1) > 1


def highlight(row: pd.Series) -> list[str]:
    return ["background-color: rgba(255, 196, 0, 0.25)" if differs[row.name] else "" for _ in row]


only_diff = st.toggle("Only parameters that differ", key="cmp_only_diff", value=False)
shown = params[differs] if only_diff else params
st.dataframe(shown.astype(str).style.apply(highlight, axis=1), width="stretch")
st.caption(f"{int(differs.sum())} of {len(PARAMS)} parameters differ (highlighted).")

# Curves overlaid per metric ------------------------------------------------------------------------
st.subheader("Curves")
by = st.segmented_control("X axis", ["step", "time"], key="cmp_x", default="step", required=True,
                          format_func=lambda v: "Step / epoch" if v == "step" else "Time since start")
series = P.jobs.compare_series(jobs, by=by or "step")
if not series:
    st.info("None of these runs has metrics yet.")
names = sorted(series, key=lambda n: (n not in ("loss", "train_loss", "val_loss", "eval_loss"), n))
grid = st.columns(2)
for i, name in enumerate(names):
    fig = go.Figure()
    axis = "step"
    for j in jobs:
        ser = series[name].get(j.id)
        if ser is None:
            continue
        axis = ser.axis
        fig.add_trace(go.Scatter(x=ser.x, y=ser.y, mode="lines+markers" if len(ser.x) < 50 else "lines",
                                 name=chart_text(f"{j.name} #{j.id}")))
    fig.update_layout(title=chart_text(name), height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10}, xaxis_title=axis,
                      legend={"orientation": "h"})
    grid[i % 2].plotly_chart(fig, key=f"cmp-{name}", width="stretch")

# Parallel coordinates: parameters against a chosen final metric ---------------------------------------
numeric = [p for p in PARAMS if all(isinstance(j.request.get(p), int | float) for j in jobs)]
if finals and numeric:
    st.subheader("Parameters against a result")
    target = st.selectbox("Final metric", sorted(finals), key="cmp_target",
                          index=sorted(finals).index("loss") if "loss" in finals else 0)
    values = [(j.final_metrics or j.latest_metrics).get(target) for j in jobs]
    dims = [{"label": p, "values": [float(j.request[p]) for j in jobs]} for p in numeric]
    dims.append({"label": target, "values": [v if v is not None else float("nan") for v in values]})
    fig = go.Figure(go.Parcoords(line={"color": [v if v is not None else 0 for v in values],
                                       "colorscale": "Viridis", "showscale": True}, dimensions=dims))
    fig.update_layout(height=380, margin={"l": 60, "r": 60, "t": 40, "b": 20})
    st.plotly_chart(fig, key="cmp-parcoords", width="stretch")
