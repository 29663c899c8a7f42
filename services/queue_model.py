"""Where a waiting job stands, in terms every backend can fill in.

The local backend fills these from the store's own queue (services/local_queue.py); the Kubernetes backend from
Kueue (its LocalQueues, the visibility API's pending workloads and the workloads' conditions). Pages and the API
show them through services/queues.py, which also decides what of other people's jobs a viewer may see: the
backends report job ids only, never names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The priorities a job may ask for, lowest first, each with the sentence the submit form shows. On Kubernetes
# they are the admin's WorkloadPriorityClasses of the same names.
PRIORITIES: dict[str, str] = {
    "low": "Runs when GPUs would otherwise sit idle; every normal or urgent job that waits starts first.",
    "normal": "The usual choice: waits its turn in the order jobs were submitted.",
    "urgent": "Starts before every normal and low job that waits (a deadline, a demo); use it sparingly.",
}
DEFAULT_PRIORITY = "normal"


def priority_rank(priority: str) -> int:
    """Higher starts first; an unknown name (an old row, a renamed class) counts as normal."""
    names = list(PRIORITIES)
    return names.index(priority) if priority in names else names.index(DEFAULT_PRIORITY)


@dataclass(frozen=True)
class StartEstimate:
    """When a waiting job should start: between `earliest` and `latest` (both UTC), if nothing more urgent
    arrives. A backend with no basis for a range reports no estimate at all (shown as "unknown"), never a guess."""

    earliest: datetime
    latest: datetime

    def to_json(self) -> dict[str, str]:
        return {"earliest": self.earliest.isoformat(), "latest": self.latest.isoformat()}


@dataclass(frozen=True)
class QueueStatus:
    """One waiting job's place in its queue."""

    queue: str  # the queue's name: "this machine" locally, the LocalQueue on Kubernetes
    position: int  # 1 = next to start
    ahead: list[int]  # ids of the jobs that start before it, in order (running ones are not "ahead")
    blocker: str  # why it is not running, in a person's words; may name job ids as "#12"
    estimate: StartEstimate | None  # None: unknown
    priority: str = DEFAULT_PRIORITY
    holders: list[int] = field(default_factory=list)  # ids of the running jobs that hold what it needs

    def to_json(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "position": self.position,
            "ahead": list(self.ahead),
            "blocker": self.blocker,
            "estimated_start": self.estimate.to_json() if self.estimate else None,
            "priority": self.priority,
        }


@dataclass(frozen=True)
class QueueSummary:
    """One queue, for the Queues page and GET /api/v1/queues."""

    name: str
    quota_gpus: int | None  # None: no quota known (e.g. a queue without a GPU limit)
    used_gpus: int
    waiting: list[int]  # ids of its waiting jobs, next to start first
    running: list[int] = field(default_factory=list)  # ids of its admitted (running) jobs
    description: str = ""  # one line for people, e.g. whose queue it is
