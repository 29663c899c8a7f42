"""Domain types shared by the services, the pages and the API."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.queue_model import DEFAULT_PRIORITY, PRIORITIES
from services.validation import plain_error

# A Kubernetes object name / label value (RFC 1123 label): what `kubectl` would accept.
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NAME_MAX = 63
EXTRA_ARGS_MAX_CHARS = 2000
EXTRA_ARGS_MAX_COUNT = 100


class JobStatus(StrEnum):
    SUBMITTING = "Submitting"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"
    SUBMIT_FAILED = "Submit failed"


class StatusGroup(StrEnum):
    """The dashboard's sections (and filter values)."""

    ACTIVE = "Running"
    SUCCEEDED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"


GROUP_OF: dict[JobStatus, StatusGroup] = {
    JobStatus.SUBMITTING: StatusGroup.ACTIVE,
    JobStatus.QUEUED: StatusGroup.ACTIVE,
    JobStatus.RUNNING: StatusGroup.ACTIVE,
    JobStatus.SUCCEEDED: StatusGroup.SUCCEEDED,
    JobStatus.FAILED: StatusGroup.FAILED,
    JobStatus.SUBMIT_FAILED: StatusGroup.FAILED,
    JobStatus.STOPPED: StatusGroup.STOPPED,
}
ACTIVE_STATUSES = frozenset(s for s, g in GROUP_OF.items() if g is StatusGroup.ACTIVE)


def format_hours(hours: float) -> str:
    """8 -> '8 h', 1.5 -> '1.5 h', 0.5 -> '30 min', 0.001 -> '4 s'."""
    if hours < 1 / 60:
        return f"{round(hours * 3600)} s"
    if hours < 1:
        return f"{round(hours * 60)} min"
    return f"{hours:g} h"


class JobRequest(BaseModel):
    """What a researcher submits. Validated here, at the edge, for the UI and the API alike."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=NAME_MAX, description="Experiment name")
    script: str = Field(min_length=1, max_length=255, description="Workspace path of the training script")
    learning_rate: float = Field(default=0.001, gt=0, le=100)
    epochs: int = Field(default=10, gt=0, le=1_000_000)
    batch_size: int = Field(default=32, gt=0, le=1_000_000)
    dataset_path: str = Field(default="", max_length=1024)
    extra_args: str = Field(default="", max_length=EXTRA_ARGS_MAX_CHARS)
    gpus: int = Field(default=0, ge=0, le=1024)
    nodes: int = Field(default=1, ge=1, le=1024)
    mixed_precision: bool = False
    gradient_checkpointing: bool = False
    checkpoint_every: int = Field(default=0, ge=0, le=1_000_000, description="0 = no periodic checkpoints")
    max_runtime_hours: float = Field(default=8.0, gt=0)
    template: str = Field(default="", max_length=100,
                          description="Name of the template the values came from (a label for the history)")
    notify: Literal["", "end", "failure", "never"] = Field(
        default="", description="Notify me when it ends ('end'), only if it fails ('failure') or 'never'; "
        "empty: the owner's default (Notifications settings)")
    priority: str = Field(default=DEFAULT_PRIORITY, description="low, normal or urgent: the order waiting jobs start")
    team: str = Field(default="", max_length=100,
                      description="The team the job belongs to, one of yours (empty: your first); its members see it")
    resume_from: str = Field(default="", max_length=300,
                             description="'<job id>/<checkpoint>': an earlier job's checkpoint to resume from "
                             "(Retry from checkpoint); the script gets its path as --resume-from")

    @field_validator("name")
    @classmethod
    def _k8s_name(cls, v: str) -> str:
        if not DNS1123_LABEL.match(v):
            raise ValueError(
                "use only lower-case letters, digits and '-', starting and ending with a letter or digit "
                "(for example 'gpt-finetune-v2')"
            )
        return v

    @field_validator("script")
    @classmethod
    def _python_script(cls, v: str) -> str:
        if not v.endswith(".py"):
            raise ValueError("the training script must be a Python file (.py)")
        if v.startswith("/") or ".." in v.split("/") or "\\" in v or "\x00" in v:
            raise ValueError("pick a script inside the workspace")
        return v

    @field_validator("dataset_path", "template", "team")
    @classmethod
    def _no_control_chars(cls, v: str) -> str:
        if any(ord(c) < 32 for c in v):
            raise ValueError("contains control characters")
        return v

    @field_validator("priority")
    @classmethod
    def _priority_name(cls, v: str) -> str:
        # Which names exist is the backend's (Kueue's classes on a cluster): JobService.validate checks that, and
        # who may use them. Here only the form of a name a Kubernetes label can carry.
        if not DNS1123_LABEL.match(v) or len(v) > NAME_MAX:
            raise ValueError(f"choose a priority by its name, for example {', '.join(PRIORITIES)}")
        return v

    @field_validator("resume_from")
    @classmethod
    def _checkpoint_reference(cls, v: str) -> str:
        job, _, name = v.partition("/")
        if v and not (job.isascii() and job.isdigit() and len(job) < 19 and name not in ("", ".", "..")
                      and not any(c in name for c in "/\\\x00") and all(ord(c) >= 32 for c in name)):
            raise ValueError("give a checkpoint as '<job id>/<name>' (a file or folder in its checkpoints/ folder)")
        return v

    @field_validator("extra_args")
    @classmethod
    def _splittable(cls, v: str) -> str:
        split_args(v)
        return v

    @model_validator(mode="after")
    def _checkpoint_within_epochs(self) -> JobRequest:
        if self.checkpoint_every > self.epochs:
            raise ValueError("checkpoint_every: must not exceed the number of epochs")
        return self

    def extra_argv(self) -> list[str]:
        return split_args(self.extra_args)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> JobRequest:
        """As pydantic's, with each error's message a plain sentence: templates and the API read them too."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise plain_error(exc) from None


