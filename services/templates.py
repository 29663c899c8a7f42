"""Job templates: named, reusable sets of submit-form values, shared with the whole team."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.auth import may_act
from services.models import Conflict, JobRequest, NotFound, User, ValidationProblem
from services.store.orm import JobTemplate, utcnow

# A template may hold any submit value except the experiment name, which each run gets anew, and the label
# of the template a job came from.
TEMPLATE_FIELDS = frozenset(JobRequest.model_fields) - {"name", "template"}


@dataclass(frozen=True)
class TemplateView:
    id: int
    name: str
    owner: str
    values: dict[str, Any]
    created_at: datetime
    updated_at: datetime


def _view(t: JobTemplate) -> TemplateView:
    return TemplateView(t.id, t.name, t.owner, dict(t.values), t.created_at, t.updated_at)


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
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def list(self) -> list[TemplateView]:
        with self.sessions.begin() as s:
            return [_view(t) for t in s.scalars(select(JobTemplate).order_by(JobTemplate.name))]

    def get_by_name(self, name: str) -> TemplateView:
        with self.sessions.begin() as s:
            t = s.scalars(select(JobTemplate).where(JobTemplate.name == name)).one_or_none()
            if t is None:
                raise NotFound(f"There is no template named '{name}'.")
            return _view(t)

    def save(self, user: User, name: str, values: Any) -> TemplateView:
        """Create a template, or update one of your own with the same name."""
        name = (name or "").strip()
        if not 1 <= len(name) <= 100 or any(ord(c) < 32 for c in name):
            raise ValidationProblem({"name": "give the template a name of 1 to 100 characters"})
        values = clean_values(values)
        now = utcnow()
        with self.sessions.begin() as s:
            t = s.scalars(select(JobTemplate).where(JobTemplate.name == name)).one_or_none()
            if t is None:
                t = JobTemplate(owner=user.name, name=name, values=values, created_at=now, updated_at=now)
                s.add(t)
            elif may_act(user, t.owner):
                t.values, t.updated_at = values, now
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
