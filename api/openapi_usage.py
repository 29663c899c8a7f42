"""The usage, prices and budgets part of the OpenAPI document (api/openapi.py; the routes are api/usage.py's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NULLABLE_STR = {"type": ["string", "null"]}
MONTH = {"type": "string", "pattern": r"^\d{4}-(0[1-9]|1[0-2])(-\d{2})?$"}
ROW = {"type": "object", "required": ["jobs", "gpu_hours", "cost"], "properties": {
    "user": {"type": "string"}, "team": {"type": "string", "description": "'' for jobs of no team"},
    "month": {"type": "string"}, "gpu_type": {"type": "string"}, "jobs": {"type": "integer"},
    "gpu_hours": {"type": "number"}, "cost": {"type": "number"}}}
USAGE = {"type": "object", "required": ["from", "to", "by", "rows", "total"], "properties": {
    "from": {"type": "string"}, "to": {"type": "string"}, "by": {"type": "array", "items": {"type": "string"}},
    "rows": {"type": "array", "items": ROW}, "total": ROW}}
PRICE = {"type": "object", "required": ["id", "gpu_hour", "node_hour", "effective_from"], "properties": {
    "id": {"type": "integer"}, "gpu_type": NULLABLE_STR, "node": NULLABLE_STR, "gpu_hour": {"type": "number"},
    "node_hour": {"type": "number"}, "effective_from": {"type": "string"}, "set_by": {"type": "string"}}}
PRICE_IN = {"type": "object", "properties": {
    "gpu_type": {"type": "string", "description": "A node label's or Kueue flavor's GPU type ('local' here)"},
    "node": {"type": "string", "description": "One node's own price, over its GPU type's"},
    "gpu_hour": {"type": "number", "minimum": 0}, "node_hour": {"type": "number", "minimum": 0},
    "effective_from": {"type": "string", "description": "ISO date or time; default now"}}}
BUDGET = {"type": "object", "required": ["scope", "name", "unit", "monthly_limit", "used", "left"], "properties": {
    "scope": {"enum": ["team", "user"]}, "name": {"type": "string"}, "unit": {"enum": ["money", "gpu_hours"]},
    "monthly_limit": {"type": "number"}, "used": {"type": "number", "description": "This month so far"},
    "left": {"type": "number"}, "overdraft": {"type": "boolean"}, "at_limit": {"enum": ["refuse", "wait"]}}}
BUDGET_IN = {"type": "object", "required": ["name", "monthly_limit"], "properties": {
    "scope": {"enum": ["team", "user"]}, "name": {"type": "string"}, "unit": {"enum": ["money", "gpu_hours"]},
    "monthly_limit": {"type": "number", "minimum": 0}, "overdraft": {"type": "boolean"},
    "at_limit": {"enum": ["refuse", "wait"]}}}


def usage_paths(base: Callable[..., dict[str, Any]], q: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    def op(*args: Any, **kw: Any) -> dict[str, Any]:
        return base(*args, tag="usage", **kw)

    params = [q("from", MONTH, "First month (default: January of this year)"),
              q("to", MONTH, "Last month, included (default: this one)"),
              q("by", {"type": "string"}, "Comma-separated: user, team, month, gpu_type (default month)"),
              q("format", {"enum": ["json", "csv"]}, "csv: the same rows as a file")]
    return {
        "/api/v1/usage": {"get": op("GPU-hours and cost by user, team, month and GPU type (your own and your "
                                    "teams'; everything for viewers and admins)", (200, USAGE), 400, 422,
                                    params=params)},
        "/api/v1/prices": {
            "get": op("Prices per GPU type and node with the date each takes effect", (200, {
                "type": "object", "required": ["prices"], "properties": {
                    "prices": {"type": "array", "items": PRICE}}})),
            "post": op("Set a price from a date on (admins); finished jobs keep their cost", (201, PRICE), 400,
                       403, 413, 415, 422, body=PRICE_IN)},
        "/api/v1/budgets": {
            "get": op("This month's budgets you may see, with what is used and left", (200, {
                "type": "object", "required": ["budgets"], "properties": {
                    "budgets": {"type": "array", "items": BUDGET}}})),
            "put": op("Set a monthly budget of a team (admins, its leads) or a user (admins)", (200, BUDGET), 400,
                      403, 413, 415, 422, body=BUDGET_IN)},
    }
