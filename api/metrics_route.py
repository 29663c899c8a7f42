"""GET /metrics: the portal's own health for Prometheus (services/prom_metrics.py says what is in it).

Who may read it: a scraper sending the token in PORTAL_METRICS_TOKEN_FILE (``Authorization: Bearer <token>``),
or an admin, by their personal API token or (oidc) their signed-in session. The numbers cover every user's jobs,
so nobody else reads them: 401 without a credential, 403 for one that is not an admin's."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.common import ApiError, authenticate, error
from services.config import Settings
from services.models import User
from services.portal import get_portal
from services.prom_metrics import exposition

log = logging.getLogger(__name__)


def scraper_token(settings: Settings) -> str | None:
    """The scrapers' token, read at every request so a rotated Secret applies without a restart."""
    if not settings.metrics_token_file:
        return None
    try:
        token = Path(settings.metrics_token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError) as exc:
        log.warning("PORTAL_METRICS_TOKEN_FILE cannot be read (%s): only admins may read /metrics", exc)
        return None
    return token or None


def _bearer(request: Request) -> str | None:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None


async def _admin(request: Request) -> None:
    """Raises ApiError unless an admin asks: by API token, or (oidc) by the signed login cookie. Never by an
    identity header: the monitoring component lets /metrics past the auth proxy without a login (like /api/v1/),
    so a header there would be the client's own claim."""
    settings = get_portal().settings
    if _bearer(request) is not None:
        user: User | None = await authenticate(request)
    elif settings.auth_mode == "oidc":
        from api.routes import requester  # the login cookie, read as the download links read it

        user = requester(request)
    else:
        user = None
    if user is None:
        raise ApiError(401, "Send the metrics token or an admin's API token: 'Authorization: Bearer <token>'.")
    if not user.is_admin:
        raise ApiError(403, "Only admins and the monitoring scraper may read the portal's metrics.")


async def metrics(request: Request) -> Response:
    portal = get_portal()
    given, expected = _bearer(request), scraper_token(portal.settings)
    # Constant time: how much of a guess matched must not show in how long the answer takes.
    if not (given and expected and hmac.compare_digest(given.encode(), expected.encode())):
        try:
            await _admin(request)
        except ApiError as exc:
            return error(exc.status, exc.message)
    body = await run_in_threadpool(exposition, portal)
    # Version 0.0.4: the text format every Prometheus (2.x and 3.x) reads; the names here need nothing newer.
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4, headers={"Cache-Control": "no-store"})
