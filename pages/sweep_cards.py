"""The dashboard's cards with a sweep's trials grouped under their sweep (issue 19): one collapsed box per sweep,
where its first trial would be, under the sweep's name, that opens onto the trials' ordinary cards and links to the
sweep's page."""

from __future__ import annotations

from itertools import groupby

import streamlit as st

from pages.common import STATUS_ICON, job_card, me, plain, portal
from services.models import JobView

SWEEP_PAGE = "pages/sweep.py"


def cards(jobs: list[JobView], key_prefix: str) -> None:
    """The jobs' cards in their order; the trials of one sweep, wherever they fall, in one box at the first one."""
    trials: dict[int, list[JobView]] = {}
    for job in jobs:
        if job.sweep_id is not None:
            trials.setdefault(job.sweep_id, []).append(job)
    names = portal().sweeps.names(me(), trials) if trials else {}  # one query for the section's sweeps
    drawn: set[int] = set()
    for job in jobs:
        if job.sweep_id is None:
            job_card(job, key_prefix=key_prefix)
        elif job.sweep_id not in drawn:
            drawn.add(job.sweep_id)
            group(job.sweep_id, names.get(job.sweep_id, f"#{job.sweep_id}"), trials[job.sweep_id], key_prefix)


def group(sweep_id: int, name: str, trials: list[JobView], key_prefix: str) -> None:
    counts = ", ".join(f"{len(list(g))} {STATUS_ICON[status]}" for status, g in
                       groupby(sorted(trials, key=lambda j: j.status.value), key=lambda j: j.status))
    label = (f"Sweep **{plain(name)}** · {len(trials)} trial{'s' if len(trials) != 1 else ''} "
             f"here ({counts})")
    with st.expander(label, icon=":material/tune:", expanded=False, key=f"{key_prefix}-sweep-{sweep_id}"):
        st.page_link(SWEEP_PAGE, label="Open the sweep: progress, best trial, charts", icon=":material/open_in_new:",
                     query_params={"id": str(sweep_id)})
        for job in trials:
            job_card(job, key_prefix=key_prefix)
