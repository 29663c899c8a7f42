"""The job page's resource graphs: what the job's GPUs did (utilisation and memory over time)."""

from __future__ import annotations

import streamlit as st

from pages.common import chart_text, portal
from pages.job_charts import chart
from services.models import JobView


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
    cols = st.columns(2)
    for i, (name, ser) in enumerate(series.items()):
        cols[i % 2].plotly_chart(chart(name, {chart_text(name): ser}, "seconds since start"), key=f"gpu-{i}",
                                 width="stretch")


live_gpu_charts = st.fragment(run_every="15s")(_gpu_charts)
still_gpu_charts = st.fragment(_gpu_charts)


def resource_charts(job: JobView) -> None:
    (live_gpu_charts if job.is_active else still_gpu_charts)(job)
