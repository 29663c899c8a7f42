"""One job: status, live log, metric charts, the exact config, the files it wrote and the script it ran."""

from __future__ import annotations

import streamlit as st

from pages.common import (
    DASHBOARD_PAGE,
    JOB_PAGE,
    STATUS_ICON,
    ago,
    ask_delete,
    can_act,
    clone_job,
    delete_confirmation,
    duration,
    epoch_text,
    eta_text,
    goto_pending_job,
    idle_gpus,
    me,
    metric_text,
    money,
    now,
    plain,
    portal,
    retry_job,
    run_action,
    show_flash,
    stop_job,
)

# The tabs live in modules of their own. Streamlit imports those once per process while it reruns this script,
# so they ask for portal() when they draw, never at import.
from pages.job_charts import metric_charts
from pages.job_checkpoints import requests_strip, save_checkpoint
from pages.job_config import config_tab as config_tab_body
from pages.job_files import files_tab as files_tab_body
from pages.job_logs import logs_tab as logs_tab_body
from pages.job_registry import register_section
from pages.job_resources import resource_charts
from pages.job_script import script_tab as script_tab_body
from pages.job_tensorboard import tensorboard_button
from services import queues
from services.models import JobStatus, NotFound
from services.provenance import parent_of

P = portal()

goto_pending_job()
raw_id = st.query_params.get("id")
try:
    job = P.jobs.get(me(), int(raw_id or ""))
except (NotFound, ValueError):
    st.error(f"No job with id {plain(repr(raw_id))}." if raw_id else "No job selected.")
    st.page_link(DASHBOARD_PAGE, label="Back to the dashboard", icon=":material/arrow_back:")
    st.stop()

active = job.is_active
head, back = st.columns([5, 1])
head.title(plain(job.name), anchor=False)
back.page_link(DASHBOARD_PAGE, label="Back", icon=":material/arrow_back:")
show_flash()

# Provenance: the direct parent only (a clone of a clone names the clone it was made from).
if (parent := parent_of(P.jobs.get, me(), job)) is not None:
    came = {"clone": "Cloned from", "retry": "Retry of"}.get(parent.kind or "", "Made from")
    if parent.name is None:  # deleted, or not this viewer's to see: the same words, so ids tell nothing
        st.caption(f"{came} #{parent.id} (deleted)")
    else:
        st.page_link(JOB_PAGE, label=f"{came} #{parent.id} {plain(parent.name)}", icon=":material/call_split:",
                     query_params={"id": str(parent.id)})


@st.fragment(run_every="2s" if active else None)
def status_strip() -> None:
    j = P.jobs.get(me(), job.id)
    if j.status is not job.status:
        # A new status redraws the page: Save checkpoint once it runs; buttons, final metrics (no timer) once it ends.
        st.rerun(scope="app")
    # Rows that wrap a value onto the next line rather than cut it off ("🟢 Ru…" in a third of a narrow window).
    c = [st.container(horizontal=True, gap="medium", key="status_row_1")] * 3
    c[0].metric("Status", f"{STATUS_ICON[j.status]} {j.status.value}")
    c[1].metric("Progress", epoch_text(j))
    if j.is_active:
        c[2].metric("Started", ago(j.started_at))
    else:
        c[2].metric("Runtime", duration(j.runtime_seconds(now())) if j.started_at else "never started")
    c = [st.container(horizontal=True, gap="medium", key="status_row_2")] * 3
    if j.is_active:
        c[0].metric("ETA", eta_text(j))
    else:
        ended = j.finished_at or j.created_at
        c[0].metric("Ended", ago(ended), help=f"{ended:%Y-%m-%d %H:%M:%S} UTC")
    c[1].metric("Loss", metric_text(j.loss))
    if j.is_active:
        c[2].metric("Cost so far", money(j.cost(now())))
    else:
        c[2].metric("Cost", money(j.cost_total if j.cost_total is not None else j.cost(now())))
    waiting = queues.waiting_status(P.jobs, j)
    if waiting is not None:  # where it stands in its queue, why, and roughly when it starts
        st.info(plain(queues.waiting_line(waiting)), icon=":material/hourglass_top:")
    elif j.reason:
        (st.error if j.status in (JobStatus.FAILED, JobStatus.SUBMIT_FAILED) else st.info)(plain(j.reason))
    if j.progress is not None and j.is_active:
        st.progress(min(1.0, j.progress))


status_strip()


# A row sized by its buttons' labels (six equal columns cut "Save checkpoint" off).
actions = st.container(horizontal=True, gap="small")
if not can_act(job):
    actions.caption(f"{plain(job.owner)}'s job: read-only.")
elif active:
    actions.button("Stop job", key="stop", icon=":material/stop:", type="primary", on_click=stop_job, args=(job,))
    actions.button("Save checkpoint", key="checkpoint", icon=":material/save:", on_click=save_checkpoint, args=(job,),
                   disabled=job.status is not JobStatus.RUNNING,
                   help=None if job.status is JobStatus.RUNNING else "Possible once the job is running.")
else:
    actions.button("Retry", key="retry", icon=":material/replay:", on_click=retry_job, args=(job,))
    actions.button("Delete", key="delete", icon=":material/delete:", on_click=ask_delete, args=(job,))
actions.button("Clone", key="clone", icon=":material/content_copy:", on_click=clone_job, args=(job,))
tensorboard_button(actions, [job])
delete_confirmation(job, "job")
requests_strip(job)  # each Save checkpoint: asked, delivered, written
register_section(job)  # its registered model versions, and Register model once it has finished


def save_tags_note() -> None:
    tags = st.session_state.get("job_tags", "").replace(",", " ").split()
    run_action(lambda: P.history.set_tags_note(me(), job.id, tags, st.session_state.get("job_note", "")),
               "Saved the tags and note.")


if job.tags:
    st.markdown(" ".join(f":blue-badge[{plain(t)}]" for t in job.tags))
if can_act(job):
    with st.expander("Tags and note", expanded=False):
        st.text_input("Tags", value=" ".join(job.tags), key="job_tags", placeholder="e.g. baseline lora",
                      help="Short words, separated by spaces; the History page filters and searches them.")
        st.text_area("Note", value=job.note, key="job_note", max_chars=5000,
                     placeholder="What this run was for, what you learnt from it.")
        st.button("Save tags and note", key="save_tags", on_click=save_tags_note, icon=":material/sell:")
elif job.note:
    st.text(f"Note: {job.note}")  # another user's words: no Markdown, so no link or image in this browser

logs_tab, metrics_tab, config_tab, files_tab, script_tab = st.tabs(
    ["Logs", "Metrics", "Config", "Files", "Script"], key="tab", bind="query-params", on_change="rerun"
)

with logs_tab:
    if logs_tab.open:
        logs_tab_body(job)

with metrics_tab:
    if metrics_tab.open:
        if idle_gpus(job):
            st.warning(f"Idle GPUs: below {P.settings.gpu_idle_percent:g} % for "
                       f"{P.settings.gpu_idle_minutes:g} minutes or more. Is the job waiting on data, or stuck?")
        metric_charts(job)
        resource_charts(job)

with config_tab:
    if config_tab.open:
        config_tab_body(job)

with files_tab:
    if files_tab.open:
        files_tab_body(job)

with script_tab:
    if script_tab.open:
        script_tab_body(job)
