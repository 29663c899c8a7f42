"""The job queries pages and the API read: one job if the user may see it, the listings by status group and
search, and the counts on the dashboard's tabs. A mixin of `JobService` (uses its session and settings)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.models import JobStatus, JobView, NotFound, StatusGroup, User
from services.provenance import stored_parent_kind, submitted_values
from services.store import search as text_search
from services.store.orm import Job, JobTotals
from services.store.search import NewestFirst
from services.teams import Scope, TeamService

# Counts of a search stop here ("1,000+" on the tab): each section reads at most this many matches.
SEARCH_COUNT_CAP = 1000


class Count(int):
    """A section's count on the dashboard: the number itself, or with `more` set, at least this many (a search's
    count stops at SEARCH_COUNT_CAP; a 1–2 character search reads only each section's newest jobs)."""

    more: bool

    def __new__(cls, n: int, more: bool = False) -> Count:
        self = super().__new__(cls, n)
        self.more = more
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, int):
            return NotImplemented
        return int(self) == int(other) and self.more == getattr(other, "more", False)

    def __hash__(self) -> int:
        return hash((int(self), self.more))

    def __str__(self) -> str:
        return f"{int(self):,}+" if self.more else f"{int(self):,}"

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else format(int(self), spec)


def search_count_note(search: str, counts: dict[StatusGroup, Count]) -> str:
    """What the dashboard says under a search's counts when some are "at least" numbers (empty otherwise), so
    that "1,000+" reads as what it is."""
    if not any(c.more for c in counts.values()):
        return ""
    if len(search.strip()) < 3:
        return (f"A search of one or two characters looks through the newest {text_search.SHORT_WALK:,} jobs of "
                "each section (a count with “+” is at least that many): type three or more characters to search "
                "every job.")
    return (f"A search counts up to {SEARCH_COUNT_CAP:,} jobs per section (“{SEARCH_COUNT_CAP:,}+”: more than that); "
            "History counts every match.")


@dataclass(frozen=True)
class Listing:
    """Whose jobs a listing shows: one owner (counted from the running totals), or the conditions of a scope."""

    owner: str | None
    where: tuple[Any, ...] = ()
    # Everyone's jobs but hidden teams': those teams' jobs, which counts() takes off the running totals.
    minus: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Page:
    jobs: list[JobView]
    has_more: bool
    # False: a 1–2 character search looked only at the section's newest jobs (older ones may match too).
    searched_all: bool = True


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
        request=submitted_values(job.request),  # the values alone: the provenance is parent_id/parent_kind
        spec=job.spec,
        exit_code=job.exit_code,
        parent_id=job.parent_id,
        parent_kind=stored_parent_kind(job.parent_id, job.request),
        sweep_id=job.sweep_id,
        sweep_trial=job.sweep_trial,
        team=job.team,
    )


