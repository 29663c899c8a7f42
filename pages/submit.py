"""Submit a training job: a form a researcher fills without knowing Kubernetes."""

from __future__ import annotations

from typing import Any

import streamlit as st

from pages import submit_sweep
from pages.common import JOB_PAGE, me, money, plain, portal
from services.jobs import machine_gpus_problem
from services.models import NAME_MAX, Conflict, NotFound, ValidationProblem
from services.notifications_settings import CHOICE_LABELS
from services.priority_choice import offered as offered_priorities
from services.templates import TEMPLATE_FIELDS
from services.usage import UsageService

P = portal()
S = P.settings
COSTS = UsageService.of(P.jobs)  # prices and budgets (services/usage.py)
FIELDS = ["name", "script", "upload", "learning_rate", "epochs", "batch_size", "dataset_path", "extra_args",
          "gpus", "nodes", "mixed_precision", "gradient_checkpointing", "checkpoint_every", "max_runtime_hours",
          "priority"]
FIELD_LABELS = {"learning_rate": "Learning rate", "epochs": "Epochs", "batch_size": "Batch size",
                "dataset_path": "Dataset path", "extra_args": "Additional args", "gpus": "GPUs", "nodes": "Nodes",
                "checkpoint_every": "Checkpoint every N epochs", "max_runtime_hours": "Max runtime (hours)",
                "name": "Template name"}
DEFAULTS: dict[str, Any] = {
    "name": "", "learning_rate": 0.001, "epochs": 10, "batch_size": 32, "dataset_path": "", "extra_args": "",
    "gpus": 0, "nodes": 1, "mixed_precision": False, "gradient_checkpointing": False, "checkpoint_every": 0,
    "max_runtime_hours": S.default_runtime_hours, "priority": "",  # "": the backend's default, drawn below
}


def prefill(values: dict[str, Any]) -> None:
    for field, default in DEFAULTS.items():
        st.session_state[f"f_{field}"] = values.get(field, default)
    # A number left at 0 means "no periodic checkpoints"; the checkbox mirrors it.
    st.session_state["f_checkpoints_on"] = bool(values.get("checkpoint_every"))
    st.session_state["f_notify"] = values.get("notify") or ""  # a clone keeps its parent's choice
    st.session_state["f_team"] = values.get("team") or ""  # and its team (if the cloner is in it)
    if values.get("script"):
        st.session_state["f_source"] = "Use from workspace"
        st.session_state["f_script"] = values["script"]
    # A clone keeps the label of the template its values came from (the history filters by it).
    st.session_state["_from_template"] = values.get("template") or ""


clone_id = st.query_params.get("clone")
if clone_id and st.session_state.get("_cloned_from") != clone_id:
    st.session_state["_cloned_from"] = clone_id
    try:
        values = P.jobs.clone_values(me(), int(clone_id))
        values["name"] = (values["name"][: NAME_MAX - 6] + "-clone").strip("-")
        prefill(values)
        st.session_state["_clone_parent"] = clone_id  # the new job's page says "Cloned from #N"
    except ValueError:
        st.error(f"Job {clone_id} was not found, so there is nothing to clone.")
    except NotFound as exc:  # also: another user's job whose script snapshot is gone
        st.error(f"{exc} There is nothing to clone.")
elif "f_name" not in st.session_state:
    prefill({})

problems: dict[str, str] = st.session_state.get("_problems", {})


def budget_note() -> None:
    """The job's ceiling from its max runtime, and what its team (or its owner) has left this month: "this job may
    cost up to $X (8 h × 4 GPUs); your team has $Y left this month", a warning when the submit would be refused."""
    ss = st.session_state
    try:
        gpus, nodes, hours = max(0, int(ss["f_gpus"])), max(1, int(ss["f_nodes"])), float(ss["f_max_runtime_hours"])
    except (TypeError, ValueError):
        return
    note, refusal = COSTS.submit_note(P.jobs.backend.name, me(), ss.get("f_team") or "", gpus, nodes, hours)
    if refusal:
        st.warning(refusal, icon=":material/savings:")
    else:
        st.caption(note)


def field_error(field: str) -> None:
    if field in problems:
        st.error(problems[field], icon=":material/error:")


