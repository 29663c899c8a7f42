"""REST routes of files: what a job wrote (listed, and one streamed without following the job's links), and the
user's workspace (upload a script, list, download one of their own or a shared example)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from api.common import endpoint, error, jobs, path_int, visible
from api.file_responses import FdResponse
from services.models import NotFound, User, ValidationProblem
from services.portal import get_portal
from services.script_names import save_upload
from services.workspace import OutputFile


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
    return FdResponse(fd, name)


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
        script = await run_in_threadpool(save_upload, jobs().workspace, user, name, data)
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


ROUTES = [
    Route("/api/v1/jobs/{job_id}/files", job_files, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/files/{path:anypath}", job_file, methods=["GET"]),
    Route("/api/v1/files", upload_file, methods=["POST"]),
    Route("/api/v1/files", workspace_files, methods=["GET"]),
    Route("/api/v1/files/{path:anypath}", workspace_file, methods=["GET"]),
]
