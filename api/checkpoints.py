"""Checkpoints over REST: ask a running job to save one now, list its requests and checkpoints, and retry a
finished job from one (services/checkpoints.py)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.common import ApiError, endpoint, iso, jobs, path_int
from api.v1 import submitted
from services.checkpoints import CheckpointService, Forbidden, RequestView
from services.models import User


def _service() -> CheckpointService:
    return CheckpointService(jobs())


def request_json(r: RequestView) -> dict[str, Any]:
    return {"id": r.id, "requested_by": r.requested_by, "requested_at": iso(r.requested_at),
            "delivered_at": iso(r.delivered_at), "written_at": iso(r.written_at), "checkpoint": r.written_name,
            "error": r.error}


@endpoint(mutation=True, body=False)
def save_checkpoint(request: Request, user: User, data: dict[str, Any]) -> Response:
    try:
        made = _service().request(user, path_int(request))
    except Forbidden as exc:
        raise ApiError(403, str(exc)) from None
    # 202: asked for and delivered to the job; the script writes it in its own time (written_at, later).
    return JSONResponse(request_json(made), status_code=202)


@endpoint()
def list_checkpoints(request: Request, user: User) -> dict[str, Any]:
    job_id = path_int(request)
    service = _service()
    return {"requests": [request_json(r) for r in service.requests(user, job_id)],
            "checkpoints": [{"name": c.name, "size": c.size, "files": c.files, "modified": iso(c.modified)}
                            for c in service.checkpoints(user, job_id)]}


@endpoint(mutation=True)
def retry_from_checkpoint(request: Request, user: User, data: dict[str, Any]) -> Response:
    name = data.get("checkpoint")
    if not isinstance(name, str) or not name:
        raise ApiError(422, "Give the checkpoint's name, as listed in 'checkpoints'.", problems={
            "checkpoint": "the name of a file or folder in the job's checkpoints/ folder"})
    try:
        new_id = _service().retry_from(user, path_int(request), name)
    except Forbidden as exc:
        raise ApiError(403, str(exc)) from None
    return submitted(user, new_id)


ROUTES = [
    Route("/api/v1/jobs/{job_id}/checkpoint", save_checkpoint, methods=["POST"]),
    Route("/api/v1/jobs/{job_id}/checkpoints", list_checkpoints, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/checkpoints/retry", retry_from_checkpoint, methods=["POST"]),
]
