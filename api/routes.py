"""The portal's HTTP routes besides the pages: /healthz, signed download links, the OpenAPI document and
the REST API (api/v1.py). Files are streamed from disk, never loaded whole."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable
from datetime import UTC, datetime

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Route

from api import checkpoints as checkpoints_api
from api import metrics_route, tensorboard_proxy, v1
from api import notifications as notifications_api
from api import queues as queues_api
from api import registry as registry_api
from api import sweeps as sweeps_api
from api import teams as teams_api
from api import tokens as tokens_api
from api import usage as usage_api
from api.file_responses import FdResponse
from api.openapi import openapi_document
from services.auth import LinkRefused, may_download, open_link, user_from_claims, user_from_headers
from services.history import HistoryQuery, csv_chunks, parquet_chunks
from services.models import JobView, NotFound, User
from services.portal import get_portal

log = logging.getLogger(__name__)


async def healthz(_request: Request) -> Response:
    portal = get_portal()
    try:
        await run_in_threadpool(portal.jobs.counts)
    except Exception:  # the probe says what is wrong, not the database's address or user (it needs no login)
        log.exception("health check: the database did not answer")
        return JSONResponse({"status": "error", "database": "not answering (see the portal's log)"}, status_code=503)
    sync = portal.sync
    body = {
        "status": "ok",
        "backend": portal.jobs.backend.name,
        # Cluster trouble is reported, not failed on: restarting the portal would not fix the cluster.
        "backend_error": portal.jobs.backend.health(),
        "sync": {"running": sync.alive, "ticks": sync.ticks, "last_error": sync.last_error},
        # With replicas: whether this one runs the sync loop (holds the Lease), and which one does.
        "leader": sync.leadership.held(),
        "leader_holder": sync.leadership.holder(),
        "leader_election": "on" if sync.leadership.enabled else "off",
        "leader_error": sync.leadership.error,
    }
    return JSONResponse(body)


STORE_ABOVE_BYTES = 64 * 1024 * 1024


def _sparse(st: os.stat_result) -> bool:
    """A file mostly made of holes: a job can claim a terabyte in no disk space, which the zip would read and
    write out in full. Left out (it is still listed, and downloadable on its own)."""
    return st.st_size > 16 * 1024 * 1024 and st.st_blocks * 512 < st.st_size // 4


def _zip_output(job_id: int, names: Iterable[str]) -> str:
    # On the data volume, not /tmp: a job's checkpoints can outgrow the pod's small scratch space.
    jobs = get_portal().jobs
    spool = get_portal().settings.data_dir / "tmp"
    spool.mkdir(mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".zip", dir=spool)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in names:
                # Opened again, without following links, and checked: the listing was of names, and the job may
                # have swapped a file for a link since (a running job may also rotate its checkpoints).
                try:
                    src_fd = jobs.open_output(job_id, name)
                except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
                    continue
                with os.fdopen(src_fd, "rb") as src:
                    st = os.fstat(src.fileno())
                    if _sparse(st):
                        continue
                    info = zipfile.ZipInfo(name, date_time=time.localtime(st.st_mtime)[:6])
                    # Checkpoints barely compress: stored, a multi-GB one zips at disk speed, not deflate's.
                    big = st.st_size > STORE_ABOVE_BYTES
                    info.compress_type, info.file_size = zipfile.ZIP_STORED if big else zipfile.ZIP_DEFLATED, st.st_size
                    with zf.open(info, "w", force_zip64=True) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


async def results_zip(job: JobView) -> Response:
    jobs = get_portal().jobs
    files = await run_in_threadpool(jobs.output_files, job.id)
    if not files:
        return v1.error(404, "This job wrote no files.")
    # Written to a temporary file on disk (not memory) and removed after sending.
    tmp = await run_in_threadpool(_zip_output, job.id, [f.path for f in files])
    return FileResponse(tmp, media_type="application/zip", filename=f"{job.name}-{job.id}-results.zip",
                        background=BackgroundTask(os.unlink, tmp))


def _downloadable(user: User, job_id: int) -> JobView:
    job = get_portal().jobs.get(user, job_id)
    if not may_download(user, job.owner):
        raise NotFound(f"Job {job_id} was not found.")
    return job


def _login_claims(request: Request) -> dict | None:
    """oidc mode: the claims in Streamlit's signed login cookie, read the way Streamlit's own auth routes read it
    (its helpers for that are not public API: pinned with Streamlit, and tests/test_routes.py checks it)."""
    from streamlit.auth_util import get_cookie_with_chunks
    from streamlit.web.server.server_util import AUTH_COOKIE_NAME, get_cookie_secret
    from streamlit.web.server.starlette.starlette_app_utils import decode_signed_value

    secret = get_cookie_secret()

    def one(name: str) -> bytes | None:
        value = request.cookies.get(name)
        return decode_signed_value(secret, name, value.encode("latin-1")) if value else None

    try:
        raw = get_cookie_with_chunks(one, AUTH_COOKIE_NAME)
        claims = json.loads(raw) if raw else None
    except (ValueError, UnicodeError):
        return None
    return claims if isinstance(claims, dict) else None


def requester(request: Request) -> User | None:
    """Who follows a link, as far as the request can say (single mode: it cannot)."""
    settings = get_portal().settings
    if settings.auth_mode == "proxy":
        return user_from_headers(settings, request.headers)
    if settings.auth_mode == "oidc":
        return user_from_claims(settings, _login_claims(request))
    return None


async def download(request: Request) -> Response:
    """A link the pages signed for one user and one file; checked again against the job's owner now."""
    try:
        user, what = open_link(get_portal().settings, request.path_params["token"], requester(request))
    except LinkRefused as exc:
        return v1.error(exc.status, str(exc))
    if what.get("kind") == "history":
        return await run_in_threadpool(history_export, user, what.get("query") or {}, what.get("format") == "parquet")
    jobs = get_portal().jobs
    try:
        job = await run_in_threadpool(_downloadable, user, int(what.get("job", 0)))
        if what.get("kind") == "zip":
            return await results_zip(job)
        if what.get("kind") == "log":
            rank = int(what.get("rank", 0))
            try:
                fd = await run_in_threadpool(jobs.open_log, job.id, rank)
            except (FileNotFoundError, NotADirectoryError):
                return v1.error(404, "This job has no log yet.")
            suffix = f"-node{rank}" if rank else ""
            return FdResponse(fd, f"{job.name}-{job.id}{suffix}.log", "text/plain; charset=utf-8")
        fd, name = await run_in_threadpool(jobs.open_output_file, user, job.id, str(what.get("path", "")))
        return FdResponse(fd, name)
    except NotFound as exc:
        return v1.error(404, str(exc))


