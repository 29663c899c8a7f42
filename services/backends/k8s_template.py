"""The admin's own job template (Jinja2), rendered safely and held to an allow-list.

User values enter the template only as JSON scalars (``"my text"``, ``0.001``), so whatever a user types
stays one YAML scalar. The rendered YAML is parsed with ``yaml.safe_load`` and every field it sets is
checked against the allow-list below; the portal's own fields (name, labels it owns, security settings,
volumes, service account, command) cannot be changed by a template.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from services.backends.base import BackendError

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


def leaves(obj: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out += leaves(v, f"{path}.{k}" if path else str(k))
        return out or [(path, obj)]
    if isinstance(obj, list):
        out = []
        for i, v in enumerate(obj):
            out += leaves(v, f"{path}[{i}]")
        return out or [(path, obj)]
    return [(path, obj)]


def render(template_text: str, values: dict[str, Any]) -> dict[str, Any]:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    scalars = {k: json.dumps(v) for k, v in values.items()}
    try:
        text = env.from_string(template_text).render(**scalars)
        data = yaml.safe_load(text)
    except (TemplateError, yaml.YAMLError) as exc:
        raise BackendError(f"The job template cannot be used: {exc}") from exc
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
    return data


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


def apply_template(path: str, manifest: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BackendError(f"The job template {path} cannot be read: {exc.strerror}") from exc
    return merge(manifest, render(text, values))
