"""The Submit page's "Sweep" form (issue 19): the job form's fields, where learning rate, batch size, epochs and any
extra argument by name are each a fixed value, a list or a range, plus the search: method, objective, budget,
parallelism, early stopping and what to do with failed trials, and what the whole sweep can cost.

Drawn by pages/submit.py (which keeps the fields a sweep shares with a single job); nothing here runs at import.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import streamlit as st
from pydantic import ValidationError

from pages.common import me, money, plain, portal
from services.job_charts import HIDDEN_SERIES
from services.models import NotFound, ValidationProblem
from services.script_names import save_upload
from services.sweep_spec import EXTRA_PARAM, FORM_PARAMS, SWEEP_NAME_MAX, ParamSpec, Value
from services.sweeps import parse_spec
from services.validation import validation_problems

SWEEP_PAGE = "pages/sweep.py"
MODES = ("Single job", "Sweep")
KINDS = {"fixed": "Fixed", "list": "List of values", "uniform": "Range, uniform", "loguniform": "Range, log-uniform",
         "int": "Range, integers"}
# What each of the form's own parameters may be: batch size and epochs are whole numbers.
KINDS_OF = {"learning_rate": ["fixed", "list", "loguniform", "uniform"], "batch_size": ["fixed", "list", "int"],
            "epochs": ["fixed", "list", "int"]}
LABELS = {"learning_rate": "Learning rate", "batch_size": "Batch size", "epochs": "Epochs"}
INTEGER = frozenset({"batch_size", "epochs"})
METHODS = {"tpe": "Bayesian (TPE)", "random": "Random", "grid": "Grid (every combination)"}
DIRECTIONS = {"minimize": "Minimise", "maximize": "Maximise"}
AGGREGATES = {"final": "Final value", "best": "Best value during the run"}
EARLY = {"median": "Median rule", "halving": "Successive halving", "none": "None"}
SETTINGS = {"method": "tpe", "objective": "loss", "direction": "minimize", "aggregate": "final", "budget": 10,
            "parallel": 2, "early_stopping": "median", "retries": 0, "max_failed": 3}
# The form's single-job parameter fields, which a sweep's form does not draw but its base request still reads.
KEPT = ("f_learning_rate", "f_epochs", "f_batch_size")
# The sweep form's own values (not its buttons, whose state cannot be set).
KEPT_SWEEP = re.compile(r"^sw_(extra|new_name|.+_(kind|value|values|low|high)|" + "|".join(SETTINGS) + ")$")


def _text(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _fill_param(name: str, p: ParamSpec | None, fixed: Any) -> None:
    ss = st.session_state
    ss[f"sw_{name}_kind"] = p.kind if p is not None else "fixed"
    ss[f"sw_{name}_value"] = _text(p.value if p is not None and p.kind == "fixed" else fixed)
    ss[f"sw_{name}_values"] = ", ".join(_text(v) for v in p.values) if p is not None else ""
    low, high = (p.low, p.high) if p is not None and p.low is not None else (None, None)
    if low is None and name == "learning_rate":
        low, high = 1e-4, 1e-1
    ss[f"sw_{name}_low"], ss[f"sw_{name}_high"] = _text(low), _text(high)


def _prefill(base: dict[str, Any], params: dict[str, ParamSpec], settings: dict[str, Any]) -> None:
    extra = [n for n in params if n not in FORM_PARAMS]
    st.session_state["sw_extra"] = extra
    for name in (*FORM_PARAMS, *extra):
        _fill_param(name, params.get(name), base.get(name))
    for key, default in SETTINGS.items():
        st.session_state[f"sw_{key}"] = settings.get(key, default)


def _clone(prefill: Callable[[dict[str, Any]], None], sweep_id: str) -> None:
    """The form filled with a sweep's values ("Clone with edits" on its page), under a new name."""
    try:
        view = portal().sweeps.get(me(), int(sweep_id))
    except (ValueError, NotFound):
        st.error(f"Sweep {plain(sweep_id)} was not found, so there is nothing to clone.")
        return
    spec = view.spec
    name = (spec.name[: SWEEP_NAME_MAX - 6] + "-clone").strip("-")
    prefill(spec.base | {"name": name})
    _prefill(spec.base, spec.params, spec.model_dump())
    st.session_state["_sw_seeded"] = {n: st.session_state.get(f"f_{n}") for n in FORM_PARAMS}
    st.session_state["f_mode"] = "Sweep"


