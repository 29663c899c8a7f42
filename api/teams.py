"""/api/v1/teams: the caller's teams (every configured team for an admin) with their members and leads, and the
admin's POST (define a team) and PUT (change its settings, members and leads). services/teams.py decides."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.common import ApiError, endpoint, jobs
from services.models import Conflict, NotFound, User, ValidationProblem
from services.teams import TeamService, TeamView

SETTINGS = ("source", "everyone_visible", "default_queue", "notify_channel")
FIELDS = ("name", *SETTINGS, "members", "leads")


def service() -> TeamService:
    return jobs().teams


def team_json(t: TeamView, user: User) -> dict[str, Any]:
    teams = service()
    return t.as_json(full=user.is_admin) | {"members": teams.members(t.name), "leads": teams.leads(t.name)}


def _names(data: dict[str, Any], field: str) -> list[str] | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValidationProblem({field: "is a list of user names"})
    return [v.strip() for v in value]


def _apply(user: User, name: str, data: dict[str, Any], current: TeamView | None) -> TeamView:
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValidationProblem({unknown[0]: f"is not a field of a team (they are {', '.join(FIELDS)})"})
    if "everyone_visible" in data and not isinstance(data["everyone_visible"], bool):
        raise ValidationProblem({"everyone_visible": "is true or false"})
    for field in ("source", "default_queue", "notify_channel"):
        if data.get(field) is not None and not isinstance(data[field], str):
            raise ValidationProblem({field: "is a string"})
    members, leads = _names(data, "members"), _names(data, "leads")
    base = current.as_json(full=True) if current else {}
    values = {k: data[k] if k in data else base.get(k) for k in SETTINGS}
    values = {k: v for k, v in values.items() if v is not None}
    return service().define(user, name, members=members, leads=leads, **values)


@endpoint()
def list_teams(request: Request, user: User) -> dict[str, Any]:
    return {"teams": [team_json(t, user) for t in service().listed(user)]}


@endpoint(mutation=True)
def create_team(request: Request, user: User, data: dict[str, Any]) -> Response:
    name = data.get("name")
    if not isinstance(name, str):
        raise ValidationProblem({"name": "give the team a name"})
    if not user.is_admin:
        raise ApiError(403, "Only an admin may define teams, their members and leads.")
    try:
        service().team(name.strip())
    except NotFound:
        pass
    else:
        raise Conflict(f"There is already a team named '{name.strip()}'; change it with PUT /api/v1/teams/{{name}}.")
    saved = _apply(user, name.strip(), data, None)
    return JSONResponse(team_json(service().team(saved.name), user), status_code=201)


@endpoint(mutation=True)
def update_team(request: Request, user: User, data: dict[str, Any]) -> dict[str, Any]:
    name = request.path_params["name"]
    if not user.is_admin:
        raise ApiError(403, "Only an admin may define teams, their members and leads.")
    if "name" in data and data["name"] != name:
        raise ValidationProblem({"name": "a team keeps its name (its jobs carry it)"})
    current = service().team(name)
    _apply(user, name, {k: v for k, v in data.items() if k != "name"}, current)
    return team_json(service().team(name), user)


ROUTES = [
    Route("/api/v1/teams", list_teams, methods=["GET"]),
    Route("/api/v1/teams", create_team, methods=["POST"]),
    Route("/api/v1/teams/{name}", update_team, methods=["PUT"]),
]