class JobQueries:
    """Reading jobs as `JobView`s, with the visibility rules applied."""

    # Provided by JobService.
    settings: Settings
    sessions: sessionmaker[Session]
    session: Callable[[], AbstractContextManager[Session]]
    teams: TeamService

    def get(self, user: User, job_id: int) -> JobView:
        """The job if this user may see it; otherwise "not found", so ids do not reveal others' jobs."""
        if not 0 < job_id < 2**62:  # an id from a URL; SQLite cannot even look up a bigger one
            raise NotFound(f"Job {job_id} was not found.")
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None or not self.teams.may_see(user, job.owner, job.team):
                raise NotFound(f"Job {job_id} was not found.")
            return to_view(job)

    def visible_owner(self, user: User, everyone: bool) -> str | None:
        """The owner filter of a listing: None (all jobs) only for "Everyone" and only if the user may see it."""
        if everyone and (user.reads_all or self.settings.show_others_jobs):
            return None
        return user.name

    def may_see_others(self, user: User) -> bool:
        return user.reads_all or self.settings.show_others_jobs

    def listing(self, user: User, scope: Scope | str) -> Listing:
        """The jobs of "My jobs", "My team" or "Everyone" for this user (services/teams.py decides which)."""
        if Scope(scope) is Scope.MINE:
            return Listing(owner=user.name)
        where = tuple(self.teams.scope_where(user, scope))
        if Scope(scope) is Scope.EVERYONE and self.may_see_others(user) and (hidden := self.teams.hidden_from(user)):
            return Listing(owner=None, where=where, minus=(Job.team.in_(hidden), Job.owner != user.name))
        return Listing(owner=None, where=where)

    def _search(self, s: Session, search: str) -> NewestFirst | None:
        return NewestFirst(s, search.strip().lower()) if search.strip() else None

    def counts(self, search: str = "", owner: str | None = None, where: Sequence[Any] = (),
               minus: Sequence[Any] = ()) -> dict[StatusGroup, Count]:
        """Jobs per section. With a search each section's count stops at SEARCH_COUNT_CAP (shown "1,000+"), so
        the answer costs the same at a million jobs as at ten thousand; the number is never more than there are."""
        with self.session() as s:
            # The running totals (kept by triggers, migration 0010): the same cost at a million jobs as at ten.
            stmt = select(JobTotals.status_group, func.sum(JobTotals.jobs)).group_by(JobTotals.status_group)
            if owner:
                stmt = stmt.where(JobTotals.owner == owner)
            if where and not minus:  # a team's jobs (through the jobs' team index): no running totals for those
                stmt = select(Job.status_group, func.count()).where(*where).group_by(Job.status_group)
            totals = {g: int(n) for g, n in s.execute(stmt).all()}
            if minus:  # everyone's but hidden teams': the totals less those teams' jobs, not a count of every job
                less = s.execute(select(Job.status_group, func.count()).where(*minus).group_by(Job.status_group))
                for g, n in less.all():
                    totals[g] = totals.get(g, 0) - int(n)
            found = self._search(s, search)
            if found is None:
                return {g: Count(totals.get(g.value, 0)) for g in StatusGroup}
            out = {}
            for g in StatusGroup:
                if not totals.get(g.value):
                    out[g] = Count(0)
                    continue
                hit = found.count(self._where(g, owner, where), SEARCH_COUNT_CAP + 1)
                out[g] = Count(min(hit.n, SEARCH_COUNT_CAP), more=hit.n > SEARCH_COUNT_CAP or not hit.complete)
            return out

    @staticmethod
    def _where(group: StatusGroup | None, owner: str | None, scope: Sequence[Any] = ()) -> list[Any]:
        where = [] if group is None else [Job.status_group == group.value]
        return where + ([Job.owner == owner] if owner else []) + list(scope)

    def _newest(self, s: Session, search: str, where: list[Any], need: int, bounded: bool,
                skip: int = 0) -> tuple[list[Job], bool]:
        """The newest `need` jobs of `where` holding `search` (rows from `skip` on), and whether all were read."""
        found = self._search(s, search)
        if found is None:
            stmt = select(Job).where(*where).order_by(Job.id.desc()).offset(skip).limit(need - skip)
            return list(s.scalars(stmt)), True
        hit = found.ids(where, need, bounded=bounded)
        ids = hit.ids[skip:]
        rows = s.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id.desc())) if ids else []
        return list(rows), hit.complete

    def list_group(
        self, group: StatusGroup, limit: int, search: str = "", owner: str | None = None, where: Sequence[Any] = ()
    ) -> Page:
        """The section's newest `limit` jobs; with a search, read newest first until `limit` + 1 are found."""
        with self.session() as s:
            rows, complete = self._newest(s, search, self._where(group, owner, where), limit + 1, True)
            views = [to_view(j) for j in rows[:limit]]
        return Page(views, has_more=len(rows) > limit, searched_all=complete)

    def list_jobs(
        self, limit: int = 50, offset: int = 0, search: str = "", owner: str | None = None,
        group: StatusGroup | None = None, where: Sequence[Any] = (),
    ) -> list[JobView]:
        """Newest first. A search reads only as far as offset + limit matches; unlike the dashboard, a 1–2
        character one looks through every job (a script expects every match)."""
        with self.session() as s:
            rows, _ = self._newest(s, search, self._where(group, owner, where), offset + limit, False, skip=offset)
            return [to_view(j) for j in rows]
