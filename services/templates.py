"""Job templates: named, reusable sets of submit-form values, shared with everyone or with one team (its members,
and admins, see it: services/teams.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.auth import may_act
from services.models import Conflict, JobRequest, NotFound, User, ValidationProblem
from services.store.orm import JobTemplate, utcnow
from services.teams import TeamService

# A template may hold any submit value except the experiment name, which each run gets anew, and the label
# of the template a job came from, nor the team (each run's own; a template's sharing is its `team`).
TEMPLATE_FIELDS = frozenset(JobRequest.model_fields) - {"name", "template", "team"}


@dataclass(frozen=True)
class TemplateView:
    id: int
    name: str
    owner: str
    values: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    team: str | None = None  # shared with this team only; None: with everyone


def _view(t: JobTemplate) -> TemplateView:
    return TemplateView(t.id, t.name, t.owner, dict(t.values), t.created_at, t.updated_at, t.team)


def clean_values(values: Any) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValidationProblem({"values": "must be an object of submit-form values"})
    unknown = sorted(set(values) - TEMPLATE_FIELDS)
    if unknown:
        raise ValidationProblem({"values": f"unknown fields: {', '.join(unknown)}"})
    # Each value must be one a submission would accept: check with a placeholder name and script.
    probe = {"name": "template-check", "script": "template_check.py"} | values
    try:
        JobRequest.model_validate(probe)
    except Exception as exc:  # pydantic's ValidationError: reported per field
        errors = getattr(exc, "errors", lambda: [])()
        problems = {str(e["loc"][0]) if e.get("loc") else "values": e["msg"] for e in errors}
        raise ValidationProblem(problems or {"values": str(exc)}) from None
    return dict(values)


class TemplateService:
    def __init__(self, sessions: sessionmaker[Session], teams: TeamService | None = None):
        self.sessions = sessions
        self.teams = teams

    def _sees(self, user: User | None) -> Any:
        """Whose team templates this user sees (None: every template)."""
        if user is None or self.teams is None or user.is_admin:
            return None
        return set(self.teams.team_names(user))

    def list(self, user: User | None = None) -> list[TemplateView]:
        """Templates shared with everyone, and those of the user's teams (and their own)."""
        mine = self._sees(user)
        with self.sessions.begin() as s:
            rows = [_view(t) for t in s.scalars(select(JobTemplate).order_by(JobTemplate.name))]
        return [t for t in rows if mine is None or t.team is None or t.team in mine or t.owner == user.name]

    def get_by_name(self, name: str, user: User | None = None) -> TemplateView:
        mine = self._sees(user)
        with self.sessions.begin() as s:
            t = s.scalars(select(JobTemplate).where(JobTemplate.name == name)).one_or_none()
            if t is not None and mine is not None and t.team and t.team not in mine and t.owner != user.name:
                t = None  # another team's: as if it were not there
            if t is None:
                raise NotFound(f"There is no template named '{name}'.")
            return _view(t)

    def save(self, user: User, name: str, values: Any, team: str | None = None) -> TemplateView:
        """Create a template, or update one of your own with the same name; `team`: shared with that team only."""
        name = (name or "").strip()
        if not 1 <= len(name) <= 100 or any(ord(c) < 32 for c in name):
            raise ValidationProblem({"name": "give the template a name of 1 to 100 characters"})
        values = clean_values(values)
        team = (team or "").strip() or None
        if team and self.teams is not None and team not in self.teams.team_names(user):
            raise ValidationProblem({"team": f"You are not in the team '{team}', so you cannot share with it."})
        now = utcnow()
        with self.sessions.begin() as s:
            t = s.scalars(select(JobTemplate).where(JobTemplate.name == name)).one_or_none()
            if t is None:
                t = JobTemplate(owner=user.name, name=name, values=values, created_at=now, updated_at=now, team=team)
                s.add(t)
            elif may_act(user, t.owner):
                t.values, t.updated_at, t.team = values, now, team
            else:
                raise Conflict(f"The template '{name}' belongs to {t.owner}; save yours under another name.")
            s.flush()
            return _view(t)

    def delete(self, user: User, template_id: int) -> None:
        with self.sessions.begin() as s:
            t = s.get(JobTemplate, template_id)
            if t is None or not may_act(user, t.owner):
                raise NotFound(f"Template {template_id} was not found.")
            s.delete(t)
