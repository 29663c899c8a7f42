"""The job page's metric charts: one chart per quantity (its training and validation series together), or one
line per rank for a multi-process job; smoothing and a log scale for all of them. Compare draws with the same
pieces (`Line`, `figure`, `draw`, `chart_options`, PALETTE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import streamlit as st

from pages.common import chart_text, portal
from services.metric_groups import group_metrics
from services.models import JobView
from services.smoothing import MAX_SMOOTHING, default_smoothing, ema, log_scale_problem

if TYPE_CHECKING:
    from collections.abc import Iterable

    import plotly.graph_objects as go
    from streamlit.delta_generator import DeltaGenerator

    from services.job_charts import Series

PRIMARY_SERIES = ("loss", "train_loss", "val_loss", "eval_loss", "accuracy", "acc", "val_acc", "val_accuracy")
# Tableau 10: ten colours told apart at a glance (Streamlit's own theme starts with two blues), one per run on
# Compare (MAX_COMPARED is 10) and per line here.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")
RAW_OPACITY = 0.3  # the raw line under a smoothed one: there, but faint
HEIGHT, LEGEND_ROW = 320, 22  # px; a legend row's height, below the x axis title
DASH_OF_ROLE = {"validation": "dash"}


@dataclass(frozen=True)
class ChartOptions:
    smoothing: float = 0.0  # TensorBoard's weight: 0 is off
    log_y: bool = False


@dataclass(frozen=True)
class Line:
    label: str  # the legend's text, as given (escaped when drawn)
    series: Series
    colour: str
    dash: str = "solid"


def chart_options(key: str, lengths: list[int]) -> ChartOptions:
    """The smoothing slider and the log-scale switch over a page's charts; smoothing starts on for noisy series."""
    st.session_state.setdefault(f"{key}_smoothing", default_smoothing(lengths))
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    smoothing = left.slider("Smoothing", 0.0, MAX_SMOOTHING, step=0.01, key=f"{key}_smoothing",
                            help="An exponential moving average of each line, as TensorBoard draws it (0 is off). "
                                 "The raw line stays, faint.")
    log_y = right.toggle("Log scale", key=f"{key}_log", help="The y axis in powers of ten.")
    return ChartOptions(smoothing, log_y)


def legend_layout(labels: list[str], columns: int = 2) -> tuple[dict, int]:
    """A legend laid out across the foot of the figure, under the x axis title, and the bottom margin it needs:
    in the plot area it covered the lines, on its default side it pushed the plot narrow, and placed by the plot's
    own height it sat on the axis title (issue 15, defect 14)."""
    # A chart is about 1/columns of a 1,000-px page; an entry about 7 px a character plus its swatch.
    width = 1000 / columns - 40
    rows, used = 1, 0.0
    for text in labels:
        entry = 7 * len(text) + 45
        if used and used + entry > width:
            rows, used = rows + 1, 0.0
        used += entry
    legend = {"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0, "xanchor": "left",
              "title_text": ""}
    return legend, 55 + LEGEND_ROW * rows


def figure(title: str, lines: list[Line], axis: str, options: ChartOptions = ChartOptions(),
           legend: bool = False, columns: int = 2) -> tuple[go.Figure, str | None]:
    """A chart of these lines with the options applied, and what to say under it (why the y axis is not a log one)."""
    import plotly.graph_objects as go  # only pages that draw charts pay for importing Plotly

    fig = go.Figure()
    for line in lines:
        ser, name = line.series, chart_text(line.label)
        style = {"color": line.colour, "dash": line.dash}
        mode = "lines+markers" if len(ser.x) < 50 else "lines"
        if options.smoothing > 0:
            fig.add_trace(go.Scatter(x=ser.x, y=ser.y, mode=mode, name=f"{name} (raw)", line=style,
                                     opacity=RAW_OPACITY, legendgroup=name, showlegend=False))
            # A downsampled series is smoothed over its buckets' means: its kept points are extremes.
            basis = ser.mean if ser.mean is not None else ser.y
            fig.add_trace(go.Scatter(x=ser.x, y=ema(basis, options.smoothing), mode="lines", name=name, line=style,
                                     legendgroup=name))
        else:
            fig.add_trace(go.Scatter(x=ser.x, y=ser.y, mode=mode, name=name, line=style))
    note = log_scale_problem([line.series.y for line in lines]) if options.log_y else None
    layout: dict = {"title": {"text": chart_text(title)}, "height": HEIGHT, "xaxis_title": axis,
                    "margin": {"l": 10, "r": 10, "t": 40, "b": 10}}
    if legend:
        layout["legend"], layout["margin"]["b"] = legend_layout([line.label for line in lines], columns)
        layout["height"] = HEIGHT + layout["margin"]["b"] - 10
    else:
        layout["showlegend"] = False
    if options.log_y and note is None:
        layout["yaxis_type"] = "log"
    fig.update_layout(**layout)
    return fig, note


