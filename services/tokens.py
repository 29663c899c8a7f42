"""Personal API tokens: created and revoked on the "API tokens" page, shown once, stored as SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from services.auth import role_for
from services.config import Settings
from services.models import NotFound, User, ValidationProblem
from services.store.orm import ApiToken, utcnow

PREFIX = "mlp_"
# A token's last use is written at most this often, so a busy script does not write on every request.
LAST_USED_GRANULARITY = timedelta(seconds=60)


@dataclass(frozen=True)
class TokenView:
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _digest(secret: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def _view(t: ApiToken) -> TokenView:
    return TokenView(t.id, t.name, t.prefix, t.created_at, t.last_used_at, t.revoked_at)


class TokenService:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]):
        self.settings = settings
        self.sessions = sessions

    def create(self, user: User, name: str) -> tuple[TokenView, str]:
        """A new token for this user; the secret is returned once and never stored."""
        name = name.strip()
        if not 1 <= len(name) <= 100 or any(ord(c) < 32 for c in name):
            raise ValidationProblem({"name": "give the token a name of 1 to 100 characters (e.g. 'laptop notebook')"})
        secret = PREFIX + secrets.token_urlsafe(32)
        with self.sessions.begin() as s:
            token = ApiToken(owner=user.name, name=name, token_hash=_digest(secret), prefix=secret[:12],
                             groups=list(user.groups), created_at=utcnow())
            s.add(token)
            s.flush()
            return _view(token), secret

    def list(self, user: User) -> list[TokenView]:
        with self.sessions.begin() as s:
            rows = s.scalars(select(ApiToken).where(ApiToken.owner == user.name).order_by(ApiToken.id.desc()))
            return [_view(t) for t in rows]

    def revoke(self, user: User, token_id: int) -> None:
        with self.sessions.begin() as s:
            token = s.get(ApiToken, token_id)
            if token is None or (token.owner != user.name and not user.is_admin):
                raise NotFound(f"Token {token_id} was not found.")
            if token.revoked_at is None:
                token.revoked_at = utcnow()

    def authenticate(self, secret: str) -> User | None:
        """The user a bearer token stands for, or None (unknown, revoked, or malformed)."""
        if not secret.startswith(PREFIX) or len(secret) > 200:
            return None
        digest = _digest(secret)
        now = utcnow()
        with self.sessions.begin() as s:
            token = s.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).one_or_none()
            if token is None or token.revoked_at is not None or not secrets.compare_digest(token.token_hash, digest):
                return None
            owner, last = token.owner, token.last_used_at
            if last is None or now - last > LAST_USED_GRANULARITY:
                s.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
        # By name only: groups saved with the token would keep a role its owner has since lost.
        return User(name=owner, role=role_for(self.settings, owner))
