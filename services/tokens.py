"""Personal API tokens: created and revoked on the "API tokens" page, shown once, stored as SHA-256. Each one
expires: its lifetime is chosen at creation, at most settings.token_max_days. Admins see and revoke anyone's."""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from services.auth import role_for
from services.config import Settings
from services.models import NotFound, User, ValidationProblem
from services.store.notification_tables import NotificationMember
from services.store.orm import ApiToken, utcnow

PREFIX = "mlp_"
# A token's last use is written at most this often, so a busy script does not write on every request.
LAST_USED_GRANULARITY = timedelta(seconds=60)
# datetime stops at the year 9999: a huge token_max_days still gives a date, not an OverflowError.
LATEST_EXPIRY = datetime(9000, 1, 1, tzinfo=UTC)


class TokenExpired(Exception):
    """A real token past its expiry: the caller says so (a revoked or unknown one is simply not valid)."""


class NotAllowed(Exception):
    """Only admins may do this (e.g. see every user's tokens)."""


def days_text(days: float) -> str:
    return f"{days:g} day" + ("" if days == 1 else "s")


@dataclass(frozen=True)
class TokenView:
    id: int
    owner: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime

    @property
    def expired(self) -> bool:
        return self.expires_at <= utcnow()

    @property
    def active(self) -> bool:
        return self.revoked_at is None and not self.expired


def _digest(secret: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def _view(t: ApiToken) -> TokenView:
    return TokenView(id=t.id, owner=t.owner, name=t.name, prefix=t.prefix, created_at=t.created_at,
                     last_used_at=t.last_used_at, revoked_at=t.revoked_at, expires_at=t.expires_at)


class TokenService:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]):
        self.settings = settings
        self.sessions = sessions

    @property
    def max_days(self) -> float:
        return self.settings.token_max_days

    def _lifetime(self, days: float | None) -> float:
        if days is None:
            return self.max_days
        limit = f"choose a lifetime of more than 0 and at most {days_text(self.max_days)} (the portal's maximum)"
        if isinstance(days, bool) or not isinstance(days, int | float) or not math.isfinite(days):
            raise ValidationProblem({"days": limit})
        if days <= 0 or days > self.max_days:
            raise ValidationProblem({"days": limit})
        return float(days)

    def create(self, user: User, name: str, days: float | None = None) -> tuple[TokenView, str]:
        """A new token for this user, valid for `days` (default and maximum: settings.token_max_days); the
        secret is returned once and never stored."""
        name = name.strip()
        if not 1 <= len(name) <= 100 or any(ord(c) < 32 for c in name):
            raise ValidationProblem({"name": "give the token a name of 1 to 100 characters (e.g. 'laptop notebook')"})
        lifetime = self._lifetime(days)
        now = utcnow()
        try:
            expires = min(now + timedelta(days=lifetime), LATEST_EXPIRY)
        except OverflowError:
            expires = LATEST_EXPIRY
        secret = PREFIX + secrets.token_urlsafe(32)
        with self.sessions.begin() as s:
            token = ApiToken(owner=user.name, name=name, token_hash=_digest(secret), prefix=secret[:12],
                             groups=list(user.groups), created_at=now, expires_at=expires)
            s.add(token)
            s.flush()
            return _view(token), secret

    def list(self, user: User) -> list[TokenView]:
        """This user's own tokens, newest first (revoked and expired ones too, marked as such)."""
        with self.sessions.begin() as s:
            rows = s.scalars(select(ApiToken).where(ApiToken.owner == user.name).order_by(ApiToken.id.desc()))
            return [_view(t) for t in rows]

    def list_all(self, user: User) -> list[TokenView]:
        """Every user's tokens, newest first: for admins only."""
        if not user.is_admin:
            raise NotAllowed("Only admins may see every user's tokens; without scope=all you get your own.")
        with self.sessions.begin() as s:
            return [_view(t) for t in s.scalars(select(ApiToken).order_by(ApiToken.id.desc()))]

    def revoke(self, user: User, token_id: int) -> TokenView:
        """Revoke one of the user's own tokens, or any token for an admin; another's is "not found"."""
        with self.sessions.begin() as s:
            token = s.get(ApiToken, token_id)
            if token is None or (token.owner != user.name and not user.is_admin):
                raise NotFound(f"Token {token_id} was not found.")
            if token.revoked_at is None:
                token.revoked_at = utcnow()
            return _view(token)

    def authenticate(self, secret: str) -> User | None:
        """The user a bearer token stands for, or None (unknown, revoked, or malformed). Raises TokenExpired
        for a token past its expiry, so its owner learns why it stopped working."""
        if not secret.startswith(PREFIX) or len(secret) > 200:
            return None
        digest = _digest(secret)
        now = utcnow()
        with self.sessions.begin() as s:
            token = s.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).one_or_none()
            if token is None or token.revoked_at is not None or not secrets.compare_digest(token.token_hash, digest):
                return None
            if token.expires_at <= now:
                raise TokenExpired(f"The API token has expired (on {token.expires_at:%Y-%m-%d %H:%M} UTC): make a "
                                   "new one on the portal's 'API tokens' page.")
            owner, last = token.owner, token.last_used_at
            if last is None or now - last > LAST_USED_GRANULARITY:
                s.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
            # A token carries no identity provider's groups; the owner's, as their latest signed-in submit gave
            # them, choose their team's queue and their job's team (and a token submit no longer erases them); they
            # may be stale, so they never widen what the owner sees or may ask for (groups_remembered).
            groups = tuple(sorted(s.scalars(select(NotificationMember.group).where(NotificationMember.owner == owner))))
        # The role by name only: groups saved with the token would keep a role its owner has since lost.
        return User(name=owner, role=role_for(self.settings, owner), groups=groups, groups_remembered=True)
