"""What the pages share: the portal handle, formatting, flash messages, a job card."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from services import queues
from services.auth import current_user, may_act, may_download, sign_link
from services.backends.base import BackendError
from services.models import Conflict, JobStatus, JobView, NotFound, User, ValidationProblem
from services.portal import Portal, get_portal

JOB_PAGE = "pages/job.py"
SUBMIT_PAGE = "pages/submit.py"
DASHBOARD_PAGE = "pages/dashboard.py"

STATUS_ICON = {
    JobStatus.SUBMITTING: "⏳",
    JobStatus.QUEUED: "⏳",
    JobStatus.RUNNING: "🟢",
    JobStatus.SUCCEEDED: "✅",
    JobStatus.FAILED: "❌",
    JobStatus.SUBMIT_FAILED: "❌",
    JobStatus.STOPPED: "⏹️",
}


def portal() -> Portal:
    return get_portal()


# The signs Markdown (and Streamlit's :color[...], :emoji:, $LaTeX$) acts on, where it acts on them. Plain words,
# "gpt-finetune-v2", "train_loss", "Exited with code 2: ValueError" and "#7" need none and stay as they are.
_MARKUP = re.compile(r"[\\`*\[\]<>$~|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|:(?=[\w+-])|&(?=[#A-Za-z])"
                     r"|^\s*[#+=-]|(?<=^\d)[.)]|(?<=^\d\d)[.)]|(?<=^\d\d\d)[.)]")
_LINKISH = re.compile(r"(?<=:)(?=//)|(?<=[wW]{3})(?=\.)|(?=@)")  # where a bare URL or e-mail address starts


def plain(text: object) -> str:
    """Text someone else wrote (a job name, owner, reason, tag, note), for the Markdown that st.markdown, captions,
    titles, alerts and labels render: shown as typed, never as bold, a link, an image, HTML, LaTeX or an emoji.
    Signs become character references; an invisible word joiner stops the linking of bare addresses (Streamlit
    links "http://..." and "a@b.c" even when escaped). One line: line breaks become spaces."""
    one_line = str(text).replace("\r", " ").replace("\n", " ").strip()
    return _MARKUP.sub(lambda m: "".join(f"&#{ord(c)};" for c in m.group()), _LINKISH.sub("\u2060", one_line))


def chart_text(text: str) -> str:
    """A metric's name (a job's script chose it) for a Plotly title or legend, which draw <a href>, <b>, <br>."""
    return html.escape(text, quote=False)


def signed_in_user() -> User | None:
    """The user of this browser session, None before they signed in (no page is drawn for them then)."""
    settings = portal().settings
    claims = None
    if settings.auth_mode == "oidc":
        claims = dict(st.user.to_dict())  # {"is_logged_in": False} until the provider has signed them in
    return current_user(settings, dict(st.context.headers or {}), claims)


def me() -> User:
    """The user of this browser session. Without one (proxy headers missing, OIDC not logged in) the page
    asks them to sign in and stops there. Resolved once per script run (identity_badge), not once per card."""
    cached = st.session_state.get("_me")
    if cached is not None and cached[0] == st.session_state.get("_run_token"):
        return cached[1]
    settings = portal().settings
    user = signed_in_user()
    if user is None:
        if settings.auth_mode == "oidc":
            st.title("ML Job Portal")
            st.write("Sign in to see and submit your training jobs.")
            st.button("Sign in", type="primary", on_click=st.login)
        else:
            st.error("The portal did not receive your identity from the sign-in proxy. Reload the page; if this "
                     "persists, tell your admin (the proxy must send the user header).")
        st.stop()
    return user


def identity_badge() -> None:
    st.session_state["_run_token"] = object()  # a new run: identity is resolved again
    user = me()
    st.session_state["_me"] = (st.session_state["_run_token"], user)
    mode = portal().settings.auth_mode
    with st.sidebar:
        if mode == "single":
            st.caption(f"Single-user mode: you are **{plain(user.name)}** on this machine.")
        else:
            st.caption(f"Signed in as **{plain(user.name)}** ({user.role.value})")
            if mode == "oidc":
                st.button("Sign out", on_click=st.logout, key="_signout")


def unread_notifications() -> int:
    """For the navigation's "Notifications (3)" on every page: one COUNT off an index (0 before sign-in)."""
    user = signed_in_user()
    return portal().notifications.unread_count(user) if user is not None else 0