def split_args(text: str) -> list[str]:
    """Additional args become an argv list (never a shell string)."""
    try:
        args = shlex.split(text)
    except ValueError as exc:  # unbalanced quotes
        raise ValueError(f"cannot split the additional arguments: {exc}") from None
    if len(args) > EXTRA_ARGS_MAX_COUNT:
        raise ValueError(f"at most {EXTRA_ARGS_MAX_COUNT} additional arguments")
    if any("\x00" in a for a in args):
        raise ValueError("the additional arguments contain a NUL character")
    return args


class ValidationProblem(Exception):
    """Bad input, with one sentence per form field (field '' = the whole form)."""

    def __init__(self, problems: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" if k else v for k, v in problems.items()))
        self.problems = problems


class NotFound(Exception):
    """The job (or file) does not exist, or the user may not see it."""


class Conflict(Exception):
    """The action does not fit the job's state (e.g. stopping a finished job)."""


class Forbidden(Exception):
    """The user may see this but not do that (e.g. a team member stopping a teammate's job): 403, with why."""


class Role(StrEnum):
    RESEARCHER = "researcher"  # own jobs; others' read-only unless the admin hides them
    VIEWER = "viewer"  # reads every job and the history (data leads); acts on none but their own
    ADMIN = "admin"  # manages every job and sees the settings


@dataclass(frozen=True)
class User:
    name: str
    role: Role = Role.RESEARCHER
    email: str = ""
    groups: tuple[str, ...] = ()
    # True for a token's user: `groups` are those remembered from their last signed-in submit, not what the identity
    # provider says now; they route jobs and name a job's team, but never widen what the user may see or ask for.
    groups_remembered: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def reads_all(self) -> bool:
        return self.role in (Role.VIEWER, Role.ADMIN)


@dataclass
class JobView:
    """A job as the pages and the API show it."""

    id: int
    name: str
    owner: str
    status: JobStatus
    reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    epoch: int | None
    total_epochs: int | None
    progress: float | None
    eta_seconds: float | None
    latest_metrics: dict[str, float]
    final_metrics: dict[str, float]
    gpus: int
    nodes: int
    cost_per_hour: float
    gpu_util: float | None
    request: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] | None = None
    exit_code: int | None = None
    gpu_memory_mib: float | None = None
    gpu_idle_since: float | None = None  # unix time since the GPUs have been below the idle threshold
    tags: list[str] = field(default_factory=list)
    note: str = ""
    cost_total: float | None = None  # what the run has cost: so far while it runs, final once it ended
    gpu_hours: float | None = None
    parent_id: int | None = None  # the job this one was cloned from or is a retry of
    parent_kind: str | None = None  # "clone" or "retry"; None when unknown (made before it was recorded)
    sweep_id: int | None = None  # the sweep this job is a trial of (services/sweeps.py)
    sweep_trial: int | None = None  # its trial number in that sweep (a retry runs the same trial again)
    team: str | None = None  # the submitter's team it belongs to (services/teams.py)

    def gpus_idle(self, now: float, idle_minutes: float) -> bool:
        """The "idle GPUs" badge: a running job holding GPUs that have been nearly unused for a while."""
        return (self.status is JobStatus.RUNNING and self.gpus > 0 and self.gpu_idle_since is not None
                and now - self.gpu_idle_since >= idle_minutes * 60)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def group(self) -> StatusGroup:
        return GROUP_OF[self.status]

    @property
    def loss(self) -> float | None:
        src = self.final_metrics or self.latest_metrics
        for key in ("loss", "train_loss", "val_loss", "eval_loss"):
            if key in src:
                return src[key]
        return None

    def runtime_seconds(self, now: datetime) -> float | None:
        if self.started_at is None:
            return None
        return max(0.0, ((self.finished_at or now) - self.started_at).total_seconds())

    def cost(self, now: datetime) -> float | None:
        """What it has cost so far: accrued from its run time by the sync loop (services/costs.py), final once it
        ended; None before it ran (time in the queue costs nothing)."""
        if self.cost_total is None:
            return None if self.started_at is None else 0.0
        return round(self.cost_total, 2)
