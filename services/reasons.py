"""Turn an exit code, a signal and the log's tail into a reason a person understands."""

from __future__ import annotations

import re
import signal
from functools import lru_cache

from services.models import format_hours

_CUDA_OOM = re.compile(r"CUDA out of memory|torch\.(?:cuda\.)?OutOfMemoryError|CUDA error: out of memory")
_NCCL = re.compile(r"(NCCL (?:error|Error|WARN)[^\n]*)")
_EXC_LINE = re.compile(r"^(?P<exc>[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b[^\n]*)$", re.M)


# "loss=nan", "'loss': nan", "train_loss: inf", "Loss is NaN", "loss became inf".
_NAN_LOSS = re.compile(r"\b\w*loss\w*['\"]?\s*(?:[:=]|is|became|=\s*tensor\()\s*[-+]?(nan|inf)\b", re.I)

_NAN_BACKWARD = re.compile(r"returned (nan|inf) values", re.I)


def reason_from_log(tail: str, patterns: list[tuple[re.Pattern[str], str]] | None = None) -> str | None:
    """A cause recognised in the last lines of a failed job's log: the admin's own patterns first."""
    for pattern, reason in patterns or ():
        if pattern.search(tail):
            return reason
    if _CUDA_OOM.search(tail):
        return "Out of GPU memory"
    nccl = _NCCL.search(tail)
    if nccl:
        return nccl.group(1).strip()[:200]
    exception = None
    if "Traceback (most recent call last)" in tail:
        found = _EXC_LINE.findall(tail)
        if found:
            exception = found[-1].strip()[:200]
    # torch's anomaly detection names the NaN in the exception itself: "...Backward0' returned nan values".
    nan = _NAN_LOSS.search(tail) or _NAN_BACKWARD.search(tail)
    if nan:
        what = "NaN" if nan.group(1).lower() == "nan" else "infinite"
        return f"Loss became {what}" + (f" ({exception})" if exception else "")
    return exception


def failure_reason(
    exit_code: int | None,
    signal_number: int | None,
    log_tail: str,
    *,
    timed_out_hours: float | None = None,
    patterns: list[tuple[re.Pattern[str], str]] | None = None,
) -> str:
    if timed_out_hours is not None:
        return f"Hit max runtime ({format_hours(timed_out_hours)})"
    from_log = reason_from_log(log_tail, _admin if patterns is None else patterns)
    if from_log == "Out of GPU memory":
        return from_log
    if signal_number == signal.SIGKILL or exit_code == 137:
        return "Killed: out of memory"
    if signal_number is not None:
        try:
            name = signal.Signals(signal_number).name
        except ValueError:
            name = str(signal_number)
        return f"Killed by signal {name}"
    base = f"Exited with code {exit_code}"
    return f"{base}: {from_log}" if from_log else base


_admin: list[tuple[re.Pattern[str], str]] = []


def use_admin_patterns(patterns: dict[str, str]) -> None:
    """The admin's PORTAL_FAILURE_PATTERNS for every failure of this process (set when the portal is built)."""
    global _admin
    _admin = _compiled(tuple(patterns.items()))


@lru_cache(maxsize=8)
def _compiled(items: tuple[tuple[str, str], ...]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(p, re.M), reason[:200]) for p, reason in items]


# What the kubelet's eviction message names (the node-pressure signal), in a person's words.
_EVICTED_FOR = (("memory", "the node ran out of memory"), ("ephemeral-storage", "the node ran out of disk space"),
                ("nodefs", "the node ran out of disk space"), ("imagefs", "the node ran out of disk space"),
                ("pid", "the node ran out of process slots"))
# Why Kubernetes marked a pod with DisruptionTarget (the condition's reason).
_DISRUPTED_BY = {
    "PreemptionByScheduler": "Preempted: a higher-priority job needed the GPUs",
    "EvictionByEvictionAPI": "Evicted: the node was drained",
    "DeletionByTaintManager": "Node lost",
    "DeletionByPodGC": "Node lost",
    "TerminationByKubelet": "The node shut down",
}
POD_DELETED = "The pod was deleted"


def disruption_reason(pod_reason: str | None, message: str | None, disruption: str | None,
                      deleted: bool) -> str | None:
    """Why a pod stopped that its script did not cause (None: nothing from outside ended it).

    pod_reason and message are the pod's status fields (the kubelet writes "Evicted" and "The node was low on
    resource: memory. ..."), disruption the reason of its DisruptionTarget condition, deleted whether it was
    being deleted (someone deleted it: a person, or a controller without saying why)."""
    if pod_reason == "Evicted":
        text = (message or "").lower()
        for signal_name, words in _EVICTED_FOR:
            if f"resource: {signal_name}" in text:
                return f"Evicted: {words}"
        return "Evicted by the node"
    if pod_reason in ("NodeLost", "UnexpectedAdmissionError"):
        return "Node lost"
    if pod_reason in ("Shutdown", "Terminated", "NodeShutdown"):
        return "The node shut down"
    if disruption:
        return _DISRUPTED_BY.get(disruption, "Stopped by the cluster")
    return POD_DELETED if deleted else None
