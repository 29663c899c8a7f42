"""Queues: each queue's GPUs, what runs in it and who waits, in the order they start (and why, and until when)."""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from pages.common import JOB_PAGE, me, plain, portal
from services import queues
from services.queue_model import PRIORITIES

P = portal()
USER = me()

st.title("Queues")
st.caption("Jobs that need GPUs others hold wait here and start by priority (" + ", then ".join(reversed(PRIORITIES))
           + "), then in the order they were submitted. Others' jobs are named as far as you may see them.")


def job_line(row: DeltaGenerator, line: queues.QueueLine, *more: str) -> None:
    """Name (a link to the job's page, for a job the viewer may see), owner, id and GPUs in one row."""
    facts = [plain(line.owner)] if line.owner else []
    facts += [f"#{line.id}", f"{line.gpus} GPU{'s' if line.gpus != 1 else ''}", *more]
    if line.visible:
        row.page_link(JOB_PAGE, label=plain(line.name), query_params={"id": str(line.id)})
    else:
        facts.insert(0, plain(line.name))
    row.markdown(" · ".join(facts))


views = queues.queue_views(P.jobs, USER)
if not views:
    st.info("This portal's backend does not queue jobs itself: jobs are handed to the cluster as they are "
            "submitted.")
for n, view in enumerate(views):
    q = view.summary
    with st.container(border=True, key=f"queue-{n}"):
        st.subheader(q.name)
        if q.description:
            st.caption(plain(q.description))
        quota = f"{q.used_gpus} of {q.quota_gpus}" if q.quota_gpus is not None else str(q.used_gpus)
        row = st.container(horizontal=True, gap="medium")
        row.metric("GPUs in use", quota)
        row.metric("Running", len(view.running))
        row.metric("Waiting", len(view.waiting))
        if not view.waiting:
            st.write("Nobody is waiting: a job that fits starts at once.")
        for line in view.waiting:
            status = line.status
            with st.container(key=f"waiting-{line.id}"):
                row = st.container(horizontal=True, gap="small", vertical_alignment="center")
                placed = status is not None and q.name != queues.KEPT_BACK_QUEUE  # kept back: in no line yet
                row.markdown(f"**{status.position}.**" if placed else "–")  # bold: "1." alone would start a list
                job_line(row, line, line.priority)
                if status is not None:
                    why = f"{plain(status.blocker)} · " if line.visible else ""
                    st.caption(f"{why}Estimated start: {queues.estimate_text(status)}")
        if view.running:
            with st.expander(f"Running ({len(view.running)})"):
                for line in view.running:
                    job_line(st.container(horizontal=True, gap="small", vertical_alignment="center"), line)
