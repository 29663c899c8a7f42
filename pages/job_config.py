"""The job page's Config tab: what was submitted, the exact spec that ran, and the timeline."""

from __future__ import annotations

import streamlit as st

from pages.common import duration, metric_text, money, now, plain, portal
from services.models import JobView


def printed_text(printed: dict[str, float]) -> str:
    """"lr 0.02, epochs 12, bs 32": names the script chose, so shown as plain text."""
    return ", ".join(f"{plain(name)} {metric_text(value)}" for name, value in printed.items())


def config_tab(job: JobView) -> None:
    st.subheader("What was submitted")
    st.json(job.request)
    printed = portal().jobs.printed_at_start([job]).get(job.id)
    if printed:
        st.markdown(f"**Printed at start:** {printed_text(printed)}",
                    help="Values the script printed once, before its first step: its configuration, so they are "
                         "no charts or final metrics. A value printed again later becomes a chart.")
    st.subheader("The exact spec that ran")
    st.json(job.spec or {"note": "The job never reached the backend."})
    st.subheader("Timeline")
    import pandas as pd

    events = portal().jobs.events(job.id)
    st.dataframe(pd.DataFrame(events, columns=["time", "status", "message"]), hide_index=True, width="stretch")
    runtime = job.runtime_seconds(now())
    st.caption(f"Runtime {duration(runtime)} · {job.gpus} GPU × {job.nodes} node · "
               f"{money(job.cost_per_hour)}/hour · owner {plain(job.owner)}")
