"""Who is asking. Identity enters here and nowhere else.

This first version knows one mode, ``single``: one local user on a laptop, who owns every job.
"""

from __future__ import annotations

import getpass

from services.models import User


def local_user() -> User:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "researcher"
    return User(name=name or "researcher", is_admin=True)


def current_user() -> User:
    return local_user()


def may_act(user: User, owner: str) -> bool:
    return user.is_admin or user.name == owner
