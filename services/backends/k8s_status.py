"""What a Job and its pods mean to a researcher: a status and a reason in words."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from services.backends.base import Observation
from services.models import JobStatus, format_hours
from services.reasons import failure_reason

IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def _gpus(job: dict[str, Any]) -> int:
    containers = job["spec"]["template"]["spec"]["containers"]
    return sum(int((c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", 0)) for c in containers)


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return term
    return None


def failed_reason(
    job: dict[str, Any], pods: list[dict[str, Any]], log_tail: Callable[[], str]
) -> tuple[str, int | None]:
    cond = _conditions(job).get("Failed") or {}
    if cond.get("reason") == "DeadlineExceeded":
        hours = (job["spec"].get("activeDeadlineSeconds") or 0) / 3600
        return f"Hit max runtime ({format_hours(hours)})", None
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    for pod in failed:
        st = pod.get("status") or {}
        if st.get("reason") in ("Evicted", "NodeLost", "Shutdown", "Terminated") or (
            _conditions(pod).get("DisruptionTarget", {}).get("status") == "True"
        ):
            return "Node lost / evicted", None
        term = _terminated(pod)
        if term:
            code = term.get("exitCode")
            if term.get("reason") == "OOMKilled":
                return "Killed: out of memory", code
            return failure_reason(code, None, log_tail()), code
    return f"Failed: {cond.get('message') or cond.get('reason') or 'the Job failed'}", None


def observe(job: dict[str, Any] | None, pods: list[dict[str, Any]], *, stop_requested: bool,
            nodes: int, log_tail: Callable[[], str] = str) -> Observation:
    """log_tail is called only for a failed job: reading the log on every tick would be wasted work."""
    now = datetime.now(UTC)
    if job is None or job["metadata"].get("deletionTimestamp"):
        if stop_requested:
            return Observation(JobStatus.STOPPED, "Stopped by user", finished_at=now)
        return Observation(JobStatus.FAILED, "Lost: the Job was deleted from the cluster outside the portal",
                           finished_at=now)
    st = job.get("status") or {}
    started = parse_time(st.get("startTime"))
    conds = _conditions(job)
    if conds.get("Complete", {}).get("status") == "True":
        return Observation(JobStatus.SUCCEEDED, None, 0, started,
                           parse_time(st.get("completionTime")) or now)
    if conds.get("Failed", {}).get("status") == "True":
        reason, code = failed_reason(job, pods, log_tail)
        return Observation(JobStatus.FAILED, reason, code, started,
                           parse_time(conds["Failed"].get("lastTransitionTime")) or now)
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    if running:
        reason = f"{len(running)}/{nodes} pods running" if nodes > 1 else None
        first = min((parse_time(p["status"].get("startTime")) or now) for p in running)
        return Observation(JobStatus.RUNNING, reason, started_at=started or first)
    for pod in pods:
        pst = pod.get("status") or {}
        sched = _conditions(pod).get("PodScheduled") or {}
        if sched.get("status") == "False" and sched.get("reason") == "Unschedulable":
            msg = sched.get("message") or ""
            if "nvidia.com/gpu" in msg:
                return Observation(JobStatus.QUEUED, f"Waiting for {_gpus(job)} GPUs")
            return Observation(JobStatus.QUEUED, f"Waiting for resources: {msg[:160]}")
        for cs in pst.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in IMAGE_PULL:
                return Observation(JobStatus.QUEUED, "Image could not be pulled")
    return Observation(JobStatus.QUEUED, None)