def draw(where: DeltaGenerator, title: str, lines: list[Line], axis: str, options: ChartOptions, key: str,
         legend: bool = False) -> None:
    fig, note = figure(title, lines, axis, options, legend)
    where.plotly_chart(fig, key=key, width="stretch")
    if note:
        where.caption(note)


def chart(name: str, lines: dict[str, Series], axis: str, legend: bool = False) -> go.Figure:
    """One chart of a series: one line, or one per rank (named, with a legend); no smoothing."""
    return figure(name, [Line(label, ser, PALETTE[i % len(PALETTE)]) for i, (label, ser) in enumerate(lines.items())],
                  axis, legend=legend)[0]


def primary_first(names: Iterable[str]) -> list[str]:
    """Loss and accuracy curves first, in PRIMARY_SERIES order, then the rest by name."""
    return sorted(names, key=lambda n: (n not in PRIMARY_SERIES, PRIMARY_SERIES.index(n)
                                        if n in PRIMARY_SERIES else 0, n))


def ranked_charts(job: JobView, ranks: list[int]) -> None:
    """A multi-process job (torchrun): every rank as its own line of one chart, with a rank filter."""
    shown = st.multiselect("Ranks", ranks, default=ranks, key="chart_ranks", format_func=lambda r: f"rank {r}")
    by_name = portal().jobs.rank_series(job.id, shown)
    if not by_name:
        st.info("Pick a rank to see its curves." if not shown else "No metrics from these ranks yet.")
        return
    options = chart_options("chart", [len(ser.x) for by_rank in by_name.values() for ser in by_rank.values()])
    cols = st.columns(2)
    for i, name in enumerate(primary_first(by_name)):
        by_rank = dict(sorted(by_name[name].items()))
        lines = [Line(f"rank {rank}", ser, PALETTE[rank % len(PALETTE)]) for rank, ser in by_rank.items()]
        draw(cols[i % 2], name, lines, lines[0].series.axis, options, f"chart-{name}", legend=True)


def _metric_charts(job: JobView) -> None:
    ranks = portal().jobs.metric_ranks(job.id)
    if ranks:
        ranked_charts(job, ranks)
        return
    series = portal().jobs.metric_series(job.id)
    if not series:
        st.info("No metrics yet. Print lines like `Epoch 3/10` and `Loss: 0.42`, or use "
                "`portal_metrics.log_metrics(loss=...)` (see docs/scripts.md).")
        return
    options = chart_options("chart", [len(ser.x) for ser in series.values()])
    if options.smoothing > 0:
        series = portal().jobs.with_means(job.id, series)
    groups = {g.title: g for g in group_metrics({n: series[n].axis for n in sorted(series)})}
    cols = st.columns(2)
    for i, title in enumerate(primary_first(groups)):
        members = groups[title].lines
        lines = [Line(label, series[name], PALETTE[k % len(PALETTE)], DASH_OF_ROLE.get(label, "solid"))
                 for k, (label, name) in enumerate(members.items())]
        draw(cols[i % 2], title, lines, lines[0].series.axis, options, f"chart-{title}", legend=len(lines) > 1)


# A running job's charts poll; a finished job's are drawn once.
live_metric_charts = st.fragment(run_every="5s")(_metric_charts)
still_metric_charts = st.fragment(_metric_charts)


def metric_charts(job: JobView) -> None:
    (live_metric_charts if job.is_active else still_metric_charts)(job)
