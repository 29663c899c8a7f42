"""The small interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from services.models import JobRequest, JobStatus


@dataclass(frozen=True)
class JobSubmission:
    job_id: int
    owner: str
    request: JobRequest
    script_source: Path


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

    def submit(self, job: JobSubmission) -> SubmitResult: ...

    def observe(self, jobs: list[ActiveJob]) -> dict[int, Observation]:
        """The current state of each active job (missing key = no change known)."""
        ...

    def stop(self, job_id: int, ref: dict[str, Any]) -> None: ...

    def delete(self, job_id: int, ref: dict[str, Any]) -> None: ...

    def signal_checkpoint(self, job_id: int, ref: dict[str, Any]) -> None: ...

    def log_path(self, job_id: int) -> Path: ...

    def output_dir(self, job_id: int) -> Path: ...

    def close(self) -> None: ...


class BackendError(Exception):
    """The backend could not do what was asked; the message is for the user."""
