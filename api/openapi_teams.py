"""The teams' part of the OpenAPI document (api/openapi.py): /api/v1/teams (api/teams.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NULLABLE_STR = {"type": ["string", "null"]}
NAMES = {"type": "array", "items": {"type": "string"}}
SETTINGS = {
    "source": {"type": "string", "enum": ["identity", "admin"],
               "description": "identity: a sign-in group (its members come from the proxy or OIDC); admin: members "
                              "listed here."},
    "everyone_visible": {"type": "boolean", "description": "false: non-members do not see its jobs (admins do)."},
    "default_queue": {**NULLABLE_STR, "description": "The Kueue LocalQueue its jobs go to."},
    "notify_channel": {**NULLABLE_STR, "description": "A webhook that hears of its members' failures."},
}
TEAM = {"type": "object", "required": ["name", "lead", "source", "everyone_visible", "members", "leads"],
        "properties": {"name": {"type": "string"}, "lead": {"type": "boolean", "description": "You lead it."},
                       **SETTINGS, "members": NAMES, "leads": NAMES}}
BODY = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 100}, **SETTINGS,
                                         "members": NAMES, "leads": NAMES}}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def team_paths(op: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return {
        "/api/v1/teams": {
            "get": op("Your teams (every team for an admin), with their members and leads",
                      (200, {"type": "object", "required": ["teams"],
                             "properties": {"teams": {"type": "array", "items": TEAM}}}), tag="teams"),
            "post": op("Define a team (admins)", (201, TEAM), 403, 409, 413, 415, 422, body=BODY, tag="teams"),
        },
        "/api/v1/teams/{name}": {"put": op(
            "Change a team's settings, members and leads (admins)", (200, TEAM), 403, 404, 413, 415, 422,
            params=[NAME], body=BODY, tag="teams")},
    }
