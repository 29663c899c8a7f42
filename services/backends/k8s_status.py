"""What a Job and its pods mean to a researcher: a status and a reason in words."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from services.backends.base import Observation
from services.models import JobStatus, format_hours
from services.reasons import POD_DELETED, disruption_reason, failure_reason

_POLICY_POD = re.compile(r"for pod [^/\s]+/(\S+)")
IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def job_ended(job: dict[str, Any]) -> bool:
    conds = _conditions(job)
    return any(conds.get(kind, {}).get("status") == "True" for kind in ("Complete", "Failed"))


def _gpus(job: dict[str, Any]) -> int:
    containers = job["spec"]["template"]["spec"]["containers"]
    return sum(int((c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", 0)) for c in containers)


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return term
    return None


def _disruption(pod: dict[str, Any]) -> str | None:
    st = pod.get("status") or {}
    target = _conditions(pod).get("DisruptionTarget") or {}
    return disruption_reason(st.get("reason"), st.get("message"),
                             target.get("reason") if target.get("status") == "True" else None,
                             bool(pod["metadata"].get("deletionTimestamp")))


def _exit_reason(pod: dict[str, Any], log_tail: Callable[[], str]) -> tuple[str, int | None] | None:
    term = _terminated(pod)
    if not term:
        return None
    code = term.get("exitCode")
    if term.get("reason") == "OOMKilled":
        return "Killed: out of memory", code
    return failure_reason(code, None, log_tail()), code


def _named_pod(message: str, pods: list[dict[str, Any]]) -> tuple[bool, dict[str, Any] | None]:
    """The pod a pod-failure-policy message names ("... for pod ns/name failed with ..."): (named, pod)."""
    m = _POLICY_POD.search(message)
    if not m:
        return False, None
    return True, next((p for p in pods if p["metadata"]["name"] == m.group(1)), None)


def failed_reason(
    job: dict[str, Any], pods: list[dict[str, Any]], log_tail: Callable[[], str]
) -> tuple[str, int | None]:
    cond = _conditions(job).get("Failed") or {}
    if cond.get("reason") == "DeadlineExceeded":
        hours = (job["spec"].get("activeDeadlineSeconds") or 0) / 3600
        return f"Hit max runtime ({format_hours(hours)})", None
    if cond.get("reason") == "PodFailurePolicy":
        named, pod = _named_pod(cond.get("message") or "", pods)
        if named and (pod is None or pod["metadata"].get("deletionTimestamp")):
            # Killed because someone deleted it (a kubelet stops it with SIGTERM, a non-zero exit that the
            # policy fails the Job on); the pod itself is then gone or going.
            return (_disruption(pod) if pod else None) or POD_DELETED, None
        if pod is not None:
            found = _exit_reason(pod, log_tail)
            if found:
                return found
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    for pod in reversed(failed):  # the newest failure ended the Job; earlier ones were retried
        found = None if _disruption(pod) else _exit_reason(pod, log_tail)
        if found:
            return found
    for pod in reversed(failed):
        why = _disruption(pod)
        if why:
            return why, None
    if cond.get("reason") == "BackoffLimitExceeded":
        return "Failed too many times (the retry limit was reached)", None
    return "The cluster ended the job without saying why", None


def _restarted_after(pods: list[dict[str, Any]]) -> str | None:
    """Why an earlier pod of a job that goes on (its replacement) was stopped from outside, if one was."""
    for pod in reversed(pods):
        if (pod.get("status") or {}).get("phase") == "Failed":
            why = _disruption(pod)
            if why:
                return why
    return None


def by_job(pods: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Pods grouped under their Job's name, oldest first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        owner = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        if owner:
            out.setdefault(owner, []).append(pod)
    for group in out.values():
        group.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
    return out


def pod_interval(pod: dict[str, Any]) -> dict[str, Any] | None:
    """When and where one pod held its GPUs, for its cost (services/costs.py): from when its node's kubelet took it
    (its image pull holds the GPUs too) to its last container's end; `end` None while it runs. None: it never
    reached a node."""
    st = pod.get("status") or {}
    start = parse_time(st.get("startTime"))
    if start is None:
        return None
    end = None
    if st.get("phase") in ("Succeeded", "Failed"):
        ends = [parse_time(term.get("finishedAt")) for cs in st.get("containerStatuses") or []
                if (term := (cs.get("state") or {}).get("terminated"))]
        ends = [e for e in ends if e is not None]
        ready = (_conditions(pod).get("Ready") or {}).get("lastTransitionTime")
        end = max(ends) if ends else parse_time(ready) or start
    return {"start": start, "end": max(end, start) if end else None, "node": (pod.get("spec") or {}).get("nodeName"),
            "pod": pod["metadata"].get("name"), "uid": pod["metadata"].get("uid")}


def observe(job: dict[str, Any] | None, pods: list[dict[str, Any]], *, stop_requested: bool,
            nodes: int, log_tail: Callable[[], str] = str) -> Observation | None:
    """log_tail is called only for a failed job: reading the log on every tick would be wasted work.
    None: nothing a person should see changed (for example between a pod's end and the Job's verdict).
    `extra["pods"]`: every pod's run interval and node (each pod of a multi-node job, and a retried one's
    earlier pods, cost what they ran)."""
    obs = _observe(job, pods, stop_requested=stop_requested, nodes=nodes, log_tail=log_tail)
    intervals = [iv for p in pods if (iv := pod_interval(p)) is not None]
    if obs is not None and intervals:
        obs.extra["pods"] = intervals
    return obs


def _observe(job: dict[str, Any] | None, pods: list[dict[str, Any]], *, stop_requested: bool,
             nodes: int, log_tail: Callable[[], str]) -> Observation | None:
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
    again = _restarted_after(pods)
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    if running:
        reason = f"{len(running)}/{nodes} pods running" if nodes > 1 else None
        if again:
            reason = f"{again}; running again" + (f" ({reason})" if reason else "")
        first = min((parse_time(p["status"].get("startTime")) or now) for p in running)
        return Observation(JobStatus.RUNNING, reason, started_at=started or first)
    pending = [p for p in pods if (p.get("status") or {}).get("phase") == "Pending"
               and not p["metadata"].get("deletionTimestamp")]
    for pod in pending:
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
    if pending:
        return Observation(JobStatus.QUEUED, f"{again}; waiting to run again" if again else None)
    # No pod waits or runs and the Job has no verdict yet (not created yet, or between a pod's end and the
    # controller's decision): what the portal shows stays as it is.
    return None