def notifications_title(unread: int) -> str:
    return f"Notifications ({unread})" if unread else "Notifications"


UNREAD_POLL_SECONDS = 15


@st.fragment(run_every=UNREAD_POLL_SECONDS)
def unread_watch(shown: int) -> None:
    """Keeps the navigation's count current while a page stays open: a count (nothing drawn) every
    UNREAD_POLL_SECONDS, and a rerun of the page only when it changed. The navigation is drawn by the whole
    script, which a fragment cannot redraw."""
    if portal().notifications.unread_count(me()) != shown:
        st.rerun(scope="app")


def can_act(job: JobView) -> bool:
    return may_act(me(), job.owner)


def can_stop(job: JobView) -> bool:
    """Its owner, an admin, or a lead of its team (services/teams.py); the lead's teams read once per script run,
    not once per card."""
    token = st.session_state.get("_run_token")
    cached = st.session_state.get("_leads")
    if cached is None or token is None or cached[0] is not token:
        cached = (token, portal().jobs.teams.lead_teams(me()))
        st.session_state["_leads"] = cached
    return portal().jobs.teams.may_stop(me(), job.owner, job.team, leads=cached[1])


def download_url(job: JobView, kind: str, **what: Any) -> str | None:
    """A signed link for a download from this job, or None if the user may not download it."""
    user = me()
    if not may_download(user, job.owner):
        return None
    return f"/download/{sign_link(portal().settings, user, job=job.id, kind=kind, **what)}"


def now() -> datetime:
    return datetime.now(UTC)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s}s" if m < 10 else f"{m}m"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h {m}m"
    return f"{h // 24}d {h % 24}h"


def ago(when: datetime | None) -> str:
    if when is None:
        return "not yet"
    seconds = (now() - when).total_seconds()
    # Clocks of the cluster and the portal differ by a little: never show "-3s ago".
    return "just now" if seconds < 1 else f"{duration(seconds)} ago"


def eta_text(job: JobView) -> str:
    if job.status is JobStatus.SUCCEEDED:
        return "done"
    if not job.is_active or job.eta_seconds is None:
        return "unknown"
    return duration(job.eta_seconds)


def epoch_text(job: JobView) -> str:
    if job.epoch is None:
        return f"Epoch –/{job.total_epochs}" if job.total_epochs else "Epoch –"
    return f"Epoch {job.epoch}/{job.total_epochs}" if job.total_epochs else f"Epoch {job.epoch}"


