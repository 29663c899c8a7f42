"""API tokens: personal tokens for scripts and notebooks (the REST API and the Python client)."""

from __future__ import annotations

import streamlit as st

from pages.common import ago, me, portal, run_action, show_flash
from services.models import ValidationProblem

P = portal()
USER = me()

st.title("API tokens")
st.write("A token lets your scripts and notebooks use the portal as you: submit jobs, follow their logs, fetch "
         "results (see the Python client in docs/api.md). Treat it like a password; revoke it when it leaks or "
         "is no longer needed.")
show_flash()


def create() -> None:
    name = st.session_state.get("token_name", "")
    try:
        _, secret = P.tokens.create(USER, name)
    except ValidationProblem as exc:
        st.session_state["_token_problem"] = exc.problems.get("name", str(exc))
        return
    st.session_state["_new_token"] = secret
    st.session_state["token_name"] = ""


def revoke(token_id: int, name: str) -> None:
    run_action(lambda: P.tokens.revoke(USER, token_id), f"Revoked the token '{name}'.")


with st.container(border=True):
    st.text_input("Token name", key="token_name", placeholder="e.g. laptop notebook", max_chars=100)
    problem = st.session_state.pop("_token_problem", None)
    if problem:
        st.error(f"Token name: {problem}")
    st.button("Create token", key="create_token", type="primary", on_click=create, icon=":material/add:")

secret = st.session_state.pop("_new_token", None)
if secret:
    st.success("Your new token. Copy it now: it is shown only once.")
    st.code(secret, language=None)
    st.code(f'from ml_job_portal import JobClient\nclient = JobClient(cluster_url="<this portal\'s URL>", '
            f'token="{secret}")', language="python")

tokens = P.tokens.list(USER)
if not tokens:
    st.caption("You have no tokens yet.")
for t in tokens:
    with st.container(border=True, key=f"token-{t.id}"):
        left, right = st.columns([4, 1])
        state = "active" if t.active else f"revoked {ago(t.revoked_at)}"
        left.markdown(f"**{t.name}** · `{t.prefix}…` · {state}  \n"
                      f"Created {ago(t.created_at)} · last used {ago(t.last_used_at) if t.last_used_at else 'never'}")
        if t.active:
            right.button("Revoke", key=f"revoke-{t.id}", on_click=revoke, args=(t.id, t.name), icon=":material/block:")

