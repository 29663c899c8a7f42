"""What every REST route under /api/v1 shares: token authentication, the same-origin guard and JSON body of
mutations, errors as JSON with a sentence, path and query parsing, and a job as JSON.

Every route needs a personal API token (``Authorization: Bearer mlp_…``, made on the "API tokens" page), in
every auth mode: the proxy lets /api/v1 through so tokens work, so no identity header is believed here.
Mutations also need a JSON body and must not come from another site. Errors are JSON with a sentence.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.guard import host_allowed
from services import queues
from services.backends.base import BackendError
from services.jobs import JobService
from services.models import Conflict, Forbidden, JobView, NotFound, User, ValidationProblem
from services.portal import get_portal
from services.store.orm import utcnow
from services.tokens import TokenExpired


class AnyPath(Convertor[str]):
    """Like Starlette's "path", but also across encoded line breaks, so such a name is "not found" in JSON."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", AnyPath())

MAX_JSON_BYTES = 256 * 1024
MAX_JSON_DEPTH = 64


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN or infinity: a diverged loss is sent as null (its card says NaN)."""
    return {k: (v if isinstance(v, int | float) and math.isfinite(v) else None) for k, v in metrics.items()}


def job_json(job: JobView) -> dict[str, Any]:
    return {
        "id": job.id, "name": job.name, "owner": job.owner, "status": job.status.value, "group": job.group.value,
        "finished": not job.is_active, "reason": job.reason, "created_at": iso(job.created_at),
        "started_at": iso(job.started_at), "finished_at": iso(job.finished_at), "epoch": job.epoch,
        "total_epochs": job.total_epochs, "progress": job.progress, "eta_seconds": job.eta_seconds,
        "latest_metrics": finite(job.latest_metrics), "final_metrics": finite(job.final_metrics), "gpus": job.gpus,
        "nodes": job.nodes, "cost_per_hour": job.cost_per_hour, "exit_code": job.exit_code,
        # What it has cost and its GPU-hours: accrued while it runs (every few seconds), final once it ended.
        "cost": job.cost(utcnow()), "gpu_hours": None if job.gpu_hours is None else round(job.gpu_hours, 4),
        "request": job.request, "url": f"/job?id={job.id}",
        # Provenance: the job this one was cloned from ("clone") or is a retry of ("retry"); null kind: not recorded.
        "parent_id": job.parent_id, "parent_kind": job.parent_kind,
        # A sweep's trial: its sweep and trial number (null for a single job).
        "sweep_id": job.sweep_id, "sweep_trial": job.sweep_trial,
        "team": job.team,  # the team it belongs to (services/teams.py); null for a job from before teams
        # A waiting job's place in its queue: position, blocker, estimated start (null otherwise, or not known).
        "queue": status.to_json() if (status := queues.waiting_status(jobs(), job)) is not None else None,
    }


def jobs() -> JobService:
    return get_portal().jobs


async def authenticate(request: Request) -> User:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "Send a personal API token: 'Authorization: Bearer <token>' (page 'API tokens').")
    try:
        user = await run_in_threadpool(get_portal().tokens.authenticate, secret.strip())
    except TokenExpired as exc:
        raise ApiError(401, str(exc)) from None
    if user is None:
        raise ApiError(401, "The API token is not valid or has been revoked.")
    return user


def same_origin(request: Request) -> None:
    """Mutations only from scripts (no Origin) or from the portal's own pages: an Origin must be this Host, and on
    the allow-list (a rebound name is the same origin as the Host it sends, so only the list tells them apart)."""
    site = request.headers.get("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        raise ApiError(403, "Cross-site requests may not change anything.")
    origin = request.headers.get("origin")
    if origin is None:
        return
    netloc = urlsplit(origin).netloc if origin != "null" else ""
    if netloc != request.headers.get("host", "") or not host_allowed(netloc, get_portal().settings.allowed_hosts):
        raise ApiError(403, "Cross-site requests may not change anything.")


async def json_body(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "Send the request body as JSON (Content-Type: application/json).")
    chunks, size = [], 0
    async for chunk in request.stream():  # counted as it arrives: a huge body is refused, not read whole first
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise ApiError(413, f"The request body is larger than {MAX_JSON_BYTES // 1024} KB.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except RecursionError:  # the parser's own depth limit, far above ours
        body = None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.") from None
    if body is None or json_depth(body) > MAX_JSON_DEPTH:
        raise ApiError(400, f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.")
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (without recursion: it may be 900 deep)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:  # deeper than the bound is already the answer
                todo.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


Handler = Callable[..., Any]


def endpoint(*, mutation: bool = False, body: bool = True, raw: bool = False) -> Callable[[Handler], Any]:
    """Authenticate, guard mutations, run the (blocking) handler in a worker thread, map errors to JSON.
    `raw` handlers are async and produce their own response (streams, uploads)."""

    def wrap(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(fn)
        async def route(request: Request) -> Response:
            try:
                user = await authenticate(request)
                if mutation:
                    same_origin(request)
                if raw:
                    return await fn(request, user)
                data = await json_body(request) if mutation and body else {}
                result = await run_in_threadpool(fn, request, user, data) if mutation else await run_in_threadpool(
                    fn, request, user)
            except ApiError as exc:
                return error(exc.status, exc.message, **exc.extra)
            except ValidationProblem as exc:
                return error(422, "Some values are not valid: " + str(exc), problems=exc.problems)
            except NotFound as exc:
                return error(404, str(exc))
            except Conflict as exc:
                return error(409, str(exc))
            except Forbidden as exc:
                return error(403, str(exc))
            except BackendError as exc:
                return error(503, str(exc))
            return result if isinstance(result, Response) else JSONResponse(result)

        return route

    return wrap


def path_int(request: Request, name: str = "job_id") -> int:
    try:
        value = int(request.path_params[name])
    except (KeyError, ValueError):
        raise ApiError(404, "Not found.") from None
    if not 0 < value < 2**62:
        raise ApiError(404, "Not found.")
    return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"'{name}' must be a whole number.") from None
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low} and {high}.")
    return value


def visible(request: Request, user: User) -> JobView:
    return jobs().get(user, path_int(request))