def collect() -> dict[str, Any]:
    ss = st.session_state
    data = {f: ss[f"f_{f}"] for f in DEFAULTS}
    if not ss.get("f_checkpoints_on"):
        data["checkpoint_every"] = 0
    data["script"] = ss.get("f_script") or ""
    data["template"] = ss.get("_from_template") or ""
    data["notify"] = ss.get("f_notify") or ""
    data["team"] = ss.get("f_team") or ""
    return data


def check_upload() -> None:
    """As soon as a file is chosen: a .txt or an oversized file is refused here, not at Submit."""
    ss = st.session_state
    file = ss.get("f_upload")
    problems = {k: v for k, v in ss.get("_problems", {}).items() if k != "upload"}
    problem = P.jobs.workspace.upload_problem(file.name, file.getvalue()) if file is not None else None
    ss["_problems"] = problems | ({"upload": problem} if problem else {})


def on_submit() -> None:
    ss = st.session_state
    data = collect()
    if ss.get("f_checkpoints_on") and ss.get("f_checkpoint_every", 0) <= 0:
        ss["_problems"] = {"checkpoint_every": "enter a positive number of epochs, or untick the box"}
        return
    upload = None
    if ss.get("f_source") == "Upload new script":
        file = ss.get("f_upload")
        if file is None:
            ss["_problems"] = {"upload": "choose a .py file to upload, or pick a script from the workspace"}
            return
        upload = (file.name, file.getvalue())
        data["script"] = "upload.py"  # replaced by the stored upload's workspace path
    try:
        # Still the clone's form (the URL names the job whose values filled it): the new job records its parent.
        parent = ss.get("_clone_parent")
        parent_id = int(parent) if parent is not None and st.query_params.get("clone") == parent else None
        job_id = P.jobs.submit(me(), data, upload=upload, parent_id=parent_id)
    except ValidationProblem as exc:
        ss["_problems"] = exc.problems
        return
    ss.pop("_problems", None)
    ss["_submitted"] = job_id


if "_submitted" in st.session_state:
    st.switch_page(JOB_PAGE, query_params={"id": str(st.session_state.pop("_submitted"))})

def start_from_template() -> None:
    name = st.session_state.get("f_template")
    if not name:
        return
    try:
        values = P.templates.get_by_name(name, me()).values
    except NotFound as exc:
        st.session_state["_problems"] = {"template": str(exc)}
        return
    prefill(values | {"name": st.session_state.get("f_name", ""), "template": name})
    st.session_state.pop("_problems", None)


def save_as_template() -> None:
    ss = st.session_state
    values = {k: v for k, v in collect().items() if k in TEMPLATE_FIELDS}
    try:
        team = (ss.get("f_team") or None) if ss.get("f_template_team_only") else None  # else: shared with everyone
        saved = P.templates.save(me(), ss.get("f_template_name", ""), values, team=team)
    except ValidationProblem as exc:
        field, problem = next(iter(exc.problems.items()))
        label = FIELD_LABELS.get(field)
        ss["_template_problem"] = f"{label}: {problem}" if label else problem
        return
    except Conflict as exc:
        ss["_template_problem"] = str(exc)
        return
    ss["_template_saved"] = saved.name


st.title("Submit training job")
SWEEP = submit_sweep.mode(prefill)  # "Sweep": a search over the parameters below, one job per trial
templates = P.templates.list(me())  # everyone's, and the user's teams' own
if templates:
    st.selectbox("Start from template", [t.name for t in templates], key="f_template", index=None,
                 placeholder="Choose a template to fill the form…", on_change=start_from_template,
                 help="Templates are named sets of values saved by your team (see 'Save as template' below).")
    field_error("template")
if problems:
    st.error(f"The {'sweep' if SWEEP else 'job'} was not submitted: please fix the fields marked below.")
    field_error("")

st.text_input("Experiment name", key="f_name", max_chars=None, placeholder="e.g. gpt-finetune-v2",
              help="Lower-case letters, digits and '-', at most 63 characters: it names the job on the cluster.")
field_error("name")

