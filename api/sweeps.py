"""/api/v1/sweeps: create a hyperparameter sweep (services/sweep_spec.py), follow it, list its trials, stop it,
extend it, and its estimated cost before it starts. Visibility is the jobs' (api/common.py for auth and errors)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.common import ApiError, endpoint, iso, jobs, path_int
from services.models import User, ValidationProblem
from services.portal import get_portal
from services.script_names import script_path, with_upload_hint
from services.sweep_spec import SweepSpec
from services.sweeps import SweepService, SweepView, TrialView


def service() -> SweepService:
    return get_portal().sweeps


def trial_json(t: TrialView) -> dict[str, Any]:
    return {"number": t.number, "params": t.params, "state": t.state, "value": t.value, "job_id": t.job_id,
            "job_ids": t.job_ids, "job_status": t.job_status, "reason": t.reason,
            "url": f"/job?id={t.job_id}" if t.job_id else None}


def sweep_json(v: SweepView) -> dict[str, Any]:
    p = v.progress
    return {"id": v.id, "name": v.name, "owner": v.owner, "state": v.state, "finished": v.finished,
            "stop_reason": v.stop_reason, "created_at": iso(v.created_at), "ended_at": iso(v.ended_at),
            "spec": v.spec.model_dump(mode="json"),
            "progress": {"done": p.done, "running": p.running, "pruned": p.pruned, "failed": p.failed,
                         "stopped": p.stopped, "left": p.left},
            "best": trial_json(v.best) if v.best else None}


def _spec(user: User, data: dict[str, Any]) -> SweepSpec:
    """The body as a spec: unknown fields are refused (a misspelt 'budget' must not silently become 10)."""
    unknown = sorted(set(data) - set(SweepSpec.model_fields))
    if unknown:
        fields = ", ".join(SweepSpec.model_fields)
        raise ValidationProblem({unknown[0]: f"is not a field of a sweep (they are {fields})"})
    base = data.get("base")
    if isinstance(base, dict) and isinstance(base.get("script"), str):  # the caller's own script, as for a job
        data = data | {"base": base | {"script": script_path(jobs().workspace, user, base["script"])}}
    return service().validate(user, data)


def _estimate_json(user: User, spec: SweepSpec) -> dict[str, Any]:
    gpu_hours, cost = service().estimate_cost(user, spec)
    return {"trials": spec.budget, "gpu_hours": gpu_hours, "cost": cost}


@endpoint(mutation=True)
def create(request: Request, user: User, data: dict[str, Any]) -> Response:
    try:
        spec = _spec(user, data)
    except ValidationProblem as exc:
        base = data.get("base") if isinstance(data.get("base"), dict) else {}
        raise with_upload_hint(jobs().workspace, user, exc, base.get("script")) from None
    body = sweep_json(service().create(user, spec)) | {"estimate": _estimate_json(user, spec)}
    return JSONResponse(body, status_code=201)


@endpoint(mutation=True)
def estimate(request: Request, user: User, data: dict[str, Any]) -> dict[str, Any]:
    return _estimate_json(user, _spec(user, data))


@endpoint()
def list_sweeps(request: Request, user: User) -> dict[str, Any]:
    scope = request.query_params.get("scope", "mine")
    if scope not in ("mine", "all"):
        raise ApiError(400, "'scope' is 'mine' or 'all'.")
    return {"sweeps": [sweep_json(v) for v in service().list(user, everyone=scope == "all")]}


@endpoint()
def get_sweep(request: Request, user: User) -> dict[str, Any]:
    return sweep_json(service().get(user, path_int(request, "sweep_id")))


@endpoint()
def list_trials(request: Request, user: User) -> dict[str, Any]:
    return {"trials": [trial_json(t) for t in service().trials(user, path_int(request, "sweep_id"))]}


@endpoint(mutation=True, body=False)
def stop(request: Request, user: User, data: dict[str, Any]) -> Response:
    return JSONResponse(sweep_json(service().stop(user, path_int(request, "sweep_id"))), status_code=202)


@endpoint(mutation=True)
def extend(request: Request, user: User, data: dict[str, Any]) -> dict[str, Any]:
    n = data.get("trials")
    if not isinstance(n, int) or isinstance(n, bool):
        raise ValidationProblem({"trials": "give the number of trials to add, a whole number"})
    return sweep_json(service().extend(user, path_int(request, "sweep_id"), n))


@endpoint()
def importances(request: Request, user: User) -> dict[str, Any]:
    """How much each varied parameter mattered to the objective ({} until a few trials have finished)."""
    return {"importances": service().importances(user, path_int(request, "sweep_id"))}


@endpoint()
def best_values(request: Request, user: User) -> dict[str, Any]:
    """The best trial's job values: POST them to /api/v1/jobs to run it as a single job."""
    return {"values": service().best_values(user, path_int(request, "sweep_id"))}


ROUTES = [
    Route("/api/v1/sweeps", create, methods=["POST"]),
    Route("/api/v1/sweeps", list_sweeps, methods=["GET"]),
    Route("/api/v1/sweeps/estimate", estimate, methods=["POST"]),
    Route("/api/v1/sweeps/{sweep_id}", get_sweep, methods=["GET"]),
    Route("/api/v1/sweeps/{sweep_id}/trials", list_trials, methods=["GET"]),
    Route("/api/v1/sweeps/{sweep_id}/best", best_values, methods=["GET"]),
    Route("/api/v1/sweeps/{sweep_id}/importances", importances, methods=["GET"]),
    Route("/api/v1/sweeps/{sweep_id}/stop", stop, methods=["POST"]),
    Route("/api/v1/sweeps/{sweep_id}/extend", extend, methods=["POST"]),
]
