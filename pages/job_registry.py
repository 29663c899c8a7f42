"""The job page's model registry: the job's registered model versions (name, version, a link into MLflow), those
still uploading or failed with why, and "Register model" on a finished job: files or folders of its output, a model
name and an alias (services/model_registry.py)."""

from __future__ import annotations

import streamlit as st

from pages.common import can_act, flash, me, plain, portal
from services.model_registry import ModelRegistry
from services.models import Conflict, Forbidden, JobView, NotFound, ValidationProblem
from services.store.registry_tables import DONE, PENDING

PROBLEMS = "_registry_problems"


def _service() -> ModelRegistry:
    return ModelRegistry(portal().jobs)


def _register(job: JobView) -> None:
    state = st.session_state
    try:
        made = _service().register(me(), job.id, state.get("registry_paths") or [], state.get("registry_name", ""),
                                   state.get("registry_alias", "").strip() or None)
    except ValidationProblem as exc:
        state[PROBLEMS] = exc.problems
        return
    except (Forbidden, Conflict, NotFound) as exc:
        state[PROBLEMS] = {"": str(exc)}
        return
    state.pop(PROBLEMS, None)
    flash(f"Registering {made.name} in MLflow: its version shows here once the files are uploaded.")


def _problem(field: str) -> None:
    why = st.session_state.get(PROBLEMS, {}).get(field)
    if why:
        st.error(plain(why[0].upper() + why[1:]), icon=":material/error:")


def versions(job: JobView) -> None:
    """The job's registrations, redrawn while one is still uploading."""
    pending = any(r.status == PENDING for r in _service().registrations(me(), job.id))

    @st.fragment(run_every="3s" if pending else None)
    def listing() -> None:
        rows = _service().registrations(me(), job.id)
        if pending and not any(r.status == PENDING for r in rows):
            st.rerun(scope="app")  # done: drawn again without the timer
        for r in rows:
            row = st.container(horizontal=True, gap="small", vertical_alignment="center")
            row.caption(plain(r.line()))
            if r.status == DONE and r.model_url:
                row.link_button(f"{r.name} v{r.version} in MLflow", r.model_url, icon=":material/open_in_new:")

    listing()


def register_section(job: JobView) -> None:
    """The registrations, and the form for the job's owner (or an admin) once the job has finished."""
    service = _service()
    if service.registrations(me(), job.id):
        versions(job)
    if job.is_active or not can_act(job) or not service.configured(me(), job.owner):
        return
    choices = service.choices(job.id)
    if not choices:
        return
    with st.expander("Register model", icon=":material/deployed_code:",
                     expanded=bool(st.session_state.get(PROBLEMS))), st.form("register_model", border=False):
        st.multiselect("Files or folders of the output", choices, key="registry_paths",
                       help="What the model version holds: a folder takes every file in it.")
        _problem("paths")
        st.text_input("Model name", key="registry_name", value=job.name, max_chars=250,
                      help="The registered model in MLflow; a new version is added if it exists.")
        _problem("name")
        st.text_input("Alias", key="registry_alias", placeholder="e.g. candidate", max_chars=255,
                      help="Optional: letters, digits, _ and -. The alias moves to this version.")
        _problem("alias")
        _problem("")
        st.form_submit_button("Register model", icon=":material/cloud_upload:", on_click=_register, args=(job,))
