"""Who is asking, and what they may do. Identity enters here and nowhere else.

Modes (``PORTAL_AUTH_MODE``):
- ``single``: the one local user of a laptop portal, who manages everything. Refused on a non-loopback
  address unless ``PORTAL_ALLOW_INSECURE_BIND`` says the admin put their own auth in front.
- ``proxy``: the user, e-mail and groups from an auth proxy's headers. Only the proxy can reach the portal
  (it listens on the pod's loopback), so the headers are believed in this mode and ignored in every other.
- ``oidc``: Streamlit's own login (``st.login``) against an OIDC provider; the pages pass the claims in.

The REST API authenticates with personal API tokens in every mode (services/tokens.py).
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from services.config import Settings
from services.models import Role, User

_NAME = re.compile(r"^(?!group:)[^\x00-\x1f\x7f]{1,200}$")  # "group:x" names a group in the role lists


def role_for(settings: Settings, name: str, groups: tuple[str, ...] = ()) -> Role:
    keys = {name, *(f"group:{g}" for g in groups)}
    if keys & set(settings.admins):
        return Role.ADMIN
    if keys & set(settings.viewers):
        return Role.VIEWER
    return Role.RESEARCHER


def local_user(settings: Settings) -> User:
    name = settings.single_user
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = "researcher"
    return User(name=name or "researcher", role=Role.ADMIN)


def _header(headers: Mapping[str, str], name: str) -> str:
    if not name:
        return ""
    for key, value in headers.items():  # header names are case-insensitive; some mappings are not
        if key.lower() == name.lower():
            return value.strip()
    return ""


def user_from_headers(settings: Settings, headers: Mapping[str, str]) -> User | None:
    """The proxy's user, in proxy mode only (elsewhere a header proves nothing)."""
    if settings.auth_mode != "proxy":
        return None
    name = _header(headers, settings.proxy_user_header)
    if not _NAME.match(name):
        return None
    email = _header(headers, settings.proxy_email_header)
    raw_groups = _header(headers, settings.proxy_groups_header)
    groups = tuple(sorted({g.strip() for g in raw_groups.split(",") if g.strip()}))
    return User(name=name, role=role_for(settings, name, groups), email=email[:320], groups=groups)


def user_from_claims(settings: Settings, claims: Mapping[str, Any] | None) -> User | None:
    """The OIDC user Streamlit logged in (st.user), in oidc mode only."""
    if settings.auth_mode != "oidc" or not claims or not claims.get("is_logged_in"):
        return None
    # A verified e-mail or the provider's stable subject: some providers let users edit preferred_username.
    email = str(claims.get("email") or "") if claims.get("email_verified", True) else ""
    name = email or str(claims.get("sub") or "")
    if not _NAME.match(name):
        return None
    raw = claims.get("groups") or ()
    groups = tuple(sorted(str(g) for g in raw)) if isinstance(raw, list | tuple) else ()
    return User(name=name, role=role_for(settings, name, groups), email=email, groups=groups)


def current_user(
    settings: Settings, headers: Mapping[str, str], claims: Mapping[str, Any] | None = None
) -> User | None:
    """The user of a page session: None means nobody is signed in (the page asks them to)."""
    if settings.auth_mode == "single":
        return local_user(settings)
    if settings.auth_mode == "proxy":
        return user_from_headers(settings, headers)
    return user_from_claims(settings, claims)


