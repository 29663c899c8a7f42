"""Monthly budgets per team and per user, in money or GPU-hours (table `budgets`), set by admins and team leads.

At submit a job's ceiling (its max runtime on all its GPUs at today's price) is weighed against what is left this
month: over it, the job is refused with the sentence saying both, unless the budget allows overdraft; a budget
spent to 100 % refuses new jobs when its `at_limit` says "refuse". The sync loop, after each accrual, records the
80 % and 100 % alerts to the user and the team's leads through the notifications outbox, each once per budget,
threshold, month and recipient (the outbox's key)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.config import Settings
from services.costs import ceiling_sentence, hourly_rate, month_of, month_start
from services.models import Forbidden, StatusGroup, User, ValidationProblem
from services.notifications_messages import SENTENCES
from services.notifications_outbox import record
from services.store.cost_tables import Budget, UsageTotal
from services.store.notification_tables import Notification, NotificationChannel
from services.store.orm import Job, utcnow
from services.store.team_tables import Team, TeamMember

THRESHOLDS = (80, 100)
EVENT = "budget"
# The outbox's messages are rendered by event; a budget alert carries its whole sentence.
SENTENCES.setdefault(EVENT, "{{ text }}")
SCOPES, UNITS, AT_LIMIT = ("team", "user"), ("money", "gpu_hours"), ("refuse", "wait")


@dataclass(frozen=True)
class Standing:
    """A budget and what of it this month's usage has spent."""

    budget: Budget
    used: float

    @property
    def left(self) -> float:
        return self.budget.monthly_limit - self.used

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.budget.monthly_limit if self.budget.monthly_limit > 0 else 100.0


def amount(settings: Settings, unit: str, value: float) -> str:
    return f"{settings.currency}{value:,.2f}" if unit == "money" else f"{value:,.1f} GPU-hours"


def used(s: Session, scope: str, name: str, month: str, unit: str) -> float:
    col = UsageTotal.cost if unit == "money" else UsageTotal.gpu_seconds / 3600.0
    who = UsageTotal.team if scope == "team" else UsageTotal.owner
    return float(s.scalar(select(func.coalesce(func.sum(col), 0.0)).where(UsageTotal.month == month, who == name))
                 or 0)


def standing(s: Session, scope: str, name: str, month: str) -> Standing | None:
    b = s.scalar(select(Budget).where(Budget.scope == scope, Budget.name == name)) if name else None
    return None if b is None else Standing(b, used(s, scope, name, month, b.unit))


def reserved(s: Session, scope: str, name: str, unit: str) -> float:
    """What the scope's queued and running jobs may still cost: each one's ceiling (its max runtime at its hourly
    rate) less what it has accrued so far. Held against what is left, so that jobs submitted together cannot each
    fit a budget that holds only one of them."""
    who = Job.team if scope == "team" else Job.owner
    total = 0.0
    for rate, request, gpus, nodes, cost, gpu_hours in s.execute(
            select(Job.cost_per_hour, Job.request, Job.gpus, Job.nodes, Job.cost, Job.gpu_hours)
            .where(Job.status_group == StatusGroup.ACTIVE.value, who == name)):
        hours = float((request or {}).get("max_runtime_hours") or 0.0)
        if unit == "money":
            total += max(0.0, float(rate or 0.0) * hours - float(cost or 0.0))
        else:
            total += max(0.0, hours * (gpus or 0) * max(1, nodes or 1) - float(gpu_hours or 0.0))
    return total


def submit_check(s: Session, settings: Settings, user: User, team: str, cost: float, hours: float, gpus: int,
                 nodes: int, now: datetime | None = None) -> tuple[str, str | None]:
    """(the sentence the form shows, the reason a submit is refused or None)."""
    month = month_of(now or utcnow())
    need = {"money": cost, "gpu_hours": hours * gpus * nodes}
    head = f"This job may cost {ceiling_sentence(settings, cost, hours, gpus, nodes)}"
    notes: list[str] = []
    refusal = None
    for scope, name, whose in (("team", team, f"your team {team} has"), ("user", user.name, "you have")):
        st = standing(s, scope, name, month)
        if st is None:
            continue
        b = st.budget
        held = reserved(s, scope, name, b.unit)
        free = st.left - held
        sentence = f"{head}; {whose} {amount(settings, b.unit, max(0.0, free))} left this month"
        if held > 0:
            sentence += f" after {amount(settings, b.unit, held)} held for queued and running jobs"
        notes.append(sentence + ".")
        if st.left <= 0 and b.at_limit == "wait":  # accepted: the queue holds it (hold_sentence)
            notes[-1] = f"{sentence}: the budget is spent, so the job will wait until it is raised or next month."
        elif refusal is None and st.left <= 0:
            refusal = f"{sentence}: the budget is spent, so new jobs are refused until next month."
        elif refusal is None and need[b.unit] > free and not b.overdraft:
            refusal = f"{sentence}: the job is refused, since it may cost more than is left."
    return (notes[0] if notes else head + ".", refusal)


def request_check(s: Session, settings: Settings, backend: str, user: User, team: str, gpus: int, nodes: int,
                  hours: float) -> tuple[str, str | None]:
    """`submit_check` for a job of this shape: its ceiling is its max runtime at today's price."""
    cost = hourly_rate(s, settings, backend, gpus, nodes) * hours
    return submit_check(s, settings, user, team, cost, hours, gpus, nodes)


def refuse_over_budget(s: Session, settings: Settings, backend: str, user: User, team: str, gpus: int, nodes: int,
                       hours: float) -> None:
    _, refusal = request_check(s, settings, backend, user, team, gpus, nodes, hours)
    if refusal:
        raise ValidationProblem({"": refusal})


