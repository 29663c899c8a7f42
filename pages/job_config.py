"""The job page's Config tab: what was submitted, the exact spec that ran, and the timeline."""

from __future__ import annotations

import streamlit as st

from pages.common import duration, money, now, plain, portal
from services.models import JobView


def config_tab(job: JobView) -> None:
    st.subheader("What was submitted")
    st.json(job.request)
    st.subheader("The exact spec that ran")
    st.json(job.spec or {"note": "The job never reached the backend."})
    st.subheader("Timeline")
    import pandas as pd

    events = portal().jobs.events(job.id)
    st.dataframe(pd.DataFrame(events, columns=["time", "status", "message"]), hide_index=True, width="stretch")
    runtime = job.runtime_seconds(now())
    st.caption(f"Runtime {duration(runtime)} · {job.gpus} GPU × {job.nodes} node · "
               f"{money(job.cost_per_hour)}/hour · owner {plain(job.owner)}")