def money(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{portal().settings.currency}{value:,.2f}"


def metric_text(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}"


def health_banner() -> None:
    """One clear banner when the cluster cannot be used; the history stays browsable underneath.

    A follower replica starts no watches, so its backend learns of an outage only when one of its own requests fails;
    its campaign for the Lease reads the cluster every few seconds (services/leader.py) and knows sooner."""
    p = portal()
    problem = p.jobs.backend.health()
    lease = p.sync.leadership.error  # "the cluster cannot be reached (...)", or what it refused
    if not problem and lease and ("cannot be reached" in lease or " refused " in lease):
        problem = f"{lease[0].upper()}{lease[1:]}."
        lease = None
    if problem:
        st.warning(f"**The cluster is not available:** {plain(problem)} Your job history is still here; new jobs "
                   "cannot start until it is back.", icon=":material/cloud_off:")
    elif p.sync.last_error or lease:  # the Role lacks leases: no replica can apply job changes
        st.warning(f"Job updates are delayed: {plain(p.sync.last_error or lease)}", icon=":material/sync_problem:")


def flash(message: str, kind: str = "success") -> None:
    """A message for the next run; it names jobs and quotes errors, so it is shown as plain text."""
    st.session_state.setdefault("_flash", []).append((kind, plain(message)))


def show_flash() -> None:
    for kind, message in st.session_state.pop("_flash", []):
        getattr(st, kind)(message)


def run_action(fn: Callable[[], Any], done: str) -> Any:
    """Call a use case; turn its known failures into a sentence for the user (never a traceback)."""
    try:
        result = fn()
    except (NotFound, Conflict, BackendError, ValidationProblem) as exc:
        flash(str(exc), "error")
        return None
    flash(done)
    return result


def stop_job(job: JobView) -> None:
    run_action(lambda: portal().jobs.stop(me(), job.id), f"Stopping {job.name}…")


def delete_job(job: JobView) -> None:
    st.session_state.pop("_confirm_delete", None)
    def delete() -> bool:
        portal().jobs.delete(me(), job.id)
        return True

    if run_action(delete, f"Deleted {job.name}."):
        st.session_state["_goto_dashboard"] = True  # the job page of a deleted job has nothing to show


def ask_delete(job: JobView) -> None:
    st.session_state["_confirm_delete"] = job.id


def cancel_delete() -> None:
    st.session_state.pop("_confirm_delete", None)


def delete_confirmation(job: JobView, key: str) -> None:
    if st.session_state.get("_confirm_delete") != job.id:
        return
    st.warning(f"Delete **{plain(job.name)}** with its logs, metrics and files? This cannot be undone.")
    a, b, _ = st.columns([1, 1, 4])
    a.button("Yes, delete", key=f"{key}-confirm", type="primary", on_click=delete_job, args=(job,))
    b.button("Cancel", key=f"{key}-cancel", on_click=cancel_delete)


def retry_job(job: JobView) -> None:
    new_id = run_action(lambda: portal().jobs.retry(me(), job.id), f"Retried {job.name}.")
    if new_id is not None:
        st.session_state["_goto_job"] = new_id


def goto_pending_job() -> None:
    """Switch pages outside of callbacks (Streamlit does not allow it inside one)."""
    if "_goto_job" in st.session_state:
        st.switch_page(JOB_PAGE, query_params={"id": str(st.session_state.pop("_goto_job"))})
    if st.session_state.pop("_goto_dashboard", False) and st.query_params.get("id"):
        st.switch_page(DASHBOARD_PAGE)
    if "_goto_clone" in st.session_state:
        st.switch_page(SUBMIT_PAGE, query_params={"clone": str(st.session_state.pop("_goto_clone"))})


def clone_job(job: JobView) -> None:
    st.session_state["_goto_clone"] = job.id


COMPARE_PAGE = "pages/compare.py"


def compare_selection() -> list[int]:
    return st.session_state.setdefault("_compare_ids", [])


def toggle_compare(job_id: int) -> None:
    ids = compare_selection()
    if job_id in ids:
        ids.remove(job_id)
    else:
        ids.append(job_id)


def compare_link(ids: list[int] | None = None) -> None:
    """"Compare N runs" once two or more are selected (the compare page keeps them in its URL)."""
    ids = compare_selection() if ids is None else ids
    if len(ids) >= 2:
        st.page_link(COMPARE_PAGE, label=f"Compare {len(ids)} runs", icon=":material/compare_arrows:",
                     query_params={"ids": ",".join(str(i) for i in ids[:10])})


def gpu_text(job: JobView) -> str:
    """The card's GPU figure: a real measurement, or why there is none (never a made-up 0 %)."""
    if job.gpus == 0:
        return "no GPU"
    if portal().telemetry is None:
        return "GPU metrics not configured"
    if job.gpu_util is None:
        return "GPU –"
    memory = f" · {job.gpu_memory_mib / 1024:.1f} GiB" if job.gpu_memory_mib is not None else ""
    return f"GPU {job.gpu_util:.0f}%{memory}"


def idle_gpus(job: JobView) -> bool:
    return job.gpus_idle(now().timestamp(), portal().settings.gpu_idle_minutes)


def card_facts(job: JobView) -> str:
    if job.is_active:
        return (f"**{epoch_text(job)}** · Started {ago(job.started_at)} · ETA {eta_text(job)}  \n"
                f"{gpu_text(job)} · Loss {metric_text(job.loss)}")
    when = job.finished_at or job.created_at
    verb = "Finished" if job.status is JobStatus.SUCCEEDED else job.status.value
    loss = f"Final loss {metric_text(job.loss)}" if job.status is JobStatus.SUCCEEDED else (
        f"Loss {metric_text(job.loss)} at {epoch_text(job)}")
    return (f"{verb} {ago(when)} · Runtime {duration(job.runtime_seconds(now()))}  \n"
            f"{loss} · Cost {money(job.cost(now()))}")


def job_card(job: JobView, key_prefix: str = "card") -> None:
    """One job on the dashboard: the facts a researcher scans for, and what they can do next."""
    k = f"{key_prefix}-{job.id}"
    ids = {"id": str(job.id)}
    with st.container(border=True, key=f"{k}-box"):
        # The name has the card's whole width (in a narrow window a column's share cut it off).
        st.page_link(JOB_PAGE, label=f"**{plain(job.name)}**", query_params=ids)
        left, right = st.columns([2, 3])
        with left:
            status = f"{STATUS_ICON[job.status]} {job.status.value}"
            if job.reason:
                status += f" · {job.reason}"
            st.caption(f"{plain(status)} · #{job.id} · {plain(job.owner)}")
            waiting = queues.waiting_status(portal().jobs, job)
            if waiting is not None:
                st.caption(plain(queues.waiting_line(waiting)))
            if idle_gpus(job):
                st.badge("idle GPUs", icon=":material/warning:", color="orange",
                         help=f"Its GPUs have been below {portal().settings.gpu_idle_percent:g} % for "
                              f"{portal().settings.gpu_idle_minutes:g} minutes or more.")
        right.markdown(card_facts(job))
        if job.is_active and job.progress is not None:
            st.progress(min(1.0, job.progress))
        mine = can_act(job)
        with st.container(horizontal=True, gap="small"):
            st.page_link(JOB_PAGE, label="View logs", icon=":material/article:", query_params=ids | {"tab": "Logs"})
            st.page_link(JOB_PAGE, label="Metrics", icon=":material/show_chart:",
                         query_params=ids | {"tab": "Metrics"})
            if job.is_active and (mine or can_stop(job)):
                st.button("Stop", key=f"{k}-stop", icon=":material/stop:", on_click=stop_job, args=(job,))
            elif mine:
                st.button("Retry", key=f"{k}-retry", icon=":material/replay:", on_click=retry_job, args=(job,))
            st.button("Clone", key=f"{k}-clone", icon=":material/content_copy:", on_click=clone_job, args=(job,))
            if mine and not job.is_active:
                st.button("Delete", key=f"{k}-delete", icon=":material/delete:", on_click=ask_delete, args=(job,))
            st.checkbox("Compare", key=f"{k}-cmp", value=job.id in compare_selection(),
                        on_change=toggle_compare, args=(job.id,))
            if compare_selection()[-1:] == [job.id]:  # where the user just ticked, not only at the top of the page
                compare_link()
            results = None if job.is_active else download_url(job, "zip")
            if results and portal().jobs.has_output_files(job.id):  # a job that wrote nothing has no results
                st.link_button("Download results", results, icon=":material/download:")
        delete_confirmation(job, k)