def leads_of(s: Session, team: str) -> list[str]:
    """The team's leads (services/teams.py's tables), in this session."""
    return sorted(s.scalars(select(TeamMember.user).join(Team, Team.id == TeamMember.team_id)
                            .where(Team.name == team, TeamMember.lead.is_(True)))) if team else []


def alert_thresholds(s: Session, settings: Settings, owner: str, team: str, months: list[str]
                     ) -> set[tuple[str, str]]:
    """The 80 % and 100 % alerts this usage crossed, each recorded once. Returns the budgets ((scope, name)) that
    reached 100 % just now."""
    spent: set[tuple[str, str]] = set()
    for month in months:
        for scope, name in (("team", team), ("user", owner)):
            st = standing(s, scope, name, month)
            if st is None:
                continue
            crossed = [t for t in THRESHOLDS if st.percent >= t]
            if not crossed:
                continue
            recipients = sorted({owner, *(leads_of(s, team) if scope == "team" else [])})
            keys = {f"budget:{st.budget.id}:{month}:{t}:{who}" for t in crossed for who in recipients}
            # Past 80 % every accrual (each running job's, every few seconds) comes here: one query when all is said.
            said = set(s.scalars(select(Notification.key).where(Notification.key.in_(keys))))
            for t in crossed:
                if all(f"budget:{st.budget.id}:{month}:{t}:{who}" in said for who in recipients):
                    continue
                whose = f"Team {team}'s" if scope == "team" else f"{name}'s"
                text_ = (f"{whose} budget for {month} is {t} % spent: {amount(settings, st.budget.unit, st.used)} of "
                         f"{amount(settings, st.budget.unit, st.budget.monthly_limit)}."
                         + ({"refuse": " New jobs are refused until next month.",
                             "wait": " New jobs wait until it is raised or next month."}[st.budget.at_limit]
                            if t == 100 else ""))
                payload: dict[str, Any] = {"event": EVENT, "text": text_, "path": "/usage", "threshold": t,
                                           "scope": scope, "name": name, "month": month}
                for who in recipients:
                    key = f"budget:{st.budget.id}:{month}:{t}:{who}"
                    if key in said:
                        continue
                    channels = [c for c in s.scalars(select(NotificationChannel).where(
                        NotificationChannel.owner == who, NotificationChannel.enabled.is_(True)))
                        if c.kind != "email" or c.confirmed_at is not None]
                    if record(s, who, EVENT, payload, key=key, channels=channels) is not None and t == 100:
                        spent.add((scope, name))
    return spent


def spent(s: Session, owner: str, team: str, month: str) -> bool:
    """Whether the team's or the owner's budget for the month is used up (its running jobs are stopped when the
    admin chose so)."""
    return any(st is not None and st.left <= 0 for st in (standing(s, "team", team, month),
                                                          standing(s, "user", owner, month)))


def hold_sentence(s: Session, owner: str, team: str, month: str) -> str | None:
    """Why a job of this owner and team may not start now: a budget of theirs that says "wait" at its limit is
    spent. None: it may start. The queue asks on each tick, so a raised budget or a new month lets it start."""
    for scope, name in (("team", team), ("user", owner)):
        st = standing(s, scope, name, month)
        if st is not None and st.budget.at_limit == "wait" and st.left <= 0:
            whose, who = (f"team {name}'s", "an admin or lead") if scope == "team" else (f"{name}'s", "an admin")
            return (f"{whose} budget for {month_start(month):%B} is spent; it starts when {who} raises it or "
                    f"next month")
    return None


# Setting budgets -----------------------------------------------------------------------------------
def may_set(s: Session, user: User, scope: str, name: str) -> bool:
    return user.is_admin or (scope == "team" and user.name in leads_of(s, name))


def set_budget(s: Session, user: User, data: dict[str, Any]) -> Budget:
    problems: dict[str, str] = {}
    scope, name = str(data.get("scope") or "team"), str(data.get("name") or "").strip()[:255]
    unit, at_limit = str(data.get("unit") or "money"), str(data.get("at_limit") or "refuse")
    if scope not in SCOPES:
        problems["scope"] = "'team' or 'user'"
    if not name:
        problems["name"] = "the team's or the user's name"
    if unit not in UNITS:
        problems["unit"] = "'money' or 'gpu_hours'"
    if at_limit not in AT_LIMIT:
        problems["at_limit"] = "'refuse' or 'wait'"
    try:
        limit = float(data.get("monthly_limit"))  # type: ignore[arg-type]
        if not 0 <= limit < 1e12:
            raise ValueError
    except (TypeError, ValueError):
        problems["monthly_limit"] = "a monthly limit of 0 or more"
    if problems:
        raise ValidationProblem(problems)
    if not may_set(s, user, scope, name):
        raise Forbidden("Only admins, and a team's leads for their team, set budgets.")
    row = s.scalar(select(Budget).where(Budget.scope == scope, Budget.name == name))
    if row is None:
        row = Budget(scope=scope, name=name)
        s.add(row)
    row.unit, row.monthly_limit, row.at_limit = unit, limit, at_limit
    row.overdraft = bool(data.get("overdraft", False))
    row.set_by, row.set_at = user.name, utcnow()
    s.flush()
    return row


def budget_rows(s: Session, settings: Settings, month: str) -> list[dict[str, Any]]:
    out = []
    for b in s.scalars(select(Budget).order_by(Budget.scope, Budget.name)):
        spent = used(s, b.scope, b.name, month, b.unit)
        out.append({"scope": b.scope, "name": b.name, "unit": b.unit, "monthly_limit": b.monthly_limit,
                    "used": round(spent, 4), "left": round(b.monthly_limit - spent, 4), "overdraft": b.overdraft,
                    "at_limit": b.at_limit})
    return out
