"""Where a job came from: the job it was cloned from or is a retry of (its parent), as the job page and the API
say it. The parent's id is the job's `parent_id` column; which of the two it was is kept in the job's request
JSON under PARENT_KIND (no migration), and taken out again before the values are submitted anew."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from services.models import JobView, NotFound, User

PARENT_KIND = "parent_kind"
ParentKind = Literal["clone", "retry"]
KINDS: tuple[str, ...] = ("clone", "retry")


@dataclass(frozen=True)
class Parent:
    id: int
    kind: str | None  # None: made before the kind was recorded (an API clone or a retry)
    name: str | None  # None: deleted, or not the viewer's to see (the same to them: ids reveal nothing)


def with_parent_kind(request: dict[str, Any], parent_id: int | None, kind: ParentKind) -> dict[str, Any]:
    """The request JSON to store for a job submitted as `kind` of `parent_id`."""
    if parent_id is None:
        return request
    if kind not in KINDS:
        raise ValueError(f"a parent kind is one of {', '.join(KINDS)}, not {kind!r}")
    return request | {PARENT_KIND: kind}


def submitted_values(request: dict[str, Any]) -> dict[str, Any]:
    """A job's request as submit values again: its provenance is the old job's, not the new one's."""
    return {k: v for k, v in request.items() if k != PARENT_KIND}


def stored_parent_kind(parent_id: int | None, request: dict[str, Any]) -> str | None:
    """The kind kept in a stored request (the job's view carries it as `parent_kind`, its request without it)."""
    if parent_id is None:
        return None
    kind = request.get(PARENT_KIND)
    return kind if kind in KINDS else None


def parent_of(get: Callable[[User, int], JobView], user: User, job: JobView) -> Parent | None:
    """The job's direct parent as `user` may know it (`get`: the job queries' `get`, visibility applied)."""
    if job.parent_id is None:
        return None
    try:
        name: str | None = get(user, job.parent_id).name
    except NotFound:
        name = None
    return Parent(job.parent_id, job.parent_kind, name)
