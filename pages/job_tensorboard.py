"""The "Open TensorBoard" button of the job page and of Compare: shown when the jobs wrote TensorBoard event files
and the user may read their files. It is a plain link to /tensorboard/<ids>/ (a new tab): the portal starts that
TensorBoard on the first request (services/tensorboard.py, api/tensorboard_proxy.py)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from pages.common import me, portal
from services.auth import may_download
from services.models import JobView
from services.tensorboard import url_for


@st.cache_data(ttl=15, show_spinner=False)
def _has_event_files(job_id: int, store: str) -> bool:
    # Cached a little: the walk of a job's output is bounded, but the page reruns on every click. `store` is part of
    # the key (no leading underscore, which Streamlit leaves out of it): job 1 of another data folder is another job.
    return portal().tensorboards.has_event_files(job_id)


def tensorboard_button(container: Any, jobs: list[JobView]) -> None:
    """The button in `container` (a row of actions), or nothing."""
    user = me()
    store = str(portal().settings.data_dir)
    # All of the set or nothing: the proxy refuses a set with one job whose files the user may not read.
    if not jobs or not all(may_download(user, j.owner) for j in jobs):
        return
    if not any(_has_event_files(j.id, store) for j in jobs):
        return
    container.link_button("Open TensorBoard", url_for([j.id for j in jobs]), icon=":material/monitoring:",
                          help="TensorBoard of this job's event files, in a new tab; stopped when unused."
                          if len(jobs) == 1 else "One TensorBoard with these runs' event files, in a new tab.")
