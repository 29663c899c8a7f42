"""The job page's metric charts: one chart per quantity (its training and validation series together), or one
line per rank for a multi-process job; smoothing and a log scale for all of them (pieces in pages/charts.py)."""

from __future__ import annotations

import streamlit as st

from pages.charts import DASH_OF_ROLE, PALETTE, Line, chart_options, draw, primary_first
from pages.charts import chart as chart  # the resource graphs draw with it
from pages.common import me, portal
from services.checkpoints import continued_series
from services.metric_groups import group_metrics
from services.models import JobView


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
    series = continued_series(portal().jobs, me(), job, series)  # a retry from a checkpoint: the parent's first
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