def mode(prefill: Callable[[dict[str, Any]], None]) -> bool:
    """The "Single job" / "Sweep" choice at the top of the Submit page; True for a sweep. `?sweep=N` fills the sweep
    form with sweep N's values. Also keeps the fields of the form not drawn this run (Streamlit forgets those)."""
    ss = st.session_state
    if "_sweep_submitted" in ss:
        st.switch_page(SWEEP_PAGE, query_params={"id": str(ss.pop("_sweep_submitted"))})
    clone = st.query_params.get("sweep")
    if clone and ss.get("_sweep_cloned_from") != clone:
        ss["_sweep_cloned_from"] = clone
        _clone(prefill, clone)
    for key in [*KEPT, *(k for k in ss if isinstance(k, str) and KEPT_SWEEP.match(k))]:
        if key in ss:
            ss[key] = ss[key]
    single = {n: ss.get(f"f_{n}") for n in FORM_PARAMS}
    if "sw_method" not in ss:
        _prefill(single, {}, {})
    # A fixed row follows its single-job field when that changes (typed there, or filled by a clone or template).
    seeded = ss.setdefault("_sw_seeded", dict(single))
    for name, value in single.items():
        if value != seeded.get(name):
            ss[f"sw_{name}_value"], seeded[name] = _text(value), value
    ss.setdefault("f_mode", MODES[0])
    choice = st.segmented_control("What to submit", MODES, key="f_mode", required=True,
                                  label_visibility="collapsed",
                                  help="A sweep runs one job per set of values (a trial) and finds the best.")
    return choice == "Sweep"


# The hyperparameters ---------------------------------------------------------------------------------------
def _add_param() -> None:
    ss = st.session_state
    name = str(ss.get("sw_new_name") or "").strip().lstrip("-")
    problems = {k: v for k, v in ss.get("_problems", {}).items() if k != "new_param"}
    extra = ss.setdefault("sw_extra", [])
    if not EXTRA_PARAM.match(name) or name in FORM_PARAMS:
        problem = ("name the script's argument, e.g. 'weight_decay' for --weight_decay (lower-case letters, "
                   "digits and '_')" if name not in FORM_PARAMS else f"{LABELS[name]} is already above")
        ss["_problems"] = problems | {"new_param": problem}
        return
    if name in extra:
        ss["_problems"] = problems | {"new_param": f"'{name}' is already a parameter"}
        return
    extra.append(name)
    _fill_param(name, None, "")
    ss["sw_new_name"] = ""
    ss["_problems"] = problems


def _remove_param(name: str) -> None:
    st.session_state["sw_extra"] = [n for n in st.session_state.get("sw_extra", []) if n != name]


def parameters(field_error: Callable[[str], None]) -> None:
    """A row per hyperparameter: how it varies, and its value, values or range."""
    st.caption("Each value is fixed, a list to choose from, or a range to sample. Extra parameters reach the script "
               "as `--name value`.")
    for name in (*FORM_PARAMS, *st.session_state.get("sw_extra", [])):
        row = st.columns([2, 2, 4, 1], vertical_alignment="bottom")
        row[0].markdown(f"**{LABELS.get(name, f'--{name}')}**")
        kind = row[1].selectbox(f"How {LABELS.get(name, name)} varies", KINDS_OF.get(name, list(KINDS)),
                                key=f"sw_{name}_kind", format_func=KINDS.__getitem__, label_visibility="collapsed")
        with row[2]:
            if kind == "fixed":
                st.text_input(f"{LABELS.get(name, name)}: value", key=f"sw_{name}_value", label_visibility="collapsed",
                              placeholder="the value")
            elif kind == "list":
                st.text_input(f"{LABELS.get(name, name)}: values", key=f"sw_{name}_values",
                              label_visibility="collapsed", placeholder="values, separated by commas: 16, 32, 64")
            else:
                low, high = st.columns(2)
                low.text_input(f"{LABELS.get(name, name)}: lowest", key=f"sw_{name}_low", placeholder="lowest")
                high.text_input(f"{LABELS.get(name, name)}: highest", key=f"sw_{name}_high", placeholder="highest")
        if name not in FORM_PARAMS:
            row[3].button("", key=f"sw_{name}_remove", icon=":material/close:", help=f"Remove --{name}",
                          on_click=_remove_param, args=(name,))
        field_error(name)
    field_error("params")
    add = st.columns([4, 2, 3], vertical_alignment="bottom")
    add[0].text_input("Add parameter", key="sw_new_name", placeholder="e.g. weight_decay",
                      help="Any argument your script takes, by name: it is passed as `--name value`.")
    add[1].button("Add parameter", key="sw_add", icon=":material/add:", on_click=_add_param)
    field_error("new_param")


