"""Notifications: what the portal told you (with the unread count), your default per-job choice, and the channels
messages go to (an e-mail address, Slack, Teams, Mattermost or a generic webhook), each with "Send a test message"
and its last delivery's result. Secrets are taken here, never shown again (one the portal makes is shown once)."""

from __future__ import annotations

import streamlit as st

from pages.common import JOB_PAGE, ago, flash, me, plain, portal, run_action, show_flash
from services.models import Conflict, NotFound, ValidationProblem
from services.notifications_settings import CHOICE_LABELS, EVENT_LABELS, WEBHOOK_KINDS, ChannelView

P = portal()
USER = me()
N = P.notifications
KIND_LABELS = {"email": "E-mail", "slack": "Slack", "teams": "Microsoft Teams", "mattermost": "Mattermost",
               "generic": "Generic JSON webhook"}

st.title("Notifications")
show_flash()
if "confirm" in st.query_params:  # the link in a confirmation e-mail
    try:
        confirmed = N.confirm(USER, st.query_params["confirm"])
        st.success(f"Confirmed: notifications now go to {plain(confirmed.target)}.", icon=":material/verified:")
    except ValidationProblem as exc:
        st.error(exc.problems.get("code", str(exc)), icon=":material/error:")
    del st.query_params["confirm"]


def mark_read() -> None:
    N.mark_read(USER)


def set_default() -> None:
    run_action(lambda: N.set_default_notify(USER, st.session_state["n_default"]), "Saved your default.")


def add_channel() -> None:
    ss = st.session_state
    kind = ss.get("n_kind", "email")
    try:
        secret = (ss.get("n_secret") or None) if kind in WEBHOOK_KINDS else None
        view, made = N.add_channel(USER, kind, ss.get("n_target", ""), list(ss.get("n_events") or []), secret)
    except ValidationProblem as exc:
        ss["_n_problems"] = exc.problems
        return
    ss["n_target"], ss["n_secret"] = "", ""
    ss["_n_added"] = (view.id, made, not view.confirmed)


def set_events(channel_id: int) -> None:
    events = list(st.session_state.get(f"n_events_{channel_id}") or [])
    run_action(lambda: N.update_channel(USER, channel_id, events=events), "Saved the channel's events.")


def toggle(channel_id: int) -> None:
    enabled = bool(st.session_state.get(f"n_enabled_{channel_id}"))
    run_action(lambda: N.update_channel(USER, channel_id, enabled=enabled),
               "Channel enabled." if enabled else "Channel disabled.")


def test(channel_id: int) -> None:
    try:
        sent = N.send_test(USER, channel_id)
    except (NotFound, Conflict) as exc:  # more than the hourly limit: the sentence says when the next may go
        flash(str(exc), "error")
        return
    flash("The confirmation is on its way again." if sent == "confirm" else
          "A test message is on its way; its result shows below.")


def confirm_code(channel_id: int) -> None:
    code = st.session_state.get(f"n_code_{channel_id}", "")
    view = run_action(lambda: N.confirm(USER, code), "Confirmed: notifications now go to this address.")
    if view is not None:
        st.session_state[f"n_code_{channel_id}"] = ""


def remove(channel_id: int) -> None:
    run_action(lambda: N.remove_channel(USER, channel_id), "Channel removed.")


# What the portal told you -------------------------------------------------------------------------
unread = N.unread_count(USER)
notes = N.notifications(USER, limit=50)
st.subheader(f"Your notifications · {unread} unread" if unread else "Your notifications")
if not notes:
    st.caption("Nothing yet. When one of your jobs ends, it is said here (and on your channels below).")
for n in notes:
    with st.container(key=f"n_note_{n.id}"):
        line = plain(n.sentence)  # a job's name and reason: the job's text, never Markdown
        text, open_job = st.columns([6, 1])
        text.markdown(f"{'**' + line + '**' if not n.read else line}  \n{ago(n.created_at)}")
        if n.job_id:
            open_job.page_link(JOB_PAGE, label="Open job", query_params={"id": str(n.job_id)})
if unread:
    st.button("Mark all read", key="n_mark_read", on_click=mark_read, icon=":material/done_all:")

# The default per-job choice ------------------------------------------------------------------------
st.subheader("By default, notify me")
st.session_state.setdefault("n_default", N.default_notify(USER))
st.radio("By default, notify me", list(CHOICE_LABELS), key="n_default", format_func=CHOICE_LABELS.__getitem__,
         horizontal=True, on_change=set_default, label_visibility="collapsed",
         help="Each job can choose otherwise on the Submit form; clones and retries keep their job's choice.")


# Alerts while a job runs --------------------------------------------------------------------------------
def save_alerts() -> None:
    ss = st.session_state
    try:
        N.set_alerts(USER, ss.get("n_pattern", ""), ss.get("n_rules", ""), ss.get("n_stuck", 0.0))
    except ValidationProblem as exc:
        ss["_n_alert_problems"] = exc.problems
        return
    ss["_n_alerts_saved"] = True


