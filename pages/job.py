"""One job: status, live log, metric charts, the exact config, and the files it wrote."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from pages.common import (
    DASHBOARD_PAGE,
    STATUS_ICON,
    ago,
    ask_delete,
    can_act,
    chart_text,
    clone_job,
    delete_confirmation,
    download_url,
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
from services.models import JobStatus, NotFound

if TYPE_CHECKING:
    from collections.abc import Iterable

    import plotly.graph_objects as go

    from services.job_charts import Series

P = portal()
LOG_LINES = 500
PRIMARY_SERIES = ("loss", "train_loss", "val_loss", "eval_loss", "accuracy", "acc", "val_acc", "val_accuracy")

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


@st.fragment(run_every="2s" if active else None)
def status_strip() -> None:
    j = P.jobs.get(me(), job.id)
    if j.status is not job.status:
        # A new status redraws the page: Save checkpoint once it runs; buttons, final metrics (no timer) once it ends.
        st.rerun(scope="app")
    c = st.columns(3)
    c[0].metric("Status", f"{STATUS_ICON[j.status]} {j.status.value}")
    c[1].metric("Progress", epoch_text(j))
    if j.is_active:
        c[2].metric("Started", ago(j.started_at))
    else:
        c[2].metric("Runtime", duration(j.runtime_seconds(now())) if j.started_at else "never started")
    c = st.columns(3)
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
    if j.reason:
        (st.error if j.status in (JobStatus.FAILED, JobStatus.SUBMIT_FAILED) else st.info)(plain(j.reason))
    if j.progress is not None and j.is_active:
        st.progress(min(1.0, j.progress))


status_strip()


def save_checkpoint() -> None:
    run_action(lambda: P.jobs.save_checkpoint(me(), job.id), "Checkpoint requested: the script saves it shortly.")


# A row sized by its buttons' labels (six equal columns cut "Save checkpoint" off).
actions = st.container(horizontal=True, gap="small")
if not can_act(job):
    actions.caption(f"{plain(job.owner)}'s job: read-only.")
elif active:
    actions.button("Stop job", key="stop", icon=":material/stop:", type="primary", on_click=stop_job, args=(job,))
    actions.button("Save checkpoint", key="checkpoint", icon=":material/save:", on_click=save_checkpoint,
                   disabled=job.status is not JobStatus.RUNNING,
                   help=None if job.status is JobStatus.RUNNING else "Possible once the job is running.")
else:
    actions.button("Retry", key="retry", icon=":material/replay:", on_click=retry_job, args=(job,))
    actions.button("Delete", key="delete", icon=":material/delete:", on_click=ask_delete, args=(job,))
actions.button("Clone", key="clone", icon=":material/content_copy:", on_click=clone_job, args=(job,))
delete_confirmation(job, "job")


def save_tags_note() -> None:
    tags = st.session_state.get("job_tags", "").replace(",", " ").split()
    run_action(lambda: P.history.set_tags_note(me(), job.id, tags, st.session_state.get("job_note", "")),
               "Saved the tags and note.")


if job.tags:
    st.markdown(" ".join(f":blue-badge[{plain(t)}]" for t in job.tags))
if can_act(job):
    with st.expander("Tags and note", expanded=False):
        st.text_input("Tags", value=" ".join(job.tags), key="job_tags", placeholder="baseline lora ablation-3",
                      help="Short words, separated by spaces; the History page filters and searches them.")
        st.text_area("Note", value=job.note, key="job_note", max_chars=5000,
                     placeholder="What this run was for, what you learnt from it.")
        st.button("Save tags and note", key="save_tags", on_click=save_tags_note, icon=":material/sell:")
elif job.note:
    st.text(f"Note: {job.note}")  # another user's words: no Markdown, so no link or image in this browser

logs_tab, metrics_tab, config_tab, files_tab = st.tabs(
    ["Logs", "Metrics", "Config", "Files"], key="tab", bind="query-params", on_change="rerun"
)


@st.fragment(run_every="2s" if active else None)
def log_pane(rank: int) -> None:
    paused = active and st.session_state.get("log_paused", False)
    cache_key = f"_log_cache-{job.id}-{rank}"
    view = st.session_state.get(cache_key) if paused else None
    if view is None:
        view = P.jobs.log_view(job.id, LOG_LINES, rank=rank)
        st.session_state[cache_key] = view
    lines, total = view
    shown = f"last {len(lines)} of {max(total, len(lines)):,} lines" if total > len(lines) else f"{len(lines)} lines"
    st.caption(("Paused · " if paused else ("Live · " if active else "")) + shown)
    with st.container(height=480, autoscroll=st.session_state.get("log_autoscroll", True), key="log_box"):
        st.code("\n".join(lines) if lines else "(no output yet)", language=None)


with logs_tab:
    if logs_tab.open and not active and P.jobs.log_pruned(job.id):
        st.info(f"This job's log was deleted {P.settings.log_retention_days:g} days after it ended (the portal's "
                "retention setting). Its metrics, charts and files are still here.")
    elif logs_tab.open:
        ranks = P.jobs.log_ranks(job.id)
        a, b, c, d = st.columns([1, 1, 1, 3])
        rank = c.selectbox("Rank", ranks, key="log_rank", format_func=lambda r: f"node {r}") if len(ranks) > 1 else 0
        a.toggle("Auto-scroll", value=True, key="log_autoscroll")
        b.toggle("Pause", value=False, key="log_paused", disabled=not active)
        log_url = download_url(job, "log", rank=rank)
        if log_url:
            d.link_button("Download full log", log_url, icon=":material/download:")
        log_pane(rank)


def chart(name: str, lines: dict[str, Series], axis: str, legend: bool = False) -> go.Figure:
    """One chart of a series: one line, or one per rank (named, with a legend)."""
    import plotly.graph_objects as go  # only pages that draw charts pay for importing Plotly

    fig = go.Figure([go.Scatter(x=ser.x, y=ser.y, mode="lines+markers" if len(ser.x) < 50 else "lines", name=label)
                     for label, ser in lines.items()])
    fig.update_layout(title=chart_text(name), height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis_title=axis, **({"legend_title_text": ""} if legend else {"showlegend": False}))
    return fig


def primary_first(names: Iterable[str]) -> list[str]:
    """Loss and accuracy curves first, in PRIMARY_SERIES order, then the rest by name."""
    return sorted(names, key=lambda n: (n not in PRIMARY_SERIES, PRIMARY_SERIES.index(n)
                                        if n in PRIMARY_SERIES else 0, n))


def ranked_charts(ranks: list[int]) -> None:
    """A multi-process job (torchrun): every rank as its own line of one chart, with a rank filter."""
    shown = st.multiselect("Ranks", ranks, default=ranks, key="chart_ranks", format_func=lambda r: f"rank {r}")
    by_name = P.jobs.rank_series(job.id, shown)
    if not by_name:
        st.info("Pick a rank to see its curves." if not shown else "No metrics from these ranks yet.")
        return
    cols = st.columns(2)
    for i, name in enumerate(primary_first(by_name)):
        by_rank = dict(sorted(by_name[name].items()))
        lines = {f"rank {rank}": ser for rank, ser in by_rank.items()}
        cols[i % 2].plotly_chart(chart(name, lines, next(iter(by_rank.values())).axis, legend=True),
                                 key=f"chart-{name}", width="stretch")


@st.fragment(run_every="5s" if active else None)
def metric_charts() -> None:
    ranks = P.jobs.metric_ranks(job.id)
    if ranks:
        ranked_charts(ranks)
        return
    series = P.jobs.metric_series(job.id)
    if not series:
        st.info("No metrics yet. Print lines like `Epoch 3/10` and `Loss: 0.42`, or use "
                "`portal_metrics.log_metrics(loss=...)` (see docs/scripts.md).")
        return
    cols = st.columns(2)
    for i, name in enumerate(primary_first(series)):
        ser = series[name]
        cols[i % 2].plotly_chart(chart(name, {chart_text(name): ser}, ser.axis), key=f"chart-{name}", width="stretch")


@st.fragment(run_every="15s" if active else None)
def gpu_charts() -> None:
    if job.gpus == 0:
        return
    st.subheader("GPUs")
    if P.telemetry is None:
        st.info("GPU metrics not configured: your admin can connect Prometheus (DCGM exporter) on a cluster, "
                "or install the NVIDIA driver's NVML on this machine (docs/admin.md).")
        return
    series = P.jobs.gpu_series(job.id)
    if not series:
        st.caption("No GPU samples yet." if active else "No GPU samples were recorded for this job.")
        return
    cols = st.columns(2)
    for i, (name, ser) in enumerate(series.items()):
        cols[i % 2].plotly_chart(chart(name, {chart_text(name): ser}, "seconds since start"), key=f"gpu-{i}",
                                 width="stretch")


with metrics_tab:
    if metrics_tab.open:
        if idle_gpus(job):
            st.warning(f"Idle GPUs: below {P.settings.gpu_idle_percent:g} % for "
                       f"{P.settings.gpu_idle_minutes:g} minutes or more. Is the job waiting on data, or stuck?")
        metric_charts()
        gpu_charts()

with config_tab:
    if config_tab.open:
        st.subheader("What was submitted")
        st.json(job.request)
        st.subheader("The exact spec that ran")
        st.json(job.spec or {"note": "The job never reached the backend."})
        st.subheader("Timeline")
        import pandas as pd

        events = P.jobs.events(job.id)
        st.dataframe(pd.DataFrame(events, columns=["time", "status", "message"]), hide_index=True, width="stretch")
        runtime = job.runtime_seconds(now())
        st.caption(f"Runtime {duration(runtime)} · {job.gpus} GPU × {job.nodes} node · "
                   f"{money(job.cost_per_hour)}/hour · owner {plain(job.owner)}")

with files_tab:
    if files_tab.open:
        files = P.jobs.output_files(job.id)
        if not files and P.jobs.backend.name == "kubernetes" and not P.settings.job_data_volume_claim:
            st.info("Files a job writes stay in its pod: the portal shows them once your admin configures a "
                    "shared workspace volume. Print metrics to the log, or save results to your own storage.")
        elif not files:
            st.info("The job has not written any files yet. Scripts write results to `$PORTAL_OUTPUT_DIR`.")
        else:
            zip_url = download_url(job, "zip")
            if zip_url:
                st.link_button("Download all as .zip", zip_url, icon=":material/download:")
            else:
                st.caption("Only the owner, viewers and admins may download this job's files.")
            for f in files:
                # The job chose its files' names: in a code span nothing is Markdown, so long as no backtick
                # closes it and no blank line ends the paragraph.
                name = f.path.replace("`", "'").replace("\r", " ").replace("\n", " ")
                url = download_url(job, "file", path=f.path)
                st.markdown(f"[`{name}`]({url}) · {f.size:,} bytes" if url else f"`{name}` · {f.size:,} bytes")
