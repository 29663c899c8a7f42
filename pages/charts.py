"""Chart pieces the job page and Compare share: the options over a page's charts (smoothing, log scale), a chart
of named lines with its legend under the x axis title, one palette, and Compare's parallel coordinates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import streamlit as st

from pages.common import chart_text
from services.smoothing import MAX_SMOOTHING, default_smoothing, ema, log_scale_problem

if TYPE_CHECKING:
    from collections.abc import Iterable

    import plotly.graph_objects as go
    from streamlit.delta_generator import DeltaGenerator

    from services.job_charts import Series
    from services.parallel_coords import ParallelAxis

PRIMARY_SERIES = ("loss", "train_loss", "val_loss", "eval_loss", "accuracy", "acc", "val_acc", "val_accuracy")
# Tableau 10: ten colours told apart at a glance (Streamlit's own theme starts with two blues), one per run on
# Compare (MAX_COMPARED is 10) and per line here.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")
LABEL_CHARS, LEGEND_CHARS = 14, 28  # a parallel axis title, a legend entry longer than this is cut, with "…"
RAW_OPACITY = 0.3  # the raw line under a smoothed one: there, but faint
HEIGHT, LEGEND_ROW = 320, 22  # px; a legend row's height, below the x axis title
DASH_OF_ROLE = {"validation": "dash"}


@dataclass(frozen=True)
class ChartOptions:
    smoothing: float = 0.0  # TensorBoard's weight: 0 is off
    log_y: bool = False


@dataclass(frozen=True)
class Line:
    label: str  # the line's name (legend and hover), as given (escaped when drawn)
    series: Series
    colour: str
    dash: str = "solid"
    # Lines of one group (a run's training and validation series on Compare) share one legend entry, the group's
    # name in their colour; the dash tells them apart (a key of the dashes is added to the legend).
    group: str | None = None


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


def short(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def figure(title: str, lines: list[Line], axis: str, options: ChartOptions = ChartOptions(),
           legend: bool = False, columns: int = 2) -> tuple[go.Figure, str | None]:
    """A chart of these lines with the options applied, and what to say under it (why the y axis is not a log one)."""
    import plotly.graph_objects as go  # only pages that draw charts pay for importing Plotly

    fig = go.Figure()
    entries: list[str] = []
    for line in lines:
        ser, name = line.series, chart_text(line.label)
        group = chart_text(line.group or line.label)
        shown = group not in entries
        if shown:
            entries.append(group)
        style = {"color": line.colour, "dash": line.dash}
        mode = "lines+markers" if len(ser.x) < 50 else "lines"
        # Hover names the line in full; the legend names its group, cut to fit.
        common = {"legendgroup": group, "hovertemplate": f"%{{x}}, %{{y:.4g}}<extra>{name}</extra>", "line": style}
        if options.smoothing > 0:
            fig.add_trace(go.Scatter(x=ser.x, y=ser.y, mode=mode, name=f"{name} (raw)", opacity=RAW_OPACITY,
                                     showlegend=False, **common))
            # A downsampled series is smoothed over its buckets' means: its kept points are extremes.
            basis = ser.mean if ser.mean is not None else ser.y
            mode = "lines"
            ys = ema(basis, options.smoothing)
        else:
            ys = ser.y
        fig.add_trace(go.Scatter(x=ser.x, y=ys, mode=mode, name=name, showlegend=shown,
                                 legendrank=len(entries), **common))
        if shown and line.group:
            fig.data[-1].name = short(group, LEGEND_CHARS)
    dashes = {line.dash for line in lines if line.group}
    if len(dashes) > 1:  # the key: what a dash means
        for role, dash in (("train", "solid"), *DASH_OF_ROLE.items()):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=role, line={"color": "#888", "dash": dash},
                                     legendrank=1000, hoverinfo="skip"))
            entries.append(role)
    note = log_scale_problem([line.series.y for line in lines]) if options.log_y else None
    layout: dict = {"title": {"text": chart_text(title)}, "height": HEIGHT, "xaxis_title": axis,
                    "margin": {"l": 10, "r": 10, "t": 40, "b": 10}}
    if legend:
        layout["legend"], layout["margin"]["b"] = legend_layout([short(e, LEGEND_CHARS) for e in entries], columns)
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


def parallel_figure(axes: list[ParallelAxis], runs: list[tuple[str, str]]) -> go.Figure:
    """Parallel coordinates as SVG lines: an axis per column (its lowest and highest values at its ends, its name
    above, angled when many would crowd), each run (label, colour) a line across them, named in the legend."""
    import plotly.graph_objects as go

    k = len(axes)
    angled = k > 5
    fig = go.Figure()
    for i, (label, colour) in enumerate(runs):
        name = chart_text(short(label, LEGEND_CHARS))
        fig.add_trace(go.Scatter(
            x=list(range(k)), y=[a.scaled[i] for a in axes], mode="lines+markers", name=name,
            line={"color": colour, "width": 2}, customdata=[f"{a.values[i]:.4g}" for a in axes],
            text=[chart_text(a.label) for a in axes], hovertemplate=f"%{{text}}: %{{customdata}}<extra>{name}</extra>"))
    notes = []
    for j, a in enumerate(axes):
        title = chart_text(short(a.label, LABEL_CHARS))
        # The ends' values just outside the axis (above its top, below its foot), clear of the runs' lines.
        notes += [{"x": j, "y": 1, "yshift": 22, "text": f"<b>{title}</b>", "textangle": -25 if angled else 0,
                   "xanchor": "left" if angled else "center", "yanchor": "bottom"},
                  {"x": j, "y": 1, "yshift": 4, "text": a.high + (" (log)" if a.log else ""), "yanchor": "bottom"},
                  {"x": j, "y": 0, "yshift": -4, "text": a.low, "yanchor": "top"}]
    legend, bottom = legend_layout([short(label, LEGEND_CHARS) for label, _ in runs], columns=1)
    fig.update_layout(
        height=300 + bottom, legend=legend, margin={"l": 30, "r": 30, "t": 110 if angled else 70, "b": bottom + 20},
        xaxis={"visible": False, "range": [-0.3, k - 1 + 0.3], "fixedrange": True},
        yaxis={"visible": False, "range": [-0.03, 1.03], "fixedrange": True},
        shapes=[{"type": "line", "x0": j, "x1": j, "y0": 0, "y1": 1, "line": {"color": "#888", "width": 1}}
                for j in range(k)],
        annotations=[{"showarrow": False, "font": {"size": 12}, **n} for n in notes])
    return fig
