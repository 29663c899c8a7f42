"""GPU-hours and cost by user, team, month and GPU type, summed from `usage_totals` (the usage of every job per
month, owner, team and GPU type, kept in step by each accrual): the Usage page, `GET /api/v1/usage` and its CSV.
Everyone sees their own usage and their teams'; viewers and admins see everything."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import false, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from services.budgets import budget_rows, request_check, set_budget
from services.config import Settings
from services.costs import hourly_rate, month_of, price_rows, set_price
from services.models import Forbidden, Role, User, ValidationProblem
from services.store.cost_tables import UsageTotal
from services.store.orm import utcnow
from services.teams import TeamService

DIMENSIONS = {"user": UsageTotal.owner, "team": UsageTotal.team, "month": UsageTotal.month,
              "gpu_type": UsageTotal.gpu_type}
MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])(-\d{2})?$")
FIELDS = ("user", "team", "month", "gpu_type", "jobs", "gpu_hours", "cost")


@dataclass(frozen=True)
class UsageQuery:
    start: str  # first month, "2026-01"
    end: str  # last month, included
    by: tuple[str, ...]


def parse_query(start: str | None, end: str | None, by: str | list[str] | None) -> UsageQuery:
    """From the page's or the API's values; a bad one is a sentence per field."""
    problems: dict[str, str] = {}
    now = month_of(utcnow())

    def month(field: str, value: str | None, default: str) -> str:
        if not value:
            return default
        m = MONTH.match(value.strip())
        if not m:
            problems[field] = "a month like 2026-12 (or a date like 2026-12-01)"
            return default
        return f"{m.group(1)}-{m.group(2)}"

    first, last = month("from", start, now[:4] + "-01"), month("to", end, now)
    names = [b.strip() for b in (by.split(",") if isinstance(by, str) else by or ["month"]) if b.strip()]
    if bad := [b for b in names if b not in DIMENSIONS]:
        problems["by"] = f"'{bad[0][:40]}' is not one of {', '.join(DIMENSIONS)}"
    if not problems and first > last:
        problems["from"] = "the first month comes after the last"
    if problems:
        raise ValidationProblem(problems)
    return UsageQuery(first, last, tuple(dict.fromkeys(names)) or ("month",))


class UsageService:
    """The Usage page's and the API's use cases: usage sums, prices (admins) and budgets (admins and leads)."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], teams: TeamService):
        self.settings = settings
        self.sessions = sessions
        self.teams = teams

    @classmethod
    def of(cls, jobs: Any) -> UsageService:
        return cls(jobs.settings, jobs.sessions, jobs.teams)

    def visible(self, user: User) -> Any:
        """Which usage rows this user may read: their own and their teams'; everything for viewers and admins."""
        if user.reads_all:
            return None
        teams = self.teams.team_names(user)
        return or_(UsageTotal.owner == user.name, UsageTotal.team.in_(teams) if teams else false())

    def rows(self, user: User, q: UsageQuery) -> list[dict[str, Any]]:
        """One row per combination of `q.by`, largest cost first; GPU-hours and cost rounded for reading. `jobs`
        counts a job once per month it ran in (one over a month's end is in both)."""
        cols = [DIMENSIONS[b].label(b) for b in q.by]
        stmt = (select(*cols, func.sum(UsageTotal.jobs).label("jobs"),
                       func.sum(UsageTotal.gpu_seconds).label("gpu_seconds"), func.sum(UsageTotal.cost).label("cost"))
                .where(UsageTotal.month >= q.start, UsageTotal.month <= q.end).group_by(*cols))
        if (where := self.visible(user)) is not None:
            stmt = stmt.where(where)
        with self.sessions() as s:
            out = [{**{b: getattr(r, b) for b in q.by}, "jobs": int(r.jobs),
                    "gpu_hours": round(float(r.gpu_seconds or 0) / 3600, 4), "cost": round(float(r.cost or 0), 4)}
                   for r in s.execute(stmt)]
        return sorted(out, key=lambda r: (-r["cost"], *(str(r[b]) for b in q.by)))

    def csv(self, user: User, q: UsageQuery) -> str:
        return to_csv(self.rows(user, q), q.by)

    # Prices and budgets ----------------------------------------------------------------------------------
    def prices(self) -> list[dict[str, Any]]:
        with self.sessions.begin() as s:
            return price_rows(s)

    def set_price(self, user: User, data: dict[str, Any]) -> dict[str, Any]:
        if not user.is_admin:
            raise Forbidden("Only admins set prices.")
        with self.sessions.begin() as s:
            row = set_price(s, user.name, data)
            return next(p for p in price_rows(s) if p["id"] == row.id)

    def budgets(self, user: User) -> list[dict[str, Any]]:
        """This month's budgets this user may see (their own, their teams'; every one for viewers and admins)."""
        mine = None if user.reads_all else {("user", user.name), *(("team", t) for t in self.teams.team_names(user))}
        with self.sessions.begin() as s:
            rows = budget_rows(s, self.settings, month_of(utcnow()))
        return [r for r in rows if mine is None or (r["scope"], r["name"]) in mine]

    def set_budget(self, user: User, data: dict[str, Any]) -> dict[str, Any]:
        with self.sessions.begin() as s:
            row = set_budget(s, user, data)
            key = (row.scope, row.name)
        return next(r for r in self.budgets(User(user.name, Role.ADMIN)) if (r["scope"], r["name"]) == key)

    def hourly(self, backend: str, gpus: int, nodes: int) -> float:
        """What a job of this shape costs an hour at today's price (the form's estimate)."""
        with self.sessions.begin() as s:
            return hourly_rate(s, self.settings, backend, gpus, nodes)

    def submit_note(self, backend: str, user: User, team: str, gpus: int, nodes: int, hours: float
                    ) -> tuple[str, str | None]:
        """The form's "this job may cost up to …; your team has … left this month", and why it would be refused."""
        with self.sessions.begin() as s:
            return request_check(s, self.settings, backend, user, team, gpus, nodes, hours)


def _safe_cell(v: str) -> str:
    """A name that a spreadsheet would run as a formula is written as text."""
    return "'" + v if v[:1] in ("=", "+", "-", "@") else v


def to_csv(rows: list[dict[str, Any]], by: tuple[str, ...]) -> str:
    """The rows as the CSV export writes them (the page reuses the rows it has drawn)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*by, "jobs", "gpu_hours", "cost"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (_safe_cell(v) if isinstance(v, str) else v) for k, v in r.items()})
    return buf.getvalue()
