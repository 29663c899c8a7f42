"""/api/v1/tokens: a user's own API tokens, and every user's for admins (list and revoke; tokens are made on the
"API tokens" page, where the secret is shown once)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.v1 import ApiError, endpoint, iso, path_int
from services.models import User
from services.portal import get_portal
from services.tokens import NotAllowed, TokenView


def token_json(t: TokenView) -> dict[str, Any]:
    # The secret itself is never stored, so never sent: the prefix is how a user recognises a token.
    return {"id": t.id, "owner": t.owner, "name": t.name, "prefix": t.prefix, "created_at": iso(t.created_at),
            "last_used_at": iso(t.last_used_at), "expires_at": iso(t.expires_at), "revoked_at": iso(t.revoked_at),
            "expired": t.expired, "active": t.active}


@endpoint()
def list_tokens(request: Request, user: User) -> dict[str, Any]:
    scope = request.query_params.get("scope", "mine")
    if scope not in ("mine", "all"):
        raise ApiError(400, "'scope' is 'mine' or 'all'.")
    tokens = get_portal().tokens
    try:
        rows = tokens.list_all(user) if scope == "all" else tokens.list(user)
    except NotAllowed as exc:
        raise ApiError(403, str(exc)) from None
    return {"tokens": [token_json(t) for t in rows], "max_days": tokens.max_days}


@endpoint(mutation=True)
def revoke_token(request: Request, user: User, data: dict[str, Any]) -> Response:
    get_portal().tokens.revoke(user, path_int(request, "token_id"))
    return Response(status_code=204)


ROUTES = [
    Route("/api/v1/tokens", list_tokens, methods=["GET"]),
    Route("/api/v1/tokens/{token_id}", revoke_token, methods=["DELETE"]),
]
