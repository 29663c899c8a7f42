"""The admin's own job template (Jinja2), rendered safely and held to an allow-list.

User values enter the template only as JSON scalars (``"my text"``, ``0.001``), so whatever a user types
stays one YAML scalar. The rendered YAML is parsed with ``yaml.safe_load`` and every field it sets is
checked against the allow-list below; the portal's own fields (name, labels it owns, security settings,
volumes, service account, command) cannot be changed by a template.

Kubernetes expands ``$(VAR)`` in env values (and commands and args). A ``$`` the admin wrote in the template is
the admin's reference and stays as written; a ``$`` inside a value a user typed is escaped there (``$$``), the
same way the portal escapes its own env and args, so ``$(HOME)`` in a dataset path reaches the script as typed.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import MAX_RANGE, SandboxedEnvironment, safe_range

from services.backends.base import BackendError
from services.backends.k8s_manifests import k8s_literal

_CTR = r"spec\.template\.spec\.containers\[0\]"
ALLOWED = [re.compile(p + r"$") for p in (
    # Map keys may hold dots themselves ("kubernetes.io/os"): anything after the map's own path.
    r"metadata\.(labels|annotations)\..+",
    r"spec\.template\.metadata\.(labels|annotations)\..+",
    r"spec\.template\.spec\.nodeSelector\..+",
    r"spec\.template\.spec\.tolerations\[\d+\]\.(key|operator|value|effect|tolerationSeconds)",
    r"spec\.template\.spec\.affinity(\..+)?",
    r"spec\.template\.spec\.(priorityClassName|schedulerName)",
    r"spec\.template\.spec\.imagePullSecrets\[\d+\]\.name",
    _CTR + r"\.(image|imagePullPolicy)",
    _CTR + r"\.env\[\d+\]\.(name|value)",
    _CTR + r"\.resources\.(requests|limits)\..+",
)]
# Where Kubernetes expands $(VAR): a user's '$' must arrive there escaped (commands and args are not allowed above,
# but should they ever be, the escaping already holds).
EXPANDED = re.compile(r"spec\.template\.spec\.(containers|initContainers)\[\d+\]\."
                      r"(env\[\d+\]\.value|command\[\d+\]|args\[\d+\])$")
MAX_OUTPUT_CHARS = 256 * 1024  # a Job manifest is a few KB; more is a runaway loop, and the API refuses > 1.5 MB
MAX_LEAVES = 10_000  # YAML aliases can nest a few lines into billions of paths
MAX_LOOP_STEPS = MAX_RANGE  # range() items per render, all loops together (nested loops multiply)


def leaves(obj: Any, path: str = "", budget: list[int] | None = None) -> list[tuple[str, Any]]:
    budget = [MAX_LEAVES] if budget is None else budget
    if isinstance(obj, dict | list) and obj:
        out: list[tuple[str, Any]] = []
        items = obj.items() if isinstance(obj, dict) else ((f"[{i}]", v) for i, v in enumerate(obj))
        for k, v in items:
            sub = f"{path}{k}" if isinstance(obj, list) else (f"{path}.{k}" if path else str(k))
            out += leaves(v, sub, budget)
        return out
    budget[0] -= 1
    if budget[0] < 0:
        raise BackendError(f"The job template failed: it describes more than {MAX_LEAVES:,} fields.")
    return [(path, obj)]


def _free_mark(template_text: str, values: dict[str, Any]) -> str:
    """A private-use character found nowhere in the template or the values: it stands for a user's '$'."""
    seen = set(template_text + json.dumps(values, ensure_ascii=False))
    return next(chr(c) for c in chain(range(0xE000, 0xF900), range(0xF0000, 0xFFFFE)) if chr(c) not in seen)


def _marked(value: Any, mark: str) -> Any:
    if isinstance(value, str):
        return value.replace("$", mark)
    if isinstance(value, list):
        return [_marked(v, mark) for v in value]
    if isinstance(value, dict):
        return {k: _marked(v, mark) for k, v in value.items()}
    return value


