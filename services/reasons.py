"""Turn an exit code, a signal and the log's tail into a reason a person understands."""

from __future__ import annotations

import re
import signal

from services.models import format_hours

_CUDA_OOM = re.compile(r"CUDA out of memory|torch\.(?:cuda\.)?OutOfMemoryError|CUDA error: out of memory")
_NCCL = re.compile(r"(NCCL (?:error|Error|WARN)[^\n]*)")
_EXC_LINE = re.compile(r"^(?P<exc>[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b[^\n]*)$", re.M)


def reason_from_log(tail: str) -> str | None:
    """A cause recognised in the last lines of a failed job's log."""
    if _CUDA_OOM.search(tail):
        return "Out of GPU memory"
    nccl = _NCCL.search(tail)
    if nccl:
        return nccl.group(1).strip()[:200]
    if "Traceback (most recent call last)" in tail:
        found = _EXC_LINE.findall(tail)
        if found:
            return found[-1].strip()[:200]
    return None


def failure_reason(
    exit_code: int | None,
    signal_number: int | None,
    log_tail: str,
    *,
    timed_out_hours: float | None = None,
) -> str:
    if timed_out_hours is not None:
        return f"Hit max runtime ({format_hours(timed_out_hours)})"
    from_log = reason_from_log(log_tail)
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
