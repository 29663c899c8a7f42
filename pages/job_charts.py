"""The job page's metric charts: one chart per metric, or one line per rank for a multi-process job."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from pages.common import chart_text, portal
from services.models import JobView

if TYPE_CHECKING:
    from collections.abc import Iterable

    import plotly.graph_objects as go

    from services.job_charts import Series

PRIMARY_SERIES = ("loss", "train_loss", "val_loss", "eval_loss", "accuracy", "acc", "val_acc", "val_accuracy")


def chart(name: str, lines: dict[str, Series], axis: str, legend: bool = False) -> go.Figure:
    """One chart of a series: one line, or one per rank (named, with a legend)."""
    import plotly.graph_objects as go  # only pages that draw charts pay for importing Plotly

    fig = go.Figure([go.Scatter(x=ser.x, y=ser.y, mode="lines+markers" if len(ser.x) < 50 else "lines", name=label)
                     for label, ser in lines.items()])
    fig.update_layout(title=chart_text(name), height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis_title=axis, **({"legend_title_text": ""} if legend else {"showlegend": False}))
    return fig


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
    cols = st.columns(2)
    for i, name in enumerate(primary_first(by_name)):
        by_rank = dict(sorted(by_name[name].items()))
        lines = {f"rank {rank}": ser for rank, ser in by_rank.items()}
        cols[i % 2].plotly_chart(chart(name, lines, next(iter(by_rank.values())).axis, legend=True),
                                 key=f"chart-{name}", width="stretch")


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
    cols = st.columns(2)
    for i, name in enumerate(primary_first(series)):
        ser = series[name]
        cols[i % 2].plotly_chart(chart(name, {chart_text(name): ser}, ser.axis), key=f"chart-{name}", width="stretch")


# A running job's charts poll; a finished job's are drawn once.
live_metric_charts = st.fragment(run_every="5s")(_metric_charts)
still_metric_charts = st.fragment(_metric_charts)


def metric_charts(job: JobView) -> None:
    (live_metric_charts if job.is_active else still_metric_charts)(job)
