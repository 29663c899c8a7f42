"""GPU-hours and cost by user, team, month and GPU type, summed from `job_usage` (one row per job, month and GPU
type, indexed by month): the Usage page, `GET /api/v1/usage` and its CSV. Everyone sees their own usage and their
teams'; viewers and admins see everything."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import false, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from services.costs import month_of
from services.models import User, ValidationProblem
from services.store.cost_tables import JobUsage
from services.store.orm import utcnow

DIMENSIONS = {"user": JobUsage.owner, "team": JobUsage.team, "month": JobUsage.month, "gpu_type": JobUsage.gpu_type}
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
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    @staticmethod
    def visible(user: User) -> Any:
        """Which usage rows this user may read."""
        if user.reads_all:
            return None
        teams = [g for g in user.groups if g]
        return or_(JobUsage.owner == user.name, JobUsage.team.in_(teams) if teams else false())

    def rows(self, user: User, q: UsageQuery) -> list[dict[str, Any]]:
        """One row per combination of `q.by`, largest cost first; GPU-hours and cost rounded for reading."""
        cols = [DIMENSIONS[b].label(b) for b in q.by]
        stmt = (select(*cols, func.count(func.distinct(JobUsage.job_id)).label("jobs"),
                       func.sum(JobUsage.gpu_seconds).label("gpu_seconds"), func.sum(JobUsage.cost).label("cost"))
                .where(JobUsage.month >= q.start, JobUsage.month <= q.end).group_by(*cols))
        if (where := self.visible(user)) is not None:
            stmt = stmt.where(where)
        with self.sessions() as s:
            out = [{**{b: getattr(r, b) for b in q.by}, "jobs": int(r.jobs),
                    "gpu_hours": round(float(r.gpu_seconds or 0) / 3600, 4), "cost": round(float(r.cost or 0), 4)}
                   for r in s.execute(stmt)]
        return sorted(out, key=lambda r: (-r["cost"], *(str(r[b]) for b in q.by)))

    def csv(self, user: User, q: UsageQuery) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[*q.by, "jobs", "gpu_hours", "cost"], lineterminator="\n")
        w.writeheader()
        for r in self.rows(user, q):
            w.writerow({k: (_safe_cell(v) if isinstance(v, str) else v) for k, v in r.items()})
        return buf.getvalue()


def _safe_cell(v: str) -> str:
    """A name that a spreadsheet would run as a formula is written as text."""
    return "'" + v if v[:1] in ("=", "+", "-", "@") else v