def _value(name: str, text: str) -> Value:
    """A typed value: a number for the form's parameters (a whole one for batch size and epochs); an extra
    argument may also be a word (an optimiser's name)."""
    text = text.strip()
    if not text:
        raise ValueError("enter a value")
    try:
        number = float(text)
    except ValueError:
        if name in FORM_PARAMS:
            raise ValueError(f"'{text}' is not a number") from None
        return text
    if name in INTEGER and not number.is_integer():
        raise ValueError(f"'{text}' is not a whole number")
    written_whole = "." not in text and "e" not in text.lower()  # "3" stays 3 for the script, "3.0" stays 3.0
    return int(number) if number.is_integer() and (name in INTEGER or written_whole) else number


def _param(name: str) -> dict[str, Any]:
    ss = st.session_state
    kind = ss.get(f"sw_{name}_kind", "fixed")
    if kind == "fixed":
        return {"kind": kind, "value": _value(name, ss.get(f"sw_{name}_value", ""))}
    if kind == "list":
        texts = [t for t in str(ss.get(f"sw_{name}_values", "")).split(",") if t.strip()]
        if not texts:
            raise ValueError("enter the values to try, separated by commas")
        return {"kind": kind, "values": [_value(name, t) for t in texts]}
    ends = []
    for end in ("low", "high"):
        text = str(ss.get(f"sw_{name}_{end}", "")).strip()
        try:
            ends.append(float(text))
        except ValueError:
            raise ValueError(f"enter the range's {'lowest' if end == 'low' else 'highest'} value as a number") \
                from None
    return {"kind": kind, "low": ends[0], "high": ends[1]}


