"""Queues: each queue's GPUs, what runs in it and who waits, in the order they start (and why, and until when)."""

from __future__ import annotations

import streamlit as st

from pages.common import me, plain, portal
from services import queues
from services.queue_model import PRIORITIES

P = portal()
USER = me()

st.title("Queues")
st.caption("Jobs that need GPUs others hold wait here and start in priority order (" + ", ".join(PRIORITIES)
           + "), then in the order they were submitted. Others' jobs are named as far as you may see them.")

views = queues.queue_views(P.jobs, USER)
if not views:
    st.info("This portal's backend does not queue jobs itself: jobs are handed to the cluster as they are "
            "submitted.")
for view in views:
    q = view.summary
    with st.container(border=True, key=f"queue-{q.name}"):
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
            place = f"**{status.position}.**" if status else "–"  # bold: "1. x" alone would render as a list
            name = (f"[{plain(line.name)}](/job?id={line.id}) · {plain(line.owner or '')}" if line.visible
                    else plain(line.name))
            text = f"{place} {name} · #{line.id} · {line.gpus} GPU{'s' if line.gpus != 1 else ''} · {line.priority}"
            st.markdown(text)
            if status is not None:
                why = f"{plain(status.blocker)} · " if line.visible else ""
                st.caption(f"{why}Estimated start: {queues.estimate_text(status)}")
        if view.running:
            with st.expander(f"Running ({len(view.running)})"):
                for line in view.running:
                    name = f"[{plain(line.name)}](/job?id={line.id})" if line.visible else plain(line.name)
                    st.markdown(f"{name} · #{line.id} · {line.gpus} GPU{'s' if line.gpus != 1 else ''}")
