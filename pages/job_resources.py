"""The job page's resource graphs: the job's CPU and memory (every job) and what its GPUs did (utilisation and
memory), over time."""

from __future__ import annotations

import streamlit as st

from pages.common import chart_text, portal
from pages.job_charts import chart
from services.jobs import Series
from services.models import JobView


def _two_columns(prefix: str, series: dict[str, Series]) -> None:
    cols = st.columns(2)
    for i, (name, ser) in enumerate(series.items()):
        cols[i % 2].plotly_chart(chart(name, {chart_text(name): ser}, "seconds since start"), key=f"{prefix}-{i}",
                                 width="stretch")


def _cpu_memory_charts(job: JobView) -> None:
    st.subheader("CPU and memory")
    sampler = portal().sync.resources
    if sampler.unavailable:
        st.info(sampler.unavailable)
        return
    series = portal().jobs.resource_series(job.id)
    if job.is_active and sampler.error:
        st.warning(f"CPU and memory could not be read: {sampler.error}")
    if not series:
        st.caption("No CPU or memory samples yet." if job.is_active
                   else "No CPU or memory samples were recorded for this job.")
        return
    _two_columns("resources", series)


def _gpu_charts(job: JobView) -> None:
    if job.gpus == 0:
        return
    st.subheader("GPUs")
    if portal().telemetry is None:
        st.info("GPU metrics not configured: your admin can connect Prometheus (DCGM exporter) on a cluster, "
                "or install the NVIDIA driver's NVML on this machine (docs/admin.md).")
        return
    series = portal().jobs.gpu_series(job.id)
    if not series:
        st.caption("No GPU samples yet." if job.is_active else "No GPU samples were recorded for this job.")
        return
    _two_columns("gpu", series)


def _resource_charts(job: JobView) -> None:
    _cpu_memory_charts(job)
    _gpu_charts(job)


live_resource_charts = st.fragment(run_every="15s")(_resource_charts)
still_resource_charts = st.fragment(_resource_charts)


def resource_charts(job: JobView) -> None:
    (live_resource_charts if job.is_active else still_resource_charts)(job)
