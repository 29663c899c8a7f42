"""The small interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from services.models import JobRequest, JobStatus
from services.queue_model import DEFAULT_PRIORITY, PRIORITIES, QueueStatus, QueueSummary


@dataclass(frozen=True)
class JobSubmission:
    job_id: int
    owner: str
    request: JobRequest
    script_source: Path
    submission_id: str = ""
    groups: tuple[str, ...] = ()  # the owner's groups when submitted: which Kueue queue the job goes to
    queue: str = ""  # the job's team's default Kueue queue (services/teams.py): before the groups' if set


@dataclass
class SubmitResult:
    spec: dict[str, Any]
    ref: dict[str, Any]
    status: JobStatus = JobStatus.QUEUED


@dataclass
class Observation:
    status: JobStatus
    reason: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ActiveJob:
    id: int
    ref: dict[str, Any]
    max_runtime_hours: float


class Backend(Protocol):
    name: str
    max_nodes: int

    def start(self) -> None:
        """Begin watching (called once by the sync loop)."""
        ...

    def health(self) -> str | None:
        """None when the backend works; else one sentence for a banner."""
        ...

    def submit(self, job: JobSubmission) -> SubmitResult: ...

    def observe(self, jobs: list[ActiveJob]) -> dict[int, Observation]:
        """The current state of each active job (missing key = no change known)."""
        ...

    def pull_logs(self, job: ActiveJob) -> None:
        """Bring the job's new log lines into its archive file (a no-op where the job writes it directly)."""
        ...

    def log_ranks(self, job_id: int) -> list[int]: ...

    def remove_ghosts(self, failed: list[tuple[int, str]]) -> None:
        """Remove what a submit that was reported as failed may have left running (job id, submission id)."""
        ...

    def log_path(self, job_id: int, rank: int = 0) -> Path: ...

    def stop(self, job_id: int, ref: dict[str, Any]) -> None: ...

    def delete(self, job_id: int, ref: dict[str, Any]) -> None: ...

    def signal_checkpoint(self, job_id: int, ref: dict[str, Any]) -> None: ...

    def output_dir(self, job_id: int) -> Path: ...

    def close(self) -> None: ...

    # Optional (see queue_statuses and queue_summaries below): a backend that queues jobs itself reports where
    # its waiting jobs stand. Read during page renders, so both answer from what the sync loop already fetched.
    #   def queue_statuses(self, jobs: list[ActiveJob]) -> dict[int, QueueStatus]: ...
    #   def queue_summaries(self) -> list[QueueSummary]: ...
    # Optional (see priorities below): a backend whose admin defines the priorities (Kueue's classes).
    #   def priorities(self, fresh: bool = False) -> list[tuple[str, str]]: ...
    #   def default_priority(self) -> str: ...


def queue_statuses(backend: Backend, jobs: list[ActiveJob]) -> dict[int, QueueStatus]:
    """Where each of these waiting jobs stands in the backend's queues; {} from a backend that does not say."""
    method = getattr(backend, "queue_statuses", None)
    return method(jobs) if method is not None else {}


def queue_summaries(backend: Backend) -> list[QueueSummary]:
    """The backend's queues with their quotas and waiting jobs; [] from a backend that does not say."""
    method = getattr(backend, "queue_summaries", None)
    return method() if method is not None else []


def priorities(backend: Backend, fresh: bool = False) -> list[tuple[str, str]]:
    """The priorities a job may ask for here as (name, sentence), lowest first: the backend's own, else the portal's
    low / normal / urgent. Kept by the backend for page renders; `fresh`: read again now (a submit's check)."""
    method = getattr(backend, "priorities", None)
    return method(fresh) if method is not None else list(PRIORITIES.items())


def default_priority(backend: Backend) -> str:
    method = getattr(backend, "default_priority", None)
    return method() if method is not None else DEFAULT_PRIORITY


class BackendError(Exception):
    """The backend could not do what was asked; the message is for the user."""