st.subheader("Training script")
scripts = P.jobs.scripts(me())
st.radio("Source", ["Use from workspace", "Upload new script"], key="f_source", horizontal=True,
         label_visibility="collapsed")
if st.session_state["f_source"] == "Use from workspace":
    if st.session_state.get("f_script") not in scripts:
        st.session_state["f_script"] = scripts[0] if scripts else None
    st.selectbox("Script from workspace", scripts, key="f_script",
                 help="Your Python files (uploads are added to them) and the examples everyone shares."
                 if S.auth_mode != "single" else f"Python files in the workspace ({S.workspace_dir}). Uploads are "
                 "added to it.")
    field_error("script")
else:
    # type= and max_upload_size= make the browser refuse another kind of file, or a larger one, before it is sent.
    st.file_uploader(f"Upload a .py script (at most {S.max_upload_mb:g} MB)", key="f_upload", type=["py"],
                     max_upload_size=P.jobs.workspace.upload_widget_mb, on_change=check_upload)
    field_error("upload")
    field_error("script")

st.subheader("Parameters")
if SWEEP:
    submit_sweep.parameters(field_error)
c1, c2 = st.columns(2)
with c1:
    if not SWEEP:  # a sweep's learning rate, epochs and batch size are its rows above
        st.number_input("Learning rate", key="f_learning_rate", step=0.0001, format="%.6f")
        field_error("learning_rate")
        st.number_input("Epochs", key="f_epochs", step=1)
        field_error("epochs")
        st.number_input("Batch size", key="f_batch_size", step=1)
        field_error("batch_size")
with c2:
    st.text_input("Dataset path", key="f_dataset_path", placeholder="e.g. /datasets/wikitext")
    field_error("dataset_path")
    st.text_input("Additional args", key="f_extra_args", placeholder="e.g. --warmup-steps 500 --seed 42",
                  help="Passed to the script as separate arguments after the flags above (quotes work as in a shell, "
                       "but no shell runs).")
    field_error("extra_args")

st.subheader("Resources")
r1, r2, r3 = st.columns(3)
MACHINE_GPUS: int | None = getattr(P.jobs.backend, "machine_gpus", None)  # local backend only
with r1:
    st.number_input("GPUs", key="f_gpus", step=1, help=f"Per node; at most {S.max_gpus_per_node}.")
    if "gpus" in problems:
        field_error("gpus")
    elif MACHINE_GPUS is not None and (st.session_state["f_gpus"] or 0) > MACHINE_GPUS:
        st.error(machine_gpus_problem(MACHINE_GPUS), icon=":material/error:")  # said as it is typed
    elif MACHINE_GPUS is not None:
        st.caption("This machine has no GPU: jobs run on its CPU." if MACHINE_GPUS == 0 else
                   f"This machine has {MACHINE_GPUS} GPU{'s' if MACHINE_GPUS != 1 else ''}.")
with r2:
    st.number_input("Nodes", key="f_nodes", step=1, help=f"At most {min(S.max_nodes, P.jobs.backend.max_nodes)}.")
    field_error("nodes")
with r3:
    try:
        gpus = max(0, int(st.session_state["f_gpus"]))
        if MACHINE_GPUS is not None and gpus > MACHINE_GPUS:
            raise ValueError("GPUs this machine does not have have no price")
        cost = COSTS.hourly(P.jobs.backend.name, gpus, max(1, int(st.session_state["f_nodes"])))
        st.metric("Estimated cost", f"{money(cost)}/hour")
    except (TypeError, ValueError):
        st.metric("Estimated cost", "–")

PRIORITY_OPTIONS, PRIORITY_DEFAULT = offered_priorities(P.jobs.backend, S, me())  # the admin's, and theirs
if st.session_state.get("f_priority") not in dict(PRIORITY_OPTIONS):  # a clone's or the first draw's
    st.session_state["f_priority"] = PRIORITY_DEFAULT
st.radio("Priority", [n for n, _ in PRIORITY_OPTIONS], key="f_priority", horizontal=True,
         captions=[text for _, text in PRIORITY_OPTIONS],
         help="When the GPUs a job needs are taken it waits; waiting jobs start by priority, then in the order "
              "they were submitted.")
field_error("priority")

