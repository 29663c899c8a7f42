"""The job page's Script tab: the script the job ran (its snapshot), and how it differs from the workspace file of
its name or from another job's script."""

from __future__ import annotations

import streamlit as st

from pages.common import me, plain, portal
from services import job_snapshots as snapshots
from services.models import JobView, NotFound

WORKSPACE = "The workspace file now"
OTHER_JOB = "Another job's script"
RECENT_JOBS = 30


def _show_diff(diff: snapshots.ScriptDiff) -> None:
    if diff.identical:
        st.success(f"Identical: {plain(diff.old)} and {plain(diff.new)}.", icon=":material/check:")
    else:
        st.code(diff.diff, language="diff")


def _other_job(job: JobView) -> int | None:
    """The job to compare with: an id typed in, else one of the user's recent jobs (None until there is one)."""
    recent = [j for j in portal().jobs.list_jobs(limit=RECENT_JOBS + 1, owner=me().name) if j.id != job.id]
    names = {j.id: j.name for j in recent[:RECENT_JOBS]}
    pick, typed = st.columns([3, 1])
    picked = pick.selectbox("One of your recent jobs", list(names), index=None, key="script_other",
                            format_func=lambda i: f"#{i} {names[i]}", placeholder="Pick a job")
    text = typed.text_input("or any job's id", key="script_other_id", placeholder="e.g. 12", max_chars=20).strip()
    if not text:
        return picked
    digits = text.removeprefix("#")
    if not (digits.isascii() and digits.isdigit() and len(digits) < 19 and int(digits) > 0):
        typed.error(f"{plain(repr(text))} is not a job id: type the job's number, for example 12.")
        return None
    return int(digits)


def script_tab(job: JobView) -> None:
    jobs = portal().jobs
    try:
        script = snapshots.script(jobs, me(), job.id)
    except NotFound as exc:
        st.info(plain(str(exc)))
        return
    st.caption(f"{plain(script.path)} as this job ran it: a copy taken when it was submitted, so later edits "
               "of the workspace file do not change it.")
    if script.truncated:
        st.warning(f"Only the first {snapshots.MAX_SCRIPT_BYTES // 1024:,} KiB are shown.")
    st.code(script.text, language="python", line_numbers=True)

    st.subheader("Compare")
    against = st.segmented_control("Compare with", [WORKSPACE, OTHER_JOB], default=WORKSPACE, key="script_against",
                                   label_visibility="collapsed")
    try:
        if against == WORKSPACE:
            _show_diff(snapshots.diff_with_workspace(jobs, me(), job.id))
        elif against == OTHER_JOB and (other := _other_job(job)) is not None:
            if other == job.id:
                st.info("That is this job: pick another one.")
            else:
                _show_diff(snapshots.diff_with_job(jobs, me(), job.id, other))
    except NotFound as exc:  # also: a job the viewer may not see reads as one that does not exist
        st.info(plain(str(exc)))
    except snapshots.NotComparable as exc:
        st.warning(plain(str(exc)))