def bind_problem(settings: Settings, address: str | None) -> str | None:
    """Why the portal must not start on this address, or None."""
    # single: whoever reaches it acts as the local user; proxy: whoever reaches it around the proxy can send
    # any X-Forwarded-User. Only oidc logs people in itself.
    if settings.auth_mode == "oidc" or settings.allow_insecure_bind:
        return None
    host = (address or "").strip("[]")
    if host == "localhost":
        return None
    try:
        if host and ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    shown = host or "every address"
    if settings.auth_mode == "proxy":
        return (f"Refusing to listen on {shown} in proxy mode: anyone who can reach the portal around the proxy "
                "could claim any user with an X-Forwarded-User header. Listen on 127.0.0.1 behind the proxy "
                "(the manifests do), or set PORTAL_ALLOW_INSECURE_BIND=true if only the proxy can reach it.")
    return (f"Refusing to listen on {shown} in single-user mode: anyone who can reach it would act as "
            f"'{local_user(settings).name}'. Bind to 127.0.0.1, use PORTAL_AUTH_MODE=proxy or oidc, or set "
            "PORTAL_ALLOW_INSECURE_BIND=true if your own authentication is in front.")


# What a user may do with a job -----------------------------------------------------------------------
def may_act(user: User, owner: str) -> bool:
    """Stop, delete, retry, save checkpoint: the owner and admins."""
    return user.is_admin or user.name == owner


def may_see(settings: Settings, user: User, owner: str) -> bool:
    return user.name == owner or user.reads_all or settings.show_others_jobs


def may_download(user: User, owner: str) -> bool:
    """A job's files: the owner, admins, and viewers (who read everything)."""
    return user.name == owner or user.reads_all


# Signed links for downloads from the pages (no cookie or header reaches a plain link in every mode) ------
def _secret_key(settings: Settings) -> str:
    path = Path(settings.secret_key_file) if settings.secret_key_file else settings.data_dir / "secret.key"
    return _read_key(path)


def ensure_signing_key(settings: Settings) -> None:
    """Made at start-up, so the key exists (mode 0600) before any job could race to plant a file in its place."""
    _secret_key(settings)


@lru_cache(maxsize=8)
def _read_key(path: Path) -> str:
    """Read (or make, once) the key: a page signs a link per card, so not a file read per link."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        # Made 0600 from the start (never readable by others, not even for a moment), then renamed into place.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        tmp.replace(path)
    return path.read_text().strip()


def _signer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_secret_key(settings), salt="ml-portal-download")


def sign_link(settings: Settings, user: User, **what: Any) -> str:
    return _signer(settings).dumps({"user": user.name, **what})


# A link the browser follows carries the user's identity in proxy mode (the proxy's headers) and in oidc mode (the
# login cookie), so there it is bound to its user and lives for a working day; in single mode nothing on the
# request says who follows it, so it is only good for a few minutes (a link pasted into a chat is soon worthless).
BOUND_LINK_SECONDS = 12 * 3600
UNBOUND_LINK_SECONDS = 10 * 60


class LinkRefused(Exception):
    """A download link that is not (or no longer) good for this request; the message says why. `status`: 404 for
    a link that is not valid (any more), 403 for a good link followed by someone else."""

    def __init__(self, message: str, status: int = 404):
        super().__init__(message)
        self.status = status


def links_are_bound(settings: Settings) -> bool:
    return settings.auth_mode in ("proxy", "oidc")


def open_link(settings: Settings, token: str, requester: User | None) -> tuple[User, dict[str, Any]]:
    """The user and the file a link was signed for. `requester`: who follows it, as the request says (the proxy's
    headers, the login cookie); it must be the link's user where links are bound."""
    bound = links_are_bound(settings)
    max_age = BOUND_LINK_SECONDS if bound else UNBOUND_LINK_SECONDS
    try:
        data = _signer(settings).loads(token, max_age=max_age)
    except BadSignature:
        raise LinkRefused("This download link is not valid or has expired: reload the page and click it again.") \
            from None
    name = str(data.pop("user"))
    data.pop("role", None)
    if bound:
        if requester is None:
            raise LinkRefused("Sign in through the portal to download this file.", 403)
        if requester.name != name:
            raise LinkRefused("This download link was made for another user: open the page yourself to download.",
                              403)
    # The role is worked out again now (a link outlives a change of the admin lists); by name, as for tokens.
    return User(name=name, role=role_for(settings, name)), data
