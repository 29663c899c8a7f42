"""The REST API under /api/v1: the portal's use cases for scripts, notebooks and the Python client.

This module holds the routes of jobs, their metrics, the history and templates, and assembles `ROUTES`, every
route of the API in the order they are matched. A job's log is in api/logs.py, files (a job's and the
workspace) in api/files.py. What the routes share (token auth, the same-origin guard, JSON bodies and errors)
is in api/common.py; its names are also importable from here.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import files as files_api
from api import logs as logs_api
from api.common import ApiError, endpoint, finite, iso, job_json, jobs, path_int, query_int, visible
from api.common import error as error  # re-exported: api/routes.py uses it from here
from api.file_responses import FdResponse
from services import budget_wait
from services import job_snapshots as snapshots
from services.history import HistoryQuery
from services.jobs import validation_problems
from services.models import JobStatus, StatusGroup, User, ValidationProblem
from services.portal import get_portal
from services.script_names import script_path, with_upload_hint
from services.templates import TemplateView

MAX_PAGE = 200


def template_json(t: TemplateView) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "owner": t.owner, "values": t.values, "created_at": iso(t.created_at),
            "team": t.team}  # shared with that team only; null: with everyone


# Who am I -----------------------------------------------------------------------------------------
@endpoint()
def me(request: Request, user: User) -> dict[str, Any]:
    return {"name": user.name, "email": user.email, "role": user.role.value, "groups": list(user.groups)}


# Jobs ---------------------------------------------------------------------------------------------
def _submit_values(user: User, data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    if isinstance(data.get("script"), str):  # the caller's own: a template's or a cloned job's is exact already
        data["script"] = script_path(jobs().workspace, user, data["script"])
    template = data.pop("template", None)
    if template not in (None, ""):  # "": none, as a job's "request" holds it when it was submitted without one
        if not isinstance(template, str):
            raise ValidationProblem({"template": "must be the name of a template"})
        # The job keeps the template's name: the history filters by it.
        data = get_portal().templates.get_by_name(template, user).values | data | {"template": template}
    return data


def submitted(user: User, job_id: int) -> Response:
    """201 for a job the backend took; 202 for one accepted but not yet in it: while it cannot be reached (status
    Submitting, the reason says it is submitted when the backend is back) or kept back for its spent budget (Queued,
    the reason says until when): a script that checks the status learns the difference."""
    job = jobs().get(user, job_id)
    later = job.status is JobStatus.SUBMITTING or budget_wait.is_kept_back(jobs(), job)
    return JSONResponse(job_json(job), status_code=202 if later else 201)


@endpoint(mutation=True)
def submit(request: Request, user: User, data: dict[str, Any]) -> Response:
    values = _submit_values(user, data)
    try:
        job_id = jobs().submit(user, values)
    except ValidationProblem as exc:
        raise with_upload_hint(jobs().workspace, user, exc, values.get("script")) from None
    return submitted(user, job_id)


@endpoint()
def list_jobs(request: Request, user: User) -> dict[str, Any]:
    scope = request.query_params.get("scope", "mine")
    if scope not in ("mine", "team", "all"):
        raise ApiError(400, "'scope' is 'mine', 'team' or 'all'.")
    group = request.query_params.get("group") or None
    if group is not None and group not in {g.value for g in StatusGroup}:
        raise ApiError(400, f"'group' is one of {', '.join(g.value for g in StatusGroup)}.")
    limit = query_int(request, "limit", 50, 1, MAX_PAGE)
    offset = query_int(request, "offset", 0, 0, 10**9)
    search = request.query_params.get("search", "")[:200]
    if any(unicodedata.category(c) == "Cc" for c in search):
        raise ApiError(400, "'search' must not hold control characters.")
    listing = jobs().listing(user, scope)  # whose jobs: services/teams.py decides
    rows = jobs().list_jobs(limit=limit + 1, offset=offset, search=search, owner=listing.owner,
                            group=StatusGroup(group) if group else None, where=listing.where)
    return {"jobs": [job_json(j) for j in rows[:limit]], "limit": limit, "offset": offset,
            "has_more": len(rows) > limit}


# History ------------------------------------------------------------------------------------------
HISTORY_PARAMS = ("search", "status", "owner", "tag", "template", "date_from", "date_to", "gpus_min", "gpus_max",
                  "metric_filter", "scope", "sweep", "sort", "metric", "descending", "page", "page_size")


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
        problems = validation_problems(exc)
        if "metric_filter" in problems:  # an expression the portal cannot read: a bad request, not a bad value
            raise ApiError(400, f"'metric_filter': {problems['metric_filter']}.", problems=problems) from None
        raise ValidationProblem(problems) from None


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
    values = jobs().clone_values(user, job_id) | _submit_values(user, data)
    new_id = jobs().submit(user, values, parent_id=job_id)
    return submitted(user, new_id)


@endpoint(mutation=True)
def retry_job(request: Request, user: User, data: dict[str, Any]) -> Response:
    new_id = jobs().retry(user, path_int(request))
    return submitted(user, new_id)


# The script a job ran (its snapshot) -----------------------------------------------------------------
@endpoint()
def job_script(request: Request, user: User) -> Response:
    fd, name = snapshots.open_script(jobs(), user, path_int(request))
    return FdResponse(fd, name, "text/plain; charset=utf-8")


@endpoint()
def job_script_diff(request: Request, user: User) -> dict[str, Any]:
    job_id = path_int(request)
    against = request.query_params.get("against", "workspace").strip()
    try:
        if against == "workspace":
            diff = snapshots.diff_with_workspace(jobs(), user, job_id)
        elif against.isascii() and against.isdigit() and len(against) < 19 and int(against) > 0:
            diff = snapshots.diff_with_job(jobs(), user, job_id, int(against))
        else:
            raise ApiError(400, "'against' is 'workspace' or another job's id.")
    except snapshots.NotComparable as exc:
        raise ApiError(422, str(exc)) from None
    return {"job_id": job_id, "against": against, "from": diff.old, "to": diff.new, "identical": diff.identical,
            "diff": diff.diff}


# Metrics ------------------------------------------------------------------------------------------
@endpoint()
def job_metrics(request: Request, user: User) -> dict[str, Any]:
    job = visible(request, user)
    max_points = query_int(request, "max_points", 2000, 10, 20_000)
    series = jobs().metric_series(job.id, max_points=max_points)
    return {"series": {name: {"x": s.x.tolist(), "y": [None if v != v else v for v in s.y.tolist()],
                              "axis": s.axis} for name, s in series.items()},
            "final": finite(job.final_metrics), "latest": finite(job.latest_metrics)}


# Templates ----------------------------------------------------------------------------------------
@endpoint()
def list_templates(request: Request, user: User) -> dict[str, Any]:
    return {"templates": [template_json(t) for t in get_portal().templates.list(user)]}


@endpoint(mutation=True)
def save_template(request: Request, user: User, data: dict[str, Any]) -> Response:
    name = data.get("name")
    if not isinstance(name, str):
        raise ValidationProblem({"name": "give the template a name"})
    team = data.get("team")
    if team is not None and not isinstance(team, str):
        raise ValidationProblem({"team": "is the name of one of your teams, or null (shared with everyone)"})
    t = get_portal().templates.save(user, name, data.get("values", {}), team=team)
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
    Route("/api/v1/jobs/{job_id}/script", job_script, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/script/diff", job_script_diff, methods=["GET"]),
    *logs_api.ROUTES,
    Route("/api/v1/jobs/{job_id}/metrics", job_metrics, methods=["GET"]),
    *files_api.ROUTES,
    Route("/api/v1/templates", list_templates, methods=["GET"]),
    Route("/api/v1/history", history, methods=["GET"]),
    Route("/api/v1/history/summary", history_summary, methods=["GET"]),
    Route("/api/v1/history/metrics", history_metrics, methods=["GET"]),
    Route("/api/v1/templates", save_template, methods=["POST"]),
    Route("/api/v1/templates/{template_id}", delete_template, methods=["DELETE"]),
]
