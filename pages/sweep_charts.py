"""The sweep page's charts (issue 19), readable at hundreds of trials: the objective against trial number with the
best so far, every trial's objective curve overlaid (each downsampled), parallel coordinates of the parameters
against the objective (pages/charts.py's SVG lines: the portal's CSP refuses Plotly's WebGL Parcoords), and the
trials' table rows."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from pages.charts import PALETTE, Line, figure, parallel_figure
from pages.common import chart_text
from services.downsample import lttb
from services.job_charts import Series
from services.parallel_coords import parallel_axes
from services.sweep_spec import FORM_PARAMS

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from services.sweep_spec import SweepSpec
    from services.sweeps import TrialView

# Points kept of each trial's curve: 200 trials stay 20,000 points in all, whatever their length.
CURVE_POINTS = 100
# Past this many lines, markers and full-strength colours would hide the shape of the search.
MANY = 20
BEST = "#e15759"  # the best trial, on every chart
DONE, STOPPED = "rgba(78,121,167,0.45)", "rgba(150,150,150,0.45)"  # a finished trial; a pruned or failed one
GOOD, BAD = (31, 78, 121), (242, 196, 139)  # parallel lines from the best objective (dark blue) to the worst
SHADES = 8  # of the parallel lines, best to worst: one trace each
STATE_LABEL = {"waiting": "waiting", "running": "running", "complete": "done", "pruned": "pruned (stopped early)",
               "failed": "failed", "stopped": "stopped"}


def scored(trials: list[TrialView]) -> list[TrialView]:
    return [t for t in trials if t.state == "complete" and t.value is not None and math.isfinite(t.value)]


def objective_figure(spec: SweepSpec, trials: list[TrialView]) -> go.Figure:
    """Each finished trial's objective by its number, pruned ones at their last report, and the best so far."""
    import plotly.graph_objects as go

    name = chart_text(spec.objective)
    done = scored(trials)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[t.number for t in done], y=[t.value for t in done], mode="markers", name="done",
                             marker={"color": PALETTE[0], "size": 7},
                             hovertemplate=f"trial %{{x}}: {name} %{{y:.4g}}<extra></extra>"))
    pruned = [t for t in trials if t.state == "pruned" and t.intermediate]
    fig.add_trace(go.Scatter(x=[t.number for t in pruned], y=[t.intermediate[max(t.intermediate)] for t in pruned],
                             mode="markers", name="pruned", marker={"color": "#999", "symbol": "x", "size": 7},
                             hovertemplate=f"trial %{{x}} (pruned): {name} %{{y:.4g}} at its last step<extra></extra>"))
    pick = min if spec.direction == "minimize" else max
    best: list[float] = []
    for t in done:
        best.append(t.value if not best else pick(best[-1], t.value))  # type: ignore[type-var, arg-type]
    fig.add_trace(go.Scatter(x=[t.number for t in done], y=best, mode="lines", name="best so far",
                             line={"color": BEST, "shape": "hv"}, hoverinfo="skip"))
    fig.update_layout(title={"text": f"{name} by trial ({spec.aggregate})"}, height=340, xaxis_title="trial",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h", "y": -0.25})
    return fig


def _joined(trials: list[TrialView]) -> tuple[Series, np.ndarray]:
    """Several trials' curves as one line broken by gaps (NaN), and the trial number of each point: one Plotly
    trace for many trials (a trace each cost about 1 ms to build and as much to send, per trial, per redraw)."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    numbers: list[np.ndarray] = []
    for t in trials:
        steps = sorted(t.intermediate)
        x, y = lttb(np.asarray(steps, dtype=np.float64),
                    np.asarray([t.intermediate[s] for s in steps], dtype=np.float64), CURVE_POINTS)
        xs += [x, np.array([np.nan])]
        ys += [y, np.array([np.nan])]
        numbers.append(np.full(len(x) + 1, t.number, dtype=np.int32))
    if not xs:
        return Series(np.zeros(0), np.zeros(0), "step"), np.zeros(0)
    return Series(np.concatenate(xs), np.concatenate(ys), "step"), np.concatenate(numbers)


def curves_figure(spec: SweepSpec, trials: list[TrialView], best: int | None) -> go.Figure:
    """Every trial's objective by step, as reported to the search (what early stopping compares): the finished and
    running ones, the pruned and failed ones fainter, the best on top."""
    with_curve = [t for t in trials if t.intermediate]
    groups = (("finished or running", DONE, [t for t in with_curve if t.number != best and t.state in
                                             ("complete", "running", "waiting")]),
              ("pruned, failed or stopped", STOPPED, [t for t in with_curve if t.number != best and t.state in
                                                      ("pruned", "failed", "stopped")]),
              (f"best: trial {best}", BEST, [t for t in with_curve if t.number == best]))
    lines, numbers = [], []
    for label, colour, members in groups:
        if members:
            series, of = _joined(members)
            lines.append(Line(label, series, colour))
            numbers.append(of)
    fig, _ = figure(f"{spec.objective} of every trial", lines, "step", legend=True)
    for trace, of in zip(fig.data, numbers, strict=True):
        trace.customdata = of
        trace.hovertemplate = "trial %{customdata}, step %{x}: %{y:.4g}<extra></extra>"
    if len(with_curve) > MANY:
        fig.update_traces(mode="lines", line_width=1)
        fig.update_traces(line_width=3, selector={"name": chart_text(f"best: trial {best}")})
    return fig


def _rgb(share: float) -> str:
    r, g, b = (round(lo + (hi - lo) * share) for lo, hi in zip(GOOD, BAD, strict=True))
    return f"rgb({r},{g},{b})"


def parallel(spec: SweepSpec, trials: list[TrialView]) -> tuple[go.Figure | None, list[str]]:
    """Parallel coordinates of the varied numeric parameters and the objective over the finished trials, coloured
    from the best objective to the worst; and the parameters left out (words, such as an optimiser's name)."""
    import plotly.graph_objects as go

    done = scored(trials)
    varied = [n for n, p in spec.params.items() if p.kind != "fixed"]
    numeric = [n for n in varied if all(isinstance(t.params.get(n), int | float) for t in done)]
    left_out = [n for n in varied if n not in numeric]
    if len(done) < 2 or not numeric:
        return None, left_out
    columns: dict[str, list[float | None]] = {n: [float(t.params[n]) for t in done] for n in numeric}
    values = [float(t.value) for t in done]  # type: ignore[arg-type]
    columns[spec.objective] = list(values)
    axes = parallel_axes(columns)
    fig = parallel_figure(axes, [])  # the axes, their names and ends; the trials' lines are drawn here
    lo, hi = min(values), max(values)
    k = len(axes)
    # Worst first, best last (on top); trials of one shade in one trace, each a line broken from the next by a gap.
    ranked = sorted(range(len(done)), key=lambda i: values[i], reverse=spec.direction == "minimize")
    for band in range(SHADES):
        members = [i for i in ranked if _band(values[i], lo, hi, spec.direction) == band]
        if not members:
            continue
        x = [j for _ in members for j in (*range(k), None)]
        y = [v for i in members for v in (*(a.scaled[i] for a in axes), None)]
        text = [f"trial {done[i].number}: " + ", ".join(f"{chart_text(a.label)} {a.values[i]:.4g}" for a in axes)
                for i in members for _ in range(k + 1)]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines" if len(done) > MANY else "lines+markers", text=text,
                                 line={"color": _rgb(1 - band / (SHADES - 1)), "width": 1 if len(done) > MANY else 2},
                                 hovertemplate="%{text}<extra></extra>", showlegend=False))
    fig.update_layout(showlegend=False, height=420, margin={"l": 30, "r": 30, "b": 30})
    return fig, left_out