def history_export(user: User, raw_query: dict, parquet: bool) -> Response:
    """The history view as CSV or Parquet, streamed in batches: 100,000 rows never sit in memory at once."""
    try:
        query = HistoryQuery(**raw_query)
    except ValueError:
        return v1.error(400, "This export link holds an invalid filter: export again from the History page.")
    history = get_portal().history
    rows = history.rows(user, query)
    metrics = history.export_metric_names(user, query)  # a column for each, whichever job comes first
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    if parquet:
        return StreamingResponse(parquet_chunks(rows, metrics), media_type="application/vnd.apache.parquet", headers={
            "Content-Disposition": f'attachment; filename="ml-portal-history-{stamp}.parquet"'})
    return StreamingResponse(csv_chunks(rows, metrics), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="ml-portal-history-{stamp}.csv"'})


@v1.endpoint(raw=True)
async def api_history_export(request: Request, user: User) -> Response:
    """GET /api/v1/history/export?format=csv|parquet&<the history's filters and sort>: every page of the view."""
    fmt = request.query_params.get("format", "csv")
    if fmt not in ("csv", "parquet"):
        return v1.error(400, "'format' is 'csv' or 'parquet'.")
    query = v1.history_query(request, paged=False, extra=("format",))
    return await run_in_threadpool(history_export, user, query.model_dump(mode="json"), fmt == "parquet")


@v1.endpoint(raw=True)
async def api_results_zip(request: Request, user: User) -> Response:
    job = await run_in_threadpool(_downloadable, user, v1.path_int(request))
    return await results_zip(job)


async def api_fallback(request: Request) -> Response:
    """Any other /api/ request: a JSON answer, not the pages' HTML (405 when the path exists for other methods)."""
    allowed = sorted({m for r in API_ROUTES if r.methods and r.matches(request.scope)[0] is Match.PARTIAL
                      for m in r.methods})
    if allowed:
        return JSONResponse({"error": f"{request.method} is not allowed here; use {', '.join(allowed)}."},
                            status_code=405, headers={"Allow": ", ".join(allowed)})
    return v1.error(404, f"There is no API route {request.url.path}.")


async def openapi(_request: Request) -> Response:
    return JSONResponse(openapi_document())


API_ROUTES = [
    Route("/api/v1/openapi.json", openapi, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/results.zip", api_results_zip, methods=["GET"]),
    Route("/api/v1/history/export", api_history_export, methods=["GET"]),
    *v1.ROUTES,
    *notifications_api.ROUTES,
    *tokens_api.ROUTES,
    *queues_api.ROUTES,
    *sweeps_api.ROUTES,
    *usage_api.ROUTES,
    *checkpoints_api.ROUTES,
    *registry_api.ROUTES,
    *teams_api.ROUTES,
]
ROUTES = [
    Route("/healthz", healthz),
    Route("/metrics", metrics_route.metrics, methods=["GET"]),
    Route("/download/{token}", download),
    *tensorboard_proxy.ROUTES,
    *API_ROUTES,
    Route("/api/{rest:anypath}", api_fallback, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
                                                     "TRACE"]),
]