st.subheader("Alerts while a job runs")
st.caption("Each is said once per job, on the channels that take it: the first log line that matches, the first "
           "metric value that crosses a rule. Leave a box empty to turn its alert off.")
if "n_pattern" not in st.session_state:
    st.session_state["n_pattern"], st.session_state["n_rules"] = N.alerts(USER)
    st.session_state["n_stuck"] = N.stuck_minutes(USER)
alert_problems = st.session_state.pop("_n_alert_problems", {})
st.text_input("A log line matches (regular expression, case ignored)", key="n_pattern", max_chars=200,
              placeholder="e.g. CUDA out of memory|loss=nan")
if "log_pattern" in alert_problems:
    st.error(alert_problems["log_pattern"], icon=":material/error:")
st.text_input("A metric crosses", key="n_rules", max_chars=500, placeholder="e.g. loss > 10, loss is nan")
if "metric_rules" in alert_problems:
    st.error(alert_problems["metric_rules"], icon=":material/error:")
st.number_input("No log output for (minutes; 0: off)", key="n_stuck", min_value=0.0, step=5.0, format="%g",
                help="A running job that prints nothing this long may be stuck.")
if "stuck_minutes" in alert_problems:
    st.error(alert_problems["stuck_minutes"], icon=":material/error:")
st.button("Save alerts", key="n_save_alerts", on_click=save_alerts, icon=":material/save:")
if st.session_state.pop("_n_alerts_saved", False):
    st.success("Saved your alerts.")


# Channels ----------------------------------------------------------------------------------------------
def channel_card(c: ChannelView) -> None:
    with st.container(border=True, key=f"n_channel_{c.id}"):
        left, right = st.columns([3, 1])
        secret = " · signed (secret kept)" if c.has_secret else ""
        left.markdown(f"**{KIND_LABELS.get(c.kind, c.kind)}** · {plain(c.target)}{secret}")
        if c.disabled_reason:
            left.warning(c.disabled_reason, icon=":material/warning:")
        if not c.confirmed:
            left.warning("Not confirmed yet: only the confirmation goes to this address until you open the link in "
                         "it, or paste its code here.", icon=":material/mark_email_unread:")
            left.text_input("Confirmation code", key=f"n_code_{c.id}", placeholder="from the confirmation e-mail")
            left.button("Confirm", key=f"n_confirm_{c.id}", on_click=confirm_code, args=(c.id,),
                        icon=":material/verified:")
        left.caption(f"Last delivery: {c.last_result} ({ago(c.last_at)})" if c.last_result else
                     "Nothing delivered yet.")
        st.session_state.setdefault(f"n_events_{c.id}", c.events)
        st.session_state[f"n_enabled_{c.id}"] = c.enabled
        right.toggle("Enabled", key=f"n_enabled_{c.id}", on_change=toggle, args=(c.id,))
        right.button("Send a test message" if c.confirmed else "Send the confirmation again", key=f"n_test_{c.id}",
                     on_click=test, args=(c.id,), icon=":material/send:")
        right.button("Remove", key=f"n_remove_{c.id}", on_click=remove, args=(c.id,), icon=":material/delete:")
        # Full width: the labels wrap instead of being cut.
        st.multiselect("Events", list(EVENT_LABELS), key=f"n_events_{c.id}", format_func=EVENT_LABELS.__getitem__,
                       on_change=set_events, args=(c.id,))


st.subheader("Channels")
channels = N.channels(USER)
if not channels:
    st.caption("No channels yet: notifications are only listed above. Add an e-mail address or a webhook below.")
for c in channels:
    channel_card(c)

added = st.session_state.pop("_n_added", None)
if added and added[1]:
    st.success("Channel added. Its signing secret, shown only now: receivers check the X-Portal-Signature-256 "
               "header with it (docs/notifications.md).")
    st.code(added[1], language=None)
elif added and added[2]:
    st.success("Channel added. A confirmation is on its way to the address: open the link in it to get "
               "notifications there.")
elif added:
    st.success("Channel added.")

problems = st.session_state.pop("_n_problems", {})
with st.container(border=True, key="n_add"):
    st.markdown("**Add a channel**")
    kind = st.selectbox("Kind", list(KIND_LABELS), key="n_kind", format_func=KIND_LABELS.__getitem__)
    st.text_input("E-mail address" if kind == "email" else "Webhook URL", key="n_target",
                  placeholder="you@example.com" if kind == "email" else "https://hooks.slack.com/services/…")
    if "target" in problems:
        st.error(problems["target"], icon=":material/error:")
    st.multiselect("Events", list(EVENT_LABELS), default=list(EVENT_LABELS), key="n_events",
                   format_func=EVENT_LABELS.__getitem__)
    if "events" in problems:
        st.error(problems["events"], icon=":material/error:")
    if kind in WEBHOOK_KINDS:
        st.text_input("Signing secret (optional)", key="n_secret", type="password",
                      help="Signs every message (HMAC-SHA256). Empty: the portal makes one and shows it once.")
        if "secret" in problems:
            st.error(problems["secret"], icon=":material/error:")
    st.button("Add channel", key="n_add_channel", type="primary", on_click=add_channel, icon=":material/add:")
