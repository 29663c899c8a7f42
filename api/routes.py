"""/healthz and the download routes the pages link to (files are streamed, never loaded whole)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterable

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from services.auth import current_user
from services.models import JobView, NotFound
from services.portal import get_portal


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _visible_job(request: Request) -> JobView | JSONResponse:
    """The job named in the path if the caller may see it, else the 404 to answer with."""
    try:
        job_id = int(request.path_params["job_id"])
    except (KeyError, ValueError):
        return _error(404, "Job not found.")
    try:
        return get_portal().jobs.get(current_user(), job_id)
    except NotFound as exc:
        return _error(404, str(exc))


async def healthz(_request: Request) -> Response:
    portal = get_portal()
    try:
        portal.jobs.counts()
    except Exception as exc:  # the probe must say why, not crash
        return JSONResponse({"status": "error", "database": str(exc)}, status_code=503)
    sync = portal.sync
    body = {
        "status": "ok",
        "backend": portal.jobs.backend.name,
        "sync": {"running": sync.alive, "ticks": sync.ticks, "last_error": sync.last_error},
    }
    return JSONResponse(body)


async def job_log(request: Request) -> Response:
    job = _visible_job(request)
    if isinstance(job, JSONResponse):
        return job
    try:
        rank = int(request.query_params.get("rank", "0"))
    except ValueError:
        return _error(400, "rank must be a whole number.")
    try:
        path = get_portal().jobs.log_file(job.id, rank)
    except NotFound as exc:
        return _error(404, str(exc))
    if not path.is_file():
        return _error(404, "This job has no log yet.")
    suffix = f"-node{rank}" if rank else ""
    return FileResponse(path, media_type="text/plain; charset=utf-8", filename=f"{job.name}-{job.id}{suffix}.log")


async def job_file(request: Request) -> Response:
    job = _visible_job(request)
    if isinstance(job, JSONResponse):
        return job
    try:
        path = get_portal().jobs.output_file(current_user(), job.id, request.path_params["path"])
    except NotFound as exc:
        return _error(404, str(exc))
    return FileResponse(path, filename=path.name)


def _zip_output(root: os.PathLike[str], names: Iterable[str]) -> str:
    fd, tmp = tempfile.mkstemp(suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in names:
                with contextlib.suppress(FileNotFoundError):  # a running job may rotate its checkpoints
                    zf.write(os.path.join(root, name), arcname=name)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


async def job_results(request: Request) -> Response:
    job = _visible_job(request)
    if isinstance(job, JSONResponse):
        return job
    job_id = job.id
    jobs = get_portal().jobs
    files = jobs.output_files(job_id)
    if not files:
        return _error(404, "This job wrote no files.")
    # Written to a temporary file on disk (not memory) and removed after sending.
    tmp = await run_in_threadpool(_zip_output, jobs.backend.output_dir(job_id), [f.path for f in files])
    return FileResponse(
        tmp, media_type="application/zip", filename=f"{job.name}-{job_id}-results.zip",
        background=BackgroundTask(os.unlink, tmp),
    )


ROUTES = [
    Route("/healthz", healthz),
    Route("/api/v1/jobs/{job_id}/log", job_log),
    Route("/api/v1/jobs/{job_id}/results.zip", job_results),
    Route("/api/v1/jobs/{job_id}/files/{path:path}", job_file),
]
