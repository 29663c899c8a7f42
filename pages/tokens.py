"""API tokens: personal tokens for scripts and notebooks (the REST API and the Python client). Each one expires;
admins also see every user's tokens and revoke any of them."""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from pages.common import ago, duration, me, now, plain, portal, run_action, show_flash
from services.models import ValidationProblem
from services.tokens import TokenView, days_text

P = portal()
USER = me()
MAX_DAYS = P.tokens.max_days
PRESET_DAYS = (7, 30, 90, 180, 365)
# The admin section lists this many tokens, newest first: a page of thousands of cards helps nobody.
ADMIN_LIST_LIMIT = 200

st.title("API tokens")
st.write("A token lets your scripts and notebooks use the portal as you: submit jobs, follow their logs, fetch "
         "results (see the Python client in docs/api.md). Treat it like a password; revoke it when it leaks or "
         "is no longer needed. Every token expires; after that, make a new one.")
show_flash()


def create() -> None:
    name = st.session_state.get("token_name", "")
    try:
        _, secret = P.tokens.create(USER, name, st.session_state.get("token_days"))
    except ValidationProblem as exc:
        st.session_state["_token_problem"] = exc.problems
        return
    st.session_state["_new_token"] = secret
    st.session_state["token_name"] = ""


def portal_url() -> str:
    """The address this browser reached the portal at (a proxy's, with its path prefix), without this page's
    path: what a notebook on the same network connects to."""
    url = (st.context.url or "").split("?")[0].split("#")[0].rstrip("/")
    base = url.removesuffix("/tokens")
    return base if base.startswith(("http://", "https://")) else "<this portal's URL>"


def revoke(token_id: int, name: str, owner: str) -> None:
    whose = "" if owner == USER.name else f"{owner}'s "
    run_action(lambda: P.tokens.revoke(USER, token_id), f"Revoked {whose}token '{name}'.")


def expiry_text(t: TokenView) -> str:
    if t.expired:
        return f"expired {ago(t.expires_at)} ({t.expires_at:%Y-%m-%d})"
    return f"expires {when(t.expires_at)}"


def when(moment: datetime) -> str:
    return f"on {moment:%Y-%m-%d} (in {duration((moment - now()).total_seconds())})"


def state_text(t: TokenView) -> str:
    if t.revoked_at is not None:
        return f"revoked {ago(t.revoked_at)}"
    return "**expired**" if t.expired else "active"


def token_card(t: TokenView, key: str, with_owner: bool = False) -> None:
    with st.container(border=True, key=f"{key}token-{t.id}"):
        left, right = st.columns([4, 1])
        owner = f"{plain(t.owner)} · " if with_owner else ""  # others' names, shown to the admin as typed
        left.markdown(f"{owner}**{plain(t.name)}** · `{t.prefix}…` · {state_text(t)}  \n"
                      f"Created {ago(t.created_at)} · last used {ago(t.last_used_at) if t.last_used_at else 'never'}"
                      f" · {expiry_text(t)}")
        if t.active:
            right.button("Revoke", key=f"{key}revoke-{t.id}", on_click=revoke, args=(t.id, t.name, t.owner),
                         icon=":material/block:")


# Presets up to the portal's maximum, which is itself the last choice and the default.
choices = [d for d in PRESET_DAYS if d < MAX_DAYS] + [MAX_DAYS]
with st.container(border=True):
    st.text_input("Token name", key="token_name", placeholder="e.g. laptop notebook", max_chars=100)
    problems = st.session_state.pop("_token_problem", {})
    if "name" in problems:
        st.error(f"Token name: {problems['name']}")
    st.selectbox("Expires after", choices, index=len(choices) - 1, key="token_days",
                 format_func=lambda d: days_text(d) + (" (the maximum)" if d == MAX_DAYS else ""),
                 help=f"The portal allows tokens of at most {days_text(MAX_DAYS)}.")
    if "days" in problems:
        st.error(f"Expires after: {problems['days']}")
    st.button("Create token", key="create_token", type="primary", on_click=create, icon=":material/add:")

secret = st.session_state.pop("_new_token", None)
if secret:
    st.success("Your new token. Copy it now: it is shown only once.")
    st.code(secret, language=None)
    st.code(f'from ml_job_portal import JobClient\nclient = JobClient(cluster_url="{portal_url()}", '
            f'token="{secret}")', language="python")

tokens = P.tokens.list(USER)
if not tokens:
    st.caption("You have no tokens yet.")
for t in tokens:
    token_card(t, "")

# In single-user mode the only user is the admin: their list above already is everyone's.
if USER.is_admin and P.settings.auth_mode != "single":
    st.subheader("All users' tokens")
    everyone = P.tokens.list_all(USER)
    st.caption(f"As an admin you may revoke anyone's token, e.g. one that leaked or of someone who left. "
               f"{len(everyone)} token{'s' if len(everyone) != 1 else ''}, newest first"
               + (f"; the newest {ADMIN_LIST_LIMIT} are shown." if len(everyone) > ADMIN_LIST_LIMIT else "."))
    for t in everyone[:ADMIN_LIST_LIMIT]:
        token_card(t, "all-", with_owner=True)
