"""The model registry over REST: register files or folders of a finished job's output as an MLflow model version
(in the background: 202, then pending until done or failed), and list the job's registrations
(services/model_registry.py)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.common import ApiError, endpoint, iso, jobs, path_int
from services.model_registry import ModelRegistry, RegistrationView
from services.models import Forbidden, User


def registration_json(r: RegistrationView) -> dict[str, Any]:
    return {"id": r.id, "job_id": r.job_id, "registration_id": r.key, "name": r.name, "alias": r.alias,
            "paths": r.paths, "status": r.status, "version": r.version, "run_id": r.run_id, "model_url": r.model_url,
            "error": r.error, "requested_by": r.requested_by, "requested_at": iso(r.requested_at),
            "finished_at": iso(r.finished_at)}


@endpoint(mutation=True)
def register_model(request: Request, user: User, data: dict[str, Any]) -> Response:
    try:
        made = ModelRegistry(jobs()).register(user, path_int(request), data.get("paths"), data.get("name"),
                                              data.get("alias"))
    except Forbidden as exc:
        raise ApiError(403, str(exc)) from None
    # 202: recorded; the files are uploaded in the background (status pending, then done or failed).
    return JSONResponse(registration_json(made), status_code=202)


@endpoint()
def list_models(request: Request, user: User) -> dict[str, Any]:
    return {"models": [registration_json(r) for r in ModelRegistry(jobs()).registrations(user, path_int(request))]}


ROUTES = [
    Route("/api/v1/jobs/{job_id}/register-model", register_model, methods=["POST"]),
    Route("/api/v1/jobs/{job_id}/models", list_models, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/models", register_model, methods=["POST"]),
]
