"""PromQL pieces shared by the portal's Prometheus readers (GPU: services/gpu_telemetry.py, CPU and memory:
services/resource_telemetry.py): quoting, the selector of a set of Jobs' pods, and mapping a series back to its job."""

from __future__ import annotations

import math
from typing import Any

_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal holding ``value``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def re2_escape(value: str) -> str:
    """``value`` as a literal inside a (RE2) regular expression."""
    return "".join("\\" + ch if ch in _RE2_SPECIAL else ch for ch in value)


def pod_regex(job_names: list[str]) -> str:
    """Alternation matching the pods of the given Jobs (``<job>-<suffix>``)."""
    return "|".join(f"{re2_escape(name)}-.*" for name in sorted(set(job_names)))


def pod_selector(metric: str, namespace: str, regex: str, namespace_label: str = "namespace",
                 pod_label: str = "pod", extra: str = "") -> str:
    """``metric`` of the pods matching ``regex`` in ``namespace`` (``extra``: more matchers, already PromQL)."""
    more = f",{extra}" if extra else ""
    return f"{metric}{{{namespace_label}={promql_string(namespace)},{pod_label}=~{promql_string(regex)}{more}}}"


def sorted_names(jobs: dict[int, str]) -> list[tuple[str, int]]:
    """(Job name, job id) pairs, longest name first, for job_for_pod."""
    return sorted(((name, job_id) for job_id, name in jobs.items()), key=lambda item: -len(item[0]))


def job_for_pod(pod: str, names_longest_first: list[tuple[str, int]]) -> int | None:
    """The job whose pod this is, given (Job name, job id) pairs longest name first (mlp-12 before mlp-1)."""
    for name, job_id in names_longest_first:
        if pod.startswith(name + "-"):
            return job_id
    return None


def sample_value(series: dict[str, Any]) -> float | None:
    """The finite value of one instant-vector series, else None."""
    try:
        value = float(series["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value
