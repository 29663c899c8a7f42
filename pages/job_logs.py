"""The job page's Logs tab: the live log pane, with a rank selector for multi-node jobs."""

from __future__ import annotations

import streamlit as st

from pages.common import download_url, portal
from services.models import JobView

LOG_LINES = 500


def _log_pane(job: JobView, rank: int) -> None:
    active = job.is_active
    paused = active and st.session_state.get("log_paused", False)
    cache_key = f"_log_cache-{job.id}-{rank}"
    view = st.session_state.get(cache_key) if paused else None
    if view is None:
        view = portal().jobs.log_view(job.id, LOG_LINES, rank=rank)
        st.session_state[cache_key] = view
    lines, total = view
    shown = f"last {len(lines)} of {max(total, len(lines)):,} lines" if total > len(lines) else f"{len(lines)} lines"
    st.caption(("Paused · " if paused else ("Live · " if active else "")) + shown)
    with st.container(height=480, autoscroll=st.session_state.get("log_autoscroll", True), key="log_box"):
        st.code("\n".join(lines) if lines else "(no output yet)", language=None)


# A running job's pane polls; a finished one's is drawn once.
live_log_pane = st.fragment(run_every="2s")(_log_pane)
still_log_pane = st.fragment(_log_pane)


def logs_tab(job: JobView) -> None:
    active, P = job.is_active, portal()
    if not active and P.jobs.log_pruned(job.id):
        st.info(f"This job's log was deleted {P.settings.log_retention_days:g} days after it ended (the portal's "
                "retention setting). Its metrics, charts and files are still here.")
        return
    ranks = P.jobs.log_ranks(job.id)
    a, b, c, d = st.columns([1, 1, 1, 3])
    rank = c.selectbox("Rank", ranks, key="log_rank", format_func=lambda r: f"node {r}") if len(ranks) > 1 else 0
    a.toggle("Auto-scroll", value=True, key="log_autoscroll")
    b.toggle("Pause", value=False, key="log_paused", disabled=not active)
    log_url = download_url(job, "log", rank=rank)
    if log_url:
        d.link_button("Download full log", log_url, icon=":material/download:")
    (live_log_pane if active else still_log_pane)(job, rank)