MY_TEAMS = [t.name for t in P.jobs.teams.teams_of(me())]  # the job belongs to one of them (services/teams.py)
if MY_TEAMS:
    if st.session_state.get("f_team") not in MY_TEAMS:  # the first, or a clone's team the user is not in
        st.session_state["f_team"] = MY_TEAMS[0]
    st.selectbox("Team", MY_TEAMS, key="f_team",
                 help="The team's members see this job and may clone it; its leads may stop it.")
field_error("team")

with st.expander("Advanced", expanded=True):
    st.checkbox("Use mixed precision", key="f_mixed_precision")
    st.checkbox("Enable gradient checkpointing", key="f_gradient_checkpointing")
    a, b = st.columns([1, 2])
    a.checkbox("Save checkpoints every N epochs", key="f_checkpoints_on")
    b.number_input("N (epochs)", key="f_checkpoint_every", step=1, disabled=not st.session_state["f_checkpoints_on"])
    field_error("checkpoint_every")

st.number_input("Max runtime (hours)", key="f_max_runtime_hours", step=1.0, format="%g",
                help=f"The job is stopped after this long; at most {S.max_runtime_hours:g} hours.")
field_error("max_runtime_hours")
budget_note()

MY_DEFAULT = CHOICE_LABELS[P.notifications.default_notify(me())].lower()
st.selectbox("Notify me", ["", *CHOICE_LABELS], key="f_notify",
             format_func=lambda c: CHOICE_LABELS.get(c) or f"As in my notification settings ({MY_DEFAULT})",
             help="Where messages go (e-mail, Slack, Teams, ...) is set on the Notifications page.")
field_error("notify")

with st.expander("How these values reach your script"):
    st.markdown(
        "Your script runs as `python SCRIPT --learning-rate LR --epochs N --batch-size B "
        "[--dataset-path P] [--mixed-precision] [--gradient-checkpointing] [--checkpoint-every N] "
        "ADDITIONAL ARGS`.\n\nThe same values are in the environment: `PORTAL_LEARNING_RATE`, `PORTAL_EPOCHS`, "
        "`PORTAL_BATCH_SIZE`, `PORTAL_DATASET_PATH`, `PORTAL_MIXED_PRECISION` (1/0), "
        "`PORTAL_GRADIENT_CHECKPOINTING`, `PORTAL_CHECKPOINT_EVERY`, `PORTAL_GPUS`, `PORTAL_NODES`, and "
        "`PORTAL_OUTPUT_DIR` (write results there). **Save checkpoint** sends `SIGUSR1`. "
        "Print `Epoch 3/10`, `Loss: 0.42`, `key=value` pairs, or use `portal_metrics.log_metrics()` for charts. "
        "Details: docs/scripts.md."
    )

if SWEEP:
    submit_sweep.search(field_error, collect)
left, right = st.columns([1, 5])
left.button("Submit sweep" if SWEEP else "Submit job", type="primary", key="submit", icon=":material/rocket_launch:",
            on_click=submit_sweep.on_submit if SWEEP else on_submit, args=(collect,) if SWEEP else ())
right.page_link("pages/dashboard.py", label="Cancel")

# Keyed: the "Start from template" box that appears above after the first save must not close it.
with st.expander("Save as template", key="template_box"):
    st.caption("Keep these values (everything but the experiment name) under a name your team can start from.")
    st.text_input("Template name", key="f_template_name", placeholder="e.g. llama-lora-8gpu", max_chars=100)
    if MY_TEAMS:
        st.checkbox(f"Only for my team ({plain(st.session_state.get('f_team') or MY_TEAMS[0])})",
                    key="f_template_team_only", help="Otherwise everyone on this portal may start from it.")
    if "_template_problem" in st.session_state:
        st.error(st.session_state.pop("_template_problem"), icon=":material/error:")
    if "_template_saved" in st.session_state:
        saved_text = f"Saved the template '{plain(st.session_state.pop('_template_saved'))}'."
        st.success(saved_text, icon=":material/check_circle:")
        st.toast(saved_text, icon=":material/bookmark_added:")
    st.button("Save as template", key="save_template", icon=":material/bookmark_add:", on_click=save_as_template)
