"""The job queries pages and the API read: one job if the user may see it, the listings by status group and
search, and the counts on the dashboard's tabs. A mixin of `JobService` (uses its session and settings)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import false, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.auth import may_see
from services.config import Settings
from services.models import JobStatus, JobView, NotFound, StatusGroup, User
from services.store.orm import Job, JobTotals
from services.store.search import matches


@dataclass(frozen=True)
class Page:
    jobs: list[JobView]
    has_more: bool


def to_view(job: Job) -> JobView:
    return JobView(
        id=job.id,
        name=job.name,
        owner=job.owner,
        status=JobStatus(job.status),
        reason=job.reason,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        epoch=job.epoch,
        total_epochs=job.total_epochs,
        progress=job.progress,
        eta_seconds=job.eta_seconds,
        latest_metrics=job.latest_metrics or {},
        final_metrics=job.final_metrics or {},
        gpus=job.gpus,
        nodes=job.nodes,
        cost_per_hour=job.cost_per_hour,
        gpu_util=job.gpu_util,
        gpu_memory_mib=job.gpu_memory_mib,
        gpu_idle_since=job.gpu_idle_since,
        tags=list(job.tags or []),
        note=job.note or "",
        cost_total=job.cost,
        gpu_hours=job.gpu_hours,
        request=job.request,
        spec=job.spec,
        exit_code=job.exit_code,
    )


class JobQueries:
    """Reading jobs as `JobView`s, with the visibility rules applied."""

    # Provided by JobService.
    settings: Settings
    sessions: sessionmaker[Session]
    session: Callable[[], AbstractContextManager[Session]]

    def get(self, user: User, job_id: int) -> JobView:
        """The job if this user may see it; otherwise "not found", so ids do not reveal others' jobs."""
        if not 0 < job_id < 2**62:  # an id from a URL; SQLite cannot even look up a bigger one
            raise NotFound(f"Job {job_id} was not found.")
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None or not may_see(self.settings, user, job.owner):
                raise NotFound(f"Job {job_id} was not found.")
            return to_view(job)

    def visible_owner(self, user: User, everyone: bool) -> str | None:
        """The owner filter of a listing: None (all jobs) only for "Everyone" and only if the user may see it."""
        if everyone and (user.reads_all or self.settings.show_others_jobs):
            return None
        return user.name

    def may_see_others(self, user: User) -> bool:
        return user.reads_all or self.settings.show_others_jobs

    def _filtered(self, stmt: Any, search: str, owner: str | None) -> Any:
        if owner:
            stmt = stmt.where(Job.owner == owner)
        if any(unicodedata.category(c) == "Cc" for c in search):
            return stmt.where(false())  # in no job's text (and FTS5 and PostgreSQL refuse a NUL): no match
        if search.strip():
            stmt = stmt.where(matches(self.sessions.kw["bind"].dialect.name, search.strip()))
        return stmt

    def counts(self, search: str = "", owner: str | None = None) -> dict[StatusGroup, int]:
        if search.strip():
            stmt = self._filtered(select(Job.status_group, func.count()).group_by(Job.status_group), search, owner)
        else:  # the running totals (kept by triggers, migration 0010): the same cost at a million jobs as at ten
            stmt = select(JobTotals.status_group, func.sum(JobTotals.jobs)).group_by(JobTotals.status_group)
            if owner:
                stmt = stmt.where(JobTotals.owner == owner)
        with self.session() as s:
            rows = dict(s.execute(stmt).all())
        return {g: int(rows.get(g.value, 0)) for g in StatusGroup}

    def list_group(
        self, group: StatusGroup, limit: int, search: str = "", owner: str | None = None
    ) -> Page:
        stmt = self._filtered(select(Job).where(Job.status_group == group.value), search, owner)
        stmt = stmt.order_by(Job.id.desc()).limit(limit + 1)
        with self.session() as s:
            rows = list(s.scalars(stmt))
            views = [to_view(j) for j in rows[:limit]]
        return Page(views, has_more=len(rows) > limit)

    def list_jobs(
        self, limit: int = 50, offset: int = 0, search: str = "", owner: str | None = None,
        group: StatusGroup | None = None,
    ) -> list[JobView]:
        stmt = self._filtered(select(Job), search, owner)
        if group is not None:
            stmt = stmt.where(Job.status_group == group.value)
        stmt = stmt.order_by(Job.id.desc()).limit(limit).offset(offset)
        with self.session() as s:
            return [to_view(j) for j in s.scalars(stmt)]
