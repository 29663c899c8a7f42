"""The REST API under /api/v1: the portal's use cases for scripts, notebooks and the Python client.

Every route needs a personal API token (``Authorization: Bearer mlp_…``, made on the "API tokens" page), in
every auth mode: the proxy lets /api/v1 through so tokens work, so no identity header is believed here.
Mutations also need a JSON body and must not come from another site. Errors are JSON with a sentence.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from api.file_responses import fd_response
from api.guard import host_allowed
from services.backends.base import BackendError
from services.history import HistoryQuery
from services.jobs import JobService, validation_problems
from services.logs import complete_lines, count_lines, read_from, read_lines, read_tail, seek_line
from services.models import Conflict, JobView, NotFound, StatusGroup, User, ValidationProblem
from services.portal import get_portal
from services.templates import TemplateView
from services.tokens import TokenExpired
from services.workspace import OutputFile


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
MAX_PAGE = 200
MAX_LOG_LINES = 10_000
STREAM_POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


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
        "request": job.request, "url": f"/job?id={job.id}",
    }


def template_json(t: TemplateView) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "owner": t.owner, "values": t.values, "created_at": iso(t.created_at)}


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


# Who am I -----------------------------------------------------------------------------------------
@endpoint()
def me(request: Request, user: User) -> dict[str, Any]:
    return {"name": user.name, "email": user.email, "role": user.role.value, "groups": list(user.groups)}


# Jobs ---------------------------------------------------------------------------------------------
def _submit_values(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    template = data.pop("template", None)
    if template is not None:
        if not isinstance(template, str):
            raise ValidationProblem({"template": "must be the name of a template"})
        # The job keeps the template's name: the history filters by it.
        data = get_portal().templates.get_by_name(template).values | data | {"template": template}
    return data


@endpoint(mutation=True)
def submit(request: Request, user: User, data: dict[str, Any]) -> Response:
    job_id = jobs().submit(user, _submit_values(data))
    return JSONResponse(job_json(jobs().get(user, job_id)), status_code=201)


@endpoint()
def list_jobs(request: Request, user: User) -> dict[str, Any]:
    scope = request.query_params.get("scope", "mine")
    if scope not in ("mine", "all"):
        raise ApiError(400, "'scope' is 'mine' or 'all'.")
    group = request.query_params.get("group") or None
    if group is not None and group not in {g.value for g in StatusGroup}:
        raise ApiError(400, f"'group' is one of {', '.join(g.value for g in StatusGroup)}.")
    limit = query_int(request, "limit", 50, 1, MAX_PAGE)
    offset = query_int(request, "offset", 0, 0, 10**9)
    search = request.query_params.get("search", "")[:200]
    owner = jobs().visible_owner(user, everyone=scope == "all")
    rows = jobs().list_jobs(limit=limit + 1, offset=offset, search=search, owner=owner,
                            group=StatusGroup(group) if group else None)
    return {"jobs": [job_json(j) for j in rows[:limit]], "limit": limit, "offset": offset,
            "has_more": len(rows) > limit}


# History ------------------------------------------------------------------------------------------
HISTORY_PARAMS = ("search", "status", "owner", "tag", "template", "date_from", "date_to", "gpus_min", "gpus_max",
                  "sort", "metric", "descending", "page", "page_size")


def history_query(request: Request, paged: bool = True, extra: tuple[str, ...] = ()) -> HistoryQuery:
    """The History page's view from query parameters (the same names as its fields; status comma-separated).
    `extra`: parameters the route reads itself."""
    known = HISTORY_PARAMS if paged else HISTORY_PARAMS[:-2]
    unknown = sorted(set(request.query_params) - set(known) - set(extra))
    if unknown:
        raise ApiError(400, f"Unknown parameter '{unknown[0]}'; the history takes {', '.join(known)}.")
    raw: dict[str, Any] = {k: v for k, v in request.query_params.items() if k in known and v != ""}
    if "status" in raw:
        raw["status"] = [part.strip() for part in raw["status"].split(",") if part.strip()]
    try:
        return HistoryQuery.model_validate(raw)
    except ValidationError as exc:
        raise ValidationProblem(validation_problems(exc)) from None


@endpoint()
def history(request: Request, user: User) -> dict[str, Any]:
    query = history_query(request)
    rows, more = get_portal().history.page_with_more(user, query)
    return {"jobs": [job_json(j) for j in rows], "page": query.page, "page_size": query.page_size,
            "has_more": more, "sort": query.sort, "metric": query.metric or None, "descending": query.descending}


@endpoint()
def history_summary(request: Request, user: User) -> dict[str, Any]:
    s = get_portal().history.summary(user, history_query(request, paged=False))
    return {"jobs": s.jobs, "succeeded": s.succeeded, "success_rate": s.success_rate, "gpu_hours": s.gpu_hours,
            "cost": s.cost}


@endpoint()
def history_metrics(request: Request, user: User) -> dict[str, Any]:
    return {"metrics": get_portal().history.final_metric_names(user)}


@endpoint()
def get_job(request: Request, user: User) -> dict[str, Any]:
    return job_json(visible(request, user))


@endpoint()
def job_status(request: Request, user: User) -> dict[str, Any]:
    j = visible(request, user)
    return {"id": j.id, "status": j.status.value, "finished": not j.is_active, "reason": j.reason, "epoch": j.epoch,
            "total_epochs": j.total_epochs, "progress": j.progress, "eta_seconds": j.eta_seconds}


@endpoint(mutation=True)
def stop_job(request: Request, user: User, data: dict[str, Any]) -> Response:
    job_id = path_int(request)
    jobs().stop(user, job_id)
    return JSONResponse(job_json(jobs().get(user, job_id)), status_code=202)


@endpoint(mutation=True)
def delete_job(request: Request, user: User, data: dict[str, Any]) -> Response:
    jobs().delete(user, path_int(request))
    return Response(status_code=204)


@endpoint(mutation=True)
def clone_job(request: Request, user: User, data: dict[str, Any]) -> Response:
    job_id = path_int(request)
    values = jobs().clone_values(user, job_id) | _submit_values(data)
    new_id = jobs().submit(user, values, parent_id=job_id)
    return JSONResponse(job_json(jobs().get(user, new_id)), status_code=201)


@endpoint(mutation=True)
def retry_job(request: Request, user: User, data: dict[str, Any]) -> Response:
    new_id = jobs().retry(user, path_int(request))
    return JSONResponse(job_json(jobs().get(user, new_id)), status_code=201)


# Logs ---------------------------------------------------------------------------------------------
@endpoint()
def job_logs(request: Request, user: User) -> dict[str, Any]:
    job = visible(request, user)
    rank = query_int(request, "rank", 0, 0, 4096)
    path = jobs().log_file(job.id, rank)
    final = not job.is_active
    if "offset" in request.query_params:
        offset = query_int(request, "offset", 0, 0, 10**12)
        limit = query_int(request, "limit", 1000, 1, MAX_LOG_LINES)
        lines = read_lines(path, offset, limit, final)
        total = None
    else:
        tail = query_int(request, "tail", 200, 1, MAX_LOG_LINES)
        total = count_lines(path)
        lines = read_tail(path, max_lines=tail)
        offset = max(0, total - len(lines))
    return {"lines": lines, "offset": offset, "next_offset": offset + len(lines),
            "total": total if total is not None else count_lines(path), "finished": final}


def _sse(event: str | None, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    head += f"event: {event}\n" if event else ""
    # SSE data cannot hold a bare CR; a progress bar's redraws show as their last state.
    payload = "\n".join(f"data: {part.rsplit(chr(13), 1)[-1]}" for part in data.split("\n"))
    return f"{head}{payload}\n\n"


@endpoint(raw=True)
async def stream_logs(request: Request, user: User) -> Response:
    job = await run_in_threadpool(visible, request, user)
    rank = query_int(request, "rank", 0, 0, 4096)
    path = await run_in_threadpool(jobs().log_file, job.id, rank)
    start = query_int(request, "offset", 0, 0, 10**12)
    last_id = request.headers.get("last-event-id", "")
    if last_id.isascii() and last_id.isdecimal() and len(last_id) < 16:
        start = int(last_id)

    async def events() -> AsyncIterator[str]:
        line_no = start
        pos = await run_in_threadpool(seek_line, path, start)
        quiet = 0.0
        while True:
            try:
                current = await run_in_threadpool(jobs().get, user, job.id)
            except NotFound:  # deleted while someone follows its log
                yield _sse("end", json.dumps({"status": "Deleted", "reason": "The job was deleted."}))
                return
            finished = not current.is_active
            data = await run_in_threadpool(read_from, path, pos, 1 << 20)
            lines, used = complete_lines(data, final=finished and len(data) < 1 << 20)
            pos += used
            for line in lines:
                line_no += 1
                yield _sse(None, line, line_no)
            if lines:
                quiet = 0.0
                continue
            if finished:
                yield _sse("end", json.dumps({"status": current.status.value, "reason": current.reason}))
                return
            if await request.is_disconnected():
                return
            quiet += STREAM_POLL_SECONDS
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(STREAM_POLL_SECONDS)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# Metrics and files --------------------------------------------------------------------------------
@endpoint()
def job_metrics(request: Request, user: User) -> dict[str, Any]:
    job = visible(request, user)
    max_points = query_int(request, "max_points", 2000, 10, 20_000)
    series = jobs().metric_series(job.id, max_points=max_points)
    return {"series": {name: {"x": s.x.tolist(), "y": [None if v != v else v for v in s.y.tolist()],
                              "axis": s.axis} for name, s in series.items()},
            "final": finite(job.final_metrics), "latest": finite(job.latest_metrics)}


def _files_json(files: list[OutputFile]) -> dict[str, Any]:
    return {"files": [{"path": f.path, "size": f.size,
                       "modified": datetime.fromtimestamp(f.modified).astimezone().isoformat()} for f in files]}


@endpoint()
def job_files(request: Request, user: User) -> dict[str, Any]:
    job = visible(request, user)
    return _files_json(jobs().output_files(job.id))


@endpoint()
def job_file(request: Request, user: User) -> Response:
    fd, name = jobs().open_output_file(user, path_int(request), request.path_params["path"])
    return fd_response(fd, name)


@endpoint(mutation=True, raw=True)
async def upload_file(request: Request, user: User) -> Response:
    settings = get_portal().settings
    limit = int(settings.max_upload_mb * 1e6)
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return error(415, "Upload the script as multipart/form-data with the field 'file'.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 64 * 1024:
        return error(413, f"The upload is larger than the limit of {settings.max_upload_mb:g} MB.")
    try:
        async with request.form(max_files=1, max_fields=5, max_part_size=limit + 1) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                return error(422, "Send the script in the form field 'file'.", problems={"file": "missing"})
            data = await upload.read(limit + 1)
            name = upload.filename or ""
    except Exception as exc:  # a malformed multipart body is the client's mistake, said in a sentence
        detail = str(getattr(exc, "detail", "") or exc).strip().rstrip(".")  # Starlette's "400: " prefix left off
        return error(400, "The upload could not be read as multipart/form-data" + (f": {detail}." if detail else "."))
    if len(data) > limit:
        return error(413, f"The upload is larger than the limit of {settings.max_upload_mb:g} MB.")
    try:
        script = await run_in_threadpool(jobs().workspace.save_upload, user, name, data)
    except ValidationProblem as exc:
        problems = {"file": exc.problems.get("upload", str(exc))}
        return error(422, "The upload was refused: " + problems["file"], problems=problems)
    return JSONResponse({"script": script}, status_code=201)


@endpoint()
def workspace_files(request: Request, user: User) -> dict[str, Any]:
    return _files_json(jobs().workspace.files(user))


@endpoint()
def workspace_file(request: Request, user: User) -> Response:
    """One of this user's own files, or a shared example (never another user's)."""
    try:
        path = jobs().workspace.resolve(user, request.path_params["path"])
    except FileNotFoundError:
        raise NotFound("No such file in your workspace.") from None
    return FileResponse(path, filename=path.name)


# Templates ----------------------------------------------------------------------------------------
@endpoint()
def list_templates(request: Request, user: User) -> dict[str, Any]:
    return {"templates": [template_json(t) for t in get_portal().templates.list()]}


@endpoint(mutation=True)
def save_template(request: Request, user: User, data: dict[str, Any]) -> Response:
    name = data.get("name")
    if not isinstance(name, str):
        raise ValidationProblem({"name": "give the template a name"})
    t = get_portal().templates.save(user, name, data.get("values", {}))
    return JSONResponse(template_json(t), status_code=201)


@endpoint(mutation=True)
def delete_template(request: Request, user: User, data: dict[str, Any]) -> Response:
    get_portal().templates.delete(user, path_int(request, "template_id"))
    return Response(status_code=204)


ROUTES = [
    Route("/api/v1/me", me, methods=["GET"]),
    Route("/api/v1/jobs", submit, methods=["POST"]),
    Route("/api/v1/jobs", list_jobs, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}", delete_job, methods=["DELETE"]),
    Route("/api/v1/jobs/{job_id}/status", job_status, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/stop", stop_job, methods=["POST"]),
    Route("/api/v1/jobs/{job_id}/clone", clone_job, methods=["POST"]),
    Route("/api/v1/jobs/{job_id}/retry", retry_job, methods=["POST"]),
    Route("/api/v1/jobs/{job_id}/logs", job_logs, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/logs/stream", stream_logs, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/metrics", job_metrics, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/files", job_files, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/files/{path:anypath}", job_file, methods=["GET"]),
    Route("/api/v1/files", upload_file, methods=["POST"]),
    Route("/api/v1/files", workspace_files, methods=["GET"]),
    Route("/api/v1/files/{path:anypath}", workspace_file, methods=["GET"]),
    Route("/api/v1/templates", list_templates, methods=["GET"]),
    Route("/api/v1/history", history, methods=["GET"]),
    Route("/api/v1/history/summary", history_summary, methods=["GET"]),
    Route("/api/v1/history/metrics", history_metrics, methods=["GET"]),
    Route("/api/v1/templates", save_template, methods=["POST"]),
    Route("/api/v1/templates/{template_id}", delete_template, methods=["DELETE"]),
]