def _text(value: str) -> str:
    # JSON writes characters outside the BMP (emoji) as surrogate pairs; YAML reads them back as two halves.
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _unmark(obj: Any, mark: str, path: str = "") -> Any:
    """A user's '$' back: escaped where Kubernetes expands $(VAR), as typed everywhere else (labels, annotations)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key = _text(k).replace(mark, "$") if isinstance(k, str) else k
            out[key] = _unmark(v, mark, f"{path}.{key}" if path else str(key))
        return out
    if isinstance(obj, list):
        return [_unmark(v, mark, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, str):
        return _text(obj).replace(mark, k8s_literal("$") if EXPANDED.match(path) else "$")
    return obj


def _bounded_range(budget: list[int]) -> Callable[..., range]:
    def bounded(*args: int) -> range:
        steps = safe_range(*args)  # itself refuses a single range of more than MAX_RANGE items
        budget[0] -= len(steps)
        if budget[0] < 0:
            raise OverflowError(f"its loops take more than {MAX_LOOP_STEPS:,} steps in all")
        return steps
    return bounded


def _template_line(exc: BaseException) -> int | None:
    """The template's line where rendering stopped (Jinja rewrites tracebacks to point into the template)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _failure(exc: BaseException) -> BackendError:
    if isinstance(exc, TemplateSyntaxError):
        problem = (exc.message or "syntax error").rstrip(".")
        return BackendError(f"The job template failed at line {exc.lineno}: {problem}.")
    if isinstance(exc, RecursionError):
        detail = "it calls itself without end"
    elif isinstance(exc, MemoryError):
        detail = "it needs too much memory"
    else:
        detail = str(exc).rstrip(".") or type(exc).__name__
    line = _template_line(exc)
    return BackendError(f"The job template failed{f' at line {line}' if line else ''}: {detail}.")


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, also refusing a power or a repetition that alone would take the portal's memory."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and \
                left.bit_length() * right > 65536:
            raise OverflowError("a number in it is too large")
        if operator == "*" and isinstance(left, int) != isinstance(right, int):
            seq, times = (right, left) if isinstance(left, int) else (left, right)
            if isinstance(seq, str | list | tuple) and len(seq) * times > MAX_OUTPUT_CHARS:
                raise OverflowError(f"a text or list in it is longer than {MAX_OUTPUT_CHARS // 1024} KB")
        return super().call_binop(context, operator, left, right)


def _render_text(template_text: str, context: dict[str, Any]) -> str:
    env = _Sandbox(undefined=StrictUndefined, autoescape=False)
    env.globals["range"] = _bounded_range([MAX_LOOP_STEPS])
    parts: list[str] = []
    size = 0
    for part in env.from_string(template_text).generate(**context):
        size += len(part)
        if size > MAX_OUTPUT_CHARS:
            raise BackendError(f"The job template failed: it renders more than {MAX_OUTPUT_CHARS // 1024} KB.")
        parts.append(part)
    return "".join(parts)


def render(template_text: str, values: dict[str, Any]) -> dict[str, Any]:
    mark = _free_mark(template_text, values)
    scalars = {k: json.dumps(_marked(v, mark)) for k, v in values.items()}
    try:
        text = _render_text(template_text, scalars)
    except BackendError:
        raise
    except Exception as exc:  # an admin's template can raise anything: the user gets a sentence, not a traceback
        raise _failure(exc) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        # Its problem only: the snippet of the line would echo what users typed.
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise BackendError(f"The job template does not render valid YAML{where}: {exc.problem or exc.context}.") \
            from exc
    except (yaml.YAMLError, RecursionError) as exc:
        raise BackendError("The job template does not render valid YAML.") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BackendError("The job template must describe a Job (a YAML mapping).")
    for path, _ in leaves(data):
        if path in ("apiVersion", "kind"):
            continue
        if not any(rule.match(path) for rule in ALLOWED):
            raise BackendError(f"The job template sets {path}, which the portal does not allow "
                               "(security settings, volumes, service accounts and commands are the portal's).")
    return _unmark(data, mark)


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """The template's allowed fields on top of the portal's manifest (containers merge by position, env appends)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if key in ("apiVersion", "kind"):
            continue
        if key == "containers" and isinstance(value, list):
            for i, ctr in enumerate(value):
                if i < len(out["containers"]):
                    out["containers"][i] = merge(out["containers"][i], ctr)
        elif key == "env" and isinstance(value, list):
            names = {e["name"] for e in value}
            out["env"] = [e for e in out.get("env", []) if e["name"] not in names] + value
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def keep_portal_keys(merged: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The portal's own labels and annotations (managed-by, job id, owner, experiment, submission id) win over the
    template's: the portal finds its Jobs and pods, and tells whose they are, by them."""
    own_labels = base["metadata"]["labels"]
    own_annotations = base["metadata"]["annotations"]
    meta = merged["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), **own_labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), **own_annotations}
    pod_meta = merged["spec"]["template"].setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **base["spec"]["template"]["metadata"]["labels"]}
    pod_annotations = pod_meta.get("annotations") or {}
    # The pods carry these annotations only where the template puts them; then they hold the portal's values.
    pod_annotations.update({k: v for k, v in own_annotations.items() if k in pod_annotations})
    pod_meta["annotations"] = pod_annotations
    return merged


def apply_template(path: str, manifest: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BackendError(f"The job template {path} cannot be read: {exc.strerror}") from exc
    return keep_portal_keys(merge(manifest, render(text, values)), manifest)
