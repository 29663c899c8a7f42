"""/api/v1/usage (GPU-hours and cost by user, team, month and GPU type; `format=csv` for a file), /api/v1/prices
(admins set them) and /api/v1/budgets (admins, and leads for their team). The use cases are services/usage.py's."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.common import ApiError, endpoint, jobs
from services.models import User
from services.usage import UsageService, parse_query


def service() -> UsageService:
    return UsageService.of(jobs())


@endpoint()
def usage(request: Request, user: User) -> Any:
    """GET /api/v1/usage?from=2026-01&to=2026-12&by=team,month[&format=csv]."""
    qp = request.query_params
    fmt = qp.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, "'format' is 'json' or 'csv'.")
    q = parse_query(qp.get("from"), qp.get("to"), qp.get("by"))
    if fmt == "csv":
        name = f"usage-{q.start}-{q.end}-by-{'-'.join(q.by)}.csv"
        return Response(service().csv(user, q), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    rows = service().rows(user, q)
    total = {"jobs": sum(r["jobs"] for r in rows), "gpu_hours": round(sum(r["gpu_hours"] for r in rows), 4),
             "cost": round(sum(r["cost"] for r in rows), 4)}
    return {"from": q.start, "to": q.end, "by": list(q.by), "rows": rows, "total": total}


@endpoint()
def list_prices(request: Request, user: User) -> dict[str, Any]:
    return {"prices": service().prices()}


@endpoint(mutation=True)
def set_price(request: Request, user: User, data: dict[str, Any]) -> Any:
    return JSONResponse(service().set_price(user, data), status_code=201)


@endpoint()
def list_budgets(request: Request, user: User) -> dict[str, Any]:
    return {"budgets": service().budgets(user)}


@endpoint(mutation=True)
def set_budget(request: Request, user: User, data: dict[str, Any]) -> dict[str, Any]:
    return service().set_budget(user, data)


ROUTES = [
    Route("/api/v1/usage", usage, methods=["GET"]),
    Route("/api/v1/prices", list_prices, methods=["GET"]),
    Route("/api/v1/prices", set_price, methods=["POST"]),
    Route("/api/v1/budgets", list_budgets, methods=["GET"]),
    Route("/api/v1/budgets", set_budget, methods=["PUT"]),
]
