"""The job page's checkpoints: each "Save checkpoint" with when it was asked for, delivered and written, and the
checkpoints the job wrote (its checkpoints/ folder), each with "Retry from checkpoint"."""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from pages.common import can_act, flash, me, plain, portal, run_action
from services.checkpoints import CheckpointService, Forbidden, RequestView
from services.models import JobView

SHOWN_REQUESTS = 3


def _service() -> CheckpointService:
    return CheckpointService(portal().jobs)


def _at(when: datetime | None) -> str:
    return f"{when:%H:%M:%S}" if when else ""


def request_line(r: RequestView) -> str:
    """One request in words: asked, delivered (the signal sent / the pods annotated), written (the file seen)."""
    parts = [f"Checkpoint asked for at {_at(r.requested_at)} UTC by {r.requested_by}"]
    if r.error:
        return parts[0] + f"; not delivered: {r.error}"
    parts.append(f"delivered at {_at(r.delivered_at)}" if r.delivered_at else "not delivered yet")
    if r.written_at:
        parts.append(f"written at {_at(r.written_at)} ({r.written_name})")
    elif r.delivered_at:
        parts.append("not written yet")
    return " · ".join(parts)


def save_checkpoint(job: JobView) -> None:
    done = ("Checkpoint requested: the job's pods carry the request now, and the script gets SIGUSR1 when the "
            "kubelet next refreshes the pod (within about a minute)."
            if portal().jobs.backend.name == "kubernetes" else "Checkpoint requested: the script saves it shortly.")
    try:
        run_action(lambda: _service().request(me(), job.id), done)
    except Forbidden as exc:
        flash(str(exc), "error")


def requests_strip(job: JobView) -> None:
    """The latest requests, redrawn while the job runs (a checkpoint appears in its own time)."""
    @st.fragment(run_every="3s" if job.is_active else None)
    def strip() -> None:
        requests = _service().requests(me(), job.id)[:SHOWN_REQUESTS]
        for r in requests:
            st.caption(plain(request_line(r)))

    strip()


def retry_from(job: JobView, name: str) -> None:
    try:
        new_id = run_action(lambda: _service().retry_from(me(), job.id, name),
                            f"Retried {job.name} from its checkpoint {name}.")
    except Forbidden as exc:
        flash(str(exc), "error")
        return
    if new_id is not None:
        st.session_state["_goto_job"] = new_id


def checkpoints_section(job: JobView) -> None:
    checkpoints = _service().checkpoints(me(), job.id)
    if not checkpoints:
        return
    st.subheader("Checkpoints", anchor=False)
    for i, c in enumerate(reversed(checkpoints)):  # newest first
        row = st.container(horizontal=True, gap="small", vertical_alignment="center")
        what = f"{c.files:,} files, " if c.files > 1 else ""
        # A name the job chose: in a code span nothing is Markdown (no backtick or line break can close it).
        name = c.name.replace("`", "'").replace("\r", " ").replace("\n", " ")
        row.markdown(f"`{name}` · {what}{c.size:,} bytes · {c.modified:%Y-%m-%d %H:%M:%S} UTC")
        if can_act(job) and not job.is_active:
            row.button("Retry from checkpoint", key=f"resume_{i}", icon=":material/restore:", on_click=retry_from,
                       args=(job, c.name), help="A new job, a retry of this one, that gets this checkpoint's path "
                       "as --resume-from and PORTAL_RESUME_FROM.")
    st.divider()
