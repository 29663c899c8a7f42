"""/tensorboard/<jobs>/...: the TensorBoard of a job or a set of jobs (services/tensorboard.py), served under the
portal's own address, behind its sign-in and the jobs' visibility.

Every request is checked again: who is asking (the proxy's headers or the oidc cookie, as for the pages' links;
the local user in single mode), and that they may read every job of the set (the Files tab's rule). Then it is
streamed to the local TensorBoard, which is started first when none runs (a bookmark outlives an idle stop).
Hop-by-hop headers are dropped both ways; the browser's cookies and credentials never reach TensorBoard; its
own security headers are replaced by the portal's (api/guard.py; the CSP there is relaxed for this path only).
"""

from __future__ import annotations

import httpx
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from api.common import ApiError, same_origin
from services.auth import local_user
from services.config import Settings
from services.models import NotFound
from services.portal import get_portal
from services.tensorboard import PREFIX, TensorBoardError, parse_key

# RFC 9110 7.6.1, plus what names the portal's user (TensorBoard needs none of it, and must not see it).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "host"})
NOT_FORWARDED = frozenset({"cookie", "authorization", "content-length", "x-forwarded-access-token"})
NOT_FORWARDED_PREFIXES = ("x-auth-request-",)  # oauth2-proxy's user, e-mail, groups and tokens
NOT_RETURNED = frozenset({"content-security-policy", "x-frame-options", "set-cookie", "server"})
METHODS = ["GET", "HEAD", "POST"]

_client: httpx.AsyncClient | None = None


def client() -> httpx.AsyncClient:
    global _client
    if _client is None:
        # Long reads: TensorBoard answers a first scalars query only after loading the run.
        _client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0), follow_redirects=False)
    return _client


def forwarded(name: str, settings: Settings) -> bool:
    """Whether a request header goes on to TensorBoard: none that names or signs in the portal's user (the sign-in
    proxy's identity headers as configured, its tokens), none hop-by-hop."""
    name = name.lower()
    identity = {h.lower() for h in (settings.proxy_user_header, settings.proxy_email_header,
                                    settings.proxy_groups_header) if h}
    return not (name in HOP_BY_HOP or name in NOT_FORWARDED or name in identity
                or name.startswith(NOT_FORWARDED_PREFIXES))


def _text(status: int, sentence: str) -> Response:
    return PlainTextResponse(sentence + "\n", status_code=status)


async def proxy(request: Request) -> Response:
    from api.routes import requester  # (api.routes registers this route)

    key = request.path_params["key"]
    job_ids = parse_key(key)
    if job_ids is None:
        return _text(404, "There is no such TensorBoard: the address names the jobs, e.g. /tensorboard/3-5/.")
    portal = get_portal()
    user = local_user(portal.settings) if portal.settings.auth_mode == "single" else requester(request)
    if user is None:
        return _text(401, "Sign in to the portal to open TensorBoard.")
    if request.method not in ("GET", "HEAD"):
        try:
            same_origin(request)
        except ApiError as exc:
            return _text(exc.status, exc.message)
    try:
        session = await run_in_threadpool(portal.tensorboards.open, user, job_ids)
    except NotFound as exc:
        return _text(404, str(exc))
    except TensorBoardError as exc:
        return _text(404 if "no TensorBoard event files" in str(exc) else 503, str(exc))
    if request.url.path == f"{PREFIX}/{key}":
        return RedirectResponse(f"{PREFIX}/{key}/", status_code=307)
    headers = [(k, v) for k, v in request.headers.items() if forwarded(k, portal.settings)]
    path = request.scope.get("raw_path") or request.url.path.encode()  # as sent: TensorBoard decodes it itself
    query = request.url.query
    upstream = client().build_request(
        request.method, session.base + path.decode("latin-1") + (f"?{query}" if query else ""), headers=headers,
        content=request.stream() if request.method == "POST" else None)
    try:
        answer = await client().send(upstream, stream=True)
    except httpx.HTTPError:
        return _text(502, "TensorBoard did not answer; reload the page in a moment.")
    out = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in HOP_BY_HOP | NOT_RETURNED]
    response = StreamingResponse(answer.aiter_raw(), status_code=answer.status_code,
                                 background=BackgroundTask(answer.aclose))
    response.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in out]
    return response


ROUTES = [
    Route(PREFIX + "/{key}", proxy, methods=METHODS),
    Route(PREFIX + "/{key}/{rest:path}", proxy, methods=METHODS),
]