def _band(value: float, lo: float, hi: float, direction: str) -> int:
    """The shade of a trial's line: SHADES - 1 for the best objective, 0 for the worst."""
    share = (value - lo) / (hi - lo) if hi > lo else 1.0
    good = 1 - share if direction == "minimize" else share
    return min(SHADES - 1, int(good * SHADES))


def objective_column(spec: SweepSpec) -> str:
    return f"{spec.objective} ({spec.aggregate})"


def param_column(name: str) -> str:
    """The form's parameters by name, extra arguments as the script sees them (no clash with the table's own)."""
    return name if name in FORM_PARAMS else f"--{name}"


def table_rows(spec: SweepSpec, trials: list[TrialView]) -> list[dict[str, Any]]:
    """A row per trial: its number, state, objective, parameters, attempts and job (a link with its name)."""
    varied = [n for n, p in spec.params.items() if p.kind != "fixed"] or list(spec.params)
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.number, "state": STATE_LABEL[t.state], objective_column(spec): t.value}
        row |= {param_column(n): v if isinstance(v := t.params.get(n), int | float) else str(v or "") for n in varied}
        row |= {"attempts": t.attempts, "job": f"/job?id={t.job_id}" if t.job_id is not None else None,
                "why": t.reason or ""}
        rows.append(row)
    return rows