def read_params() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The parameters as the spec takes them, and a sentence per parameter whose inputs are not one."""
    params: dict[str, dict[str, Any]] = {}
    problems: dict[str, str] = {}
    for name in (*FORM_PARAMS, *st.session_state.get("sw_extra", [])):
        try:
            params[name] = ParamSpec.model_validate(_param(name)).model_dump(exclude_defaults=True)
        except ValidationError as exc:
            problems[name] = next(iter(validation_problems(exc).values()))
        except ValueError as exc:
            problems[name] = str(exc)
    return params, problems


# The search -----------------------------------------------------------------------------------------------------
def metric_suggestions(script: str | None) -> list[str]:
    return _metric_suggestions(portal().settings.sqlalchemy_url, me().name, script or "")


@st.cache_data(ttl=60, show_spinner=False)  # a search over the owner's jobs: not on every keystroke of the form
def _metric_suggestions(database: str, owner: str, script: str) -> list[str]:
    """The metrics this owner's last 50 jobs of this script reported (the newest one's every series), loss first.
    `database` is part of the cache's key only: another portal (a test's) is another store."""
    names = {"loss"}
    if script:
        own = [j for j in portal().jobs.list_jobs(limit=50, search=script, owner=owner)
               if j.request.get("script") == script]
        for job in own:
            names |= set(job.final_metrics) | set(job.latest_metrics)
        if own:
            names |= set(portal().jobs.metric_names(own[0].id))
    return sorted(names - HIDDEN_SERIES, key=lambda n: (n != "loss", n))


def _settings() -> dict[str, Any]:
    return {key: st.session_state.get(f"sw_{key}", default) for key, default in SETTINGS.items()}


def _radio(label: str, key: str, labels: dict[str, str], field_error: Callable[[str], None], **kw: Any) -> None:
    st.radio(label, list(labels), key=f"sw_{key}", format_func=labels.__getitem__, horizontal=True, **kw)
    field_error(key)


def search(field_error: Callable[[str], None], collect: Callable[[], dict[str, Any]]) -> None:
    """Method, objective, budget, parallelism, early stopping and failed trials; then the whole sweep's cost."""
    st.subheader("Search")
    _radio("Method", "method", METHODS, field_error,
           help="Grid tries every combination of lists and integer ranges; random and TPE sample the ranges (TPE "
                "learns from the finished trials where to look next).")
    a, b, c = st.columns([2, 1, 1])
    with a:
        names = metric_suggestions(st.session_state.get("f_script"))
        if st.session_state.get("sw_objective") not in names:
            names.append(st.session_state.get("sw_objective") or "loss")
        st.selectbox("Objective metric", names, key="sw_objective", accept_new_options=True,
                     help="A metric your script prints (`loss=0.4`, `val_acc: 0.9`): suggested from what your past "
                          "runs of this script reported; type another name to use it.")
        field_error("objective")
    with b:
        _radio("Goal", "direction", DIRECTIONS, field_error)
    with c:
        _radio("Value of a trial", "aggregate", AGGREGATES, field_error)
    d, e, f, g = st.columns(4)
    d.number_input("Trials in all", key="sw_budget", step=1, help="The budget: never exceeded (retries included).")
    with d:
        field_error("budget")
    e.number_input("Trials at once", key="sw_parallel", step=1)
    with e:
        field_error("parallel")
    f.number_input("Retries of a failed trial", key="sw_retries", step=1)
    with f:
        field_error("retries")
    g.number_input("Stop after this many failed", key="sw_max_failed", step=1)
    with g:
        field_error("max_failed")
    _radio("Early stopping", "early_stopping", EARLY, field_error,
           help="Stops a trial whose objective is clearly worse than the others' at the same step, from the metrics "
                "the portal already reads in the log (median: worse than the median; successive halving: not in "
                "the best third at each rung).")
    cost_estimate(collect)


def spec_data(collect: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The sweep the form describes, as the service takes it, and the sentences of its parameters' problems."""
    base = collect()
    params, problems = read_params()
    return {"name": base.get("name", ""), "base": base, "params": params, **_settings()}, problems


def cost_estimate(collect: Callable[[], dict[str, Any]]) -> None:
    data, problems = spec_data(collect)
    try:
        if problems:
            raise ValidationProblem(problems)
        spec = parse_spec(data)
        gpu_hours, cost = portal().sweeps.estimate_cost(me(), spec)
    except ValidationProblem:
        st.metric("Estimated cost of the sweep", "–")
        st.caption("The estimate shows once the sweep's values are complete.")
        return
    req = spec.trial_request(spec.first_values())
    gpus = req.gpus * req.nodes
    trials = f"up to {spec.budget} trial{'s' if spec.budget != 1 else ''}"
    how = (f"{trials} × {gpus} GPU{'s' if gpus != 1 else ''} × {req.max_runtime_hours:g} h = {gpu_hours:g} GPU-hours"
           if gpus else f"{trials} × {req.max_runtime_hours:g} h on CPU")
    st.metric("Estimated cost of the sweep", f"up to {money(cost)}")
    st.caption(f"{how} ≈ {money(cost)}, if every trial ran to its max runtime (retries of failed trials come on "
               "top; trials stopped early cost less).")


def on_submit(collect: Callable[[], dict[str, Any]]) -> None:
    ss = st.session_state
    data, problems = spec_data(collect)
    if ss.get("f_source") == "Upload new script":
        file = ss.get("f_upload")
        if file is None:
            problems["upload"] = "choose a .py file to upload, or pick a script from the workspace"
        elif not problems:
            try:
                data["base"]["script"] = save_upload(portal().jobs.workspace, me(), file.name, file.getvalue())
            except ValidationProblem as exc:
                problems |= exc.problems
    if problems:
        ss["_problems"] = problems
        return
    try:
        view = portal().sweeps.create(me(), data)
    except ValidationProblem as exc:
        ss["_problems"] = exc.problems
        return
    ss.pop("_problems", None)
    ss["_sweep_submitted"] = view.id
