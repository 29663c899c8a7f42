"""Teams: the user's teams with their members and leads; an admin defines teams, their members, leads, default
Kueue queue and notification channel, and whether non-members see their jobs (services/teams.py)."""

from __future__ import annotations

import streamlit as st

from pages.common import me, plain, portal
from services.models import Forbidden, NotFound, ValidationProblem

P = portal()
USER = me()
TEAMS = P.jobs.teams

st.title("Teams")
st.caption("Each job belongs to one of its submitter's teams (chosen on the Submit form). Members see each other's "
           "jobs and templates and may clone them; leads may stop their team's jobs. A team is a sign-in group or "
           "one an admin defines here.")


def names(text: str) -> list[str]:
    return [n.strip() for n in text.replace("\n", ",").split(",") if n.strip()]


def save(key: str, team_name: str, source: str) -> None:
    ss = st.session_state
    name = team_name or (ss.get(f"{key}-name") or "").strip()  # a new team's, as typed before the click
    try:
        TEAMS.define(USER, name, members=names(ss[f"{key}-members"]), leads=names(ss[f"{key}-leads"]),
                     source=source, everyone_visible=ss[f"{key}-visible"], default_queue=ss[f"{key}-queue"],
                     notify_channel=ss[f"{key}-channel"])
    except (ValidationProblem, Forbidden, NotFound) as exc:
        ss[f"{key}-problem"] = str(exc)
        return
    ss.pop(f"{key}-problem", None)
    ss["teams-saved"] = name


def editor(key: str, team_name: str, source: str) -> None:
    """The admin's form for one team (a new one when team_name is empty)."""
    try:
        team = TEAMS.team(team_name) if team_name else None
    except NotFound:
        team = None
    if not team_name:
        st.text_input("Name", key=f"{key}-name", placeholder="e.g. vision")
    st.toggle("Others see its jobs under “Everyone”", key=f"{key}-visible",
              value=team.everyone_visible if team else True)
    st.text_input("Default Kueue queue", key=f"{key}-queue", value=(team.default_queue if team else None) or "",
                  help="The LocalQueue its jobs wait in on a cluster with Kueue (empty: the portal's queue settings).")
    st.text_input("Notification channel", key=f"{key}-channel", value=(team.notify_channel if team else None) or "",
                  help="A webhook (e.g. slack:https://hooks.slack.com/…) that hears of its members' failures.")
    st.text_area("Members", key=f"{key}-members", value=", ".join(TEAMS.members(team_name)) if team_name else "",
                 help="User names, comma-separated (a sign-in group's members come from the identity).")
    st.text_area("Leads", key=f"{key}-leads", value=", ".join(TEAMS.leads(team_name)) if team_name else "")
    st.button("Save team", key=f"{key}-save", type="primary", on_click=save, args=(key, team_name, source))
    if problem := st.session_state.get(f"{key}-problem"):
        st.error(problem, icon=":material/error:")


if saved := st.session_state.pop("teams-saved", None):
    st.success(f"Team {saved} saved.")

teams = TEAMS.listed(USER)
if not teams:
    st.info("You are in no team yet: your sign-in groups, or an admin, make you a member of one.")
for n, team in enumerate(teams):
    with st.container(border=True, key=f"team-{n}"):
        role = " · you lead it" if team.lead else ""
        st.subheader(plain(team.name))
        hidden = "" if team.everyone_visible else " · hidden from non-members"
        st.caption(f"{'sign-in group' if team.source == 'identity' else 'defined by an admin'}{role}{hidden}")
        members, leads = TEAMS.members(team.name), TEAMS.leads(team.name)
        st.markdown(f"**Members:** {plain(', '.join(members)) or '—'}  \n**Leads:** {plain(', '.join(leads)) or '—'}")
        if team.default_queue:
            st.caption(f"Default queue: {plain(team.default_queue)}")
        if USER.is_admin:
            with st.expander("Edit"):
                editor(f"edit-{n}", team.name, team.source)

if USER.is_admin:
    st.subheader("New team")
    editor("new", "", "admin")
