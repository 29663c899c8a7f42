"""Which priorities a person may ask for: the backend's (services/backends/base.py `priorities`) narrowed by the
admin's PORTAL_PRIORITY_LIMITS. The submit form offers these, and a submit asking for another is refused with a
sentence naming them.

A limit names a group ("group:interns") or a role ("role:researcher"). Groups are the narrower word: someone in a
listed group may use what their listed groups allow together, whatever their role's entry says; otherwise their
role's entry applies; with neither, every priority is theirs. Admins are never limited. A token's groups are only
remembered from its owner's last signed-in submit (they may have left a group since), so there a group's entry only
narrows the role's, never widens it."""

from __future__ import annotations

from typing import Any

from services.backends.base import Backend, default_priority, priorities
from services.config import Settings
from services.models import User


def _or(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def allowed(settings: Settings, user: User) -> tuple[set[str] | None, str]:
    """The names `user` may ask for (None: any) and the entry that says so, for the sentence."""
    limits = settings.priority_limits
    if user.is_admin or not limits:
        return None, ""
    keys = [f"group:{g}" for g in user.groups if f"group:{g}" in limits]
    key = f"role:{user.role.value}"
    role = (set(limits[key]), f"the {user.role.value} role") if key in limits else (None, "")
    if keys:
        names = {n for k in keys for n in limits[k]}
        whose = " and ".join(f"the {k.removeprefix('group:')} group" for k in keys)
        if user.groups_remembered and role[0] is not None:
            # A token's groups are remembered, perhaps left since: they may narrow the role's entry, never widen it.
            narrowed = names & role[0]
            return (narrowed, f"{whose} and {role[1]}") if narrowed else role
        return names, whose
    return role


def offered(backend: Backend, settings: Settings, user: User) -> tuple[list[tuple[str, str]], str]:
    """The form's options for `user` as (name, sentence), lowest first, and the one preselected."""
    names, _ = allowed(settings, user)
    options = [(n, text) for n, text in priorities(backend) if names is None or n in names]
    default = default_priority(backend)
    keys = [n for n, _ in options]
    return options, default if default in keys or not keys else keys[0]


def with_default(backend: Backend, settings: Settings, user: User | None, data: dict[str, Any]) -> dict[str, Any]:
    """The submitted values with the priority filled in where they name none (an API call, an old template):
    the backend's default, or the lowest the user may use when that one is not theirs."""
    if data.get("priority") not in (None, ""):
        return data
    if user is None:
        return data | {"priority": default_priority(backend)}
    return data | {"priority": offered(backend, settings, user)[1]}


def problem(backend: Backend, settings: Settings, user: User | None, name: object) -> str | None:
    """Why `user` may not submit with this priority, in a sentence naming those they may use; None when they may."""
    if not isinstance(name, str) or not name:
        return None  # the model says what is wrong with a missing or non-text value
    known = [n for n, _ in priorities(backend)]
    if name not in known:  # perhaps a class the admin created since the list was read
        known = [n for n, _ in priorities(backend, fresh=True)]
    names, whose = allowed(settings, user) if user is not None else (None, "")
    theirs = [n for n in known if names is None or n in names]
    if not theirs:
        return (f"no priority is open to you here ({whose} may use {_or(sorted(names or ['none']))}, which this "
                "portal does not offer); ask your admin")
    if name not in known:
        return f"choose one of {', '.join(theirs)}"
    if name not in theirs:
        return f"{whose} may use {_or(theirs)}, not {name}"
    return None
