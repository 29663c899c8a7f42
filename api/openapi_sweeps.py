"""The sweeps' part of the OpenAPI document (api/openapi.py): /api/v1/sweeps and the Sweep and Trial schemas, the
spec's own from the pydantic model that validates it."""

from __future__ import annotations

from typing import Any

from services.sweep_spec import SweepSpec

NULLABLE_NUM = {"type": ["number", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_STR = {"type": ["string", "null"]}
SWEEP_ID = {"name": "sweep_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
ESTIMATE = {"type": "object", "required": ["trials", "gpu_hours", "cost"], "properties": {
    "trials": {"type": "integer"}, "gpu_hours": {"type": "number", "description": "If every trial ran to its max "
                                                                              "runtime (retries come on top)."},
    "cost": {"type": "number"}}}
TRIAL = {"type": "object", "required": ["number", "params", "state"], "properties": {
    "number": {"type": "integer"}, "params": {"type": "object"},
    "state": {"type": "string", "enum": ["waiting", "running", "complete", "pruned", "failed", "stopped"]},
    "value": {**NULLABLE_NUM, "description": "The objective (final or best, as the sweep says)."},
    "job_id": {**NULLABLE_INT, "description": "The trial's latest job (a retry is a second job of the same trial)."},
    "job_ids": {"type": "array", "items": {"type": "integer"}}, "job_status": NULLABLE_STR,
    "reason": {**NULLABLE_STR, "description": "Why it was pruned, failed or stopped."}, "url": NULLABLE_STR}}
PROGRESS = {"type": "object", "properties": {k: {"type": "integer"} for k in ("done", "running", "pruned", "failed",
                                                                               "stopped", "left")}}


def sweep_schemas() -> dict[str, Any]:
    spec = SweepSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = spec.pop("$defs", {})
    sweep = {"type": "object", "required": ["id", "name", "owner", "state", "finished", "spec", "progress"],
             "properties": {
                 "id": {"type": "integer"}, "name": {"type": "string"}, "owner": {"type": "string"},
                 "state": {"type": "string", "enum": ["running", "stopping", "done", "stopped", "failed"]},
                 "finished": {"type": "boolean"},
                 "stop_reason": {**NULLABLE_STR, "description": "Why it ended (or is ending), in a sentence; a "
                                 "sweep whose stored settings no longer validate is failed, saying what is wrong."},
                 "created_at": {"type": "string"}, "ended_at": NULLABLE_STR,
                 "spec": {"$ref": "#/components/schemas/SweepSpec"}, "progress": PROGRESS,
                 "best": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Trial"}]},
                 "estimate": ESTIMATE}}
    return {"SweepSpec": spec, "Sweep": sweep, "Trial": TRIAL, **defs}


def sweep_paths(op: Any, q: Any) -> dict[str, Any]:
    """`op` and `q` are api/openapi.py's operation and query-parameter builders."""
    sweep = {"$ref": "#/components/schemas/Sweep"}
    spec = {"$ref": "#/components/schemas/SweepSpec"}
    trials = {"type": "object", "required": ["trials"], "properties": {
        "trials": {"type": "array", "items": {"$ref": "#/components/schemas/Trial"}}}}
    listing = {"type": "object", "required": ["sweeps"], "properties": {"sweeps": {"type": "array", "items": sweep}}}
    more = {"type": "object", "required": ["trials"], "properties": {
        "trials": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "Trials to add to the budget."}}}
    base = "/api/v1/sweeps/{sweep_id}"
    return {
        "/api/v1/sweeps": {
            "post": op("Start a sweep: trials are jobs named <sweep>-t<n>, asked of Optuna up to `parallel` at once "
                       "and never more than `budget`", (201, sweep), 400, 403, 404, 413, 415, 422, tag="sweeps",
                       body=spec),
            "get": op("Your sweeps (scope=all: every sweep you may see), newest first", (200, listing), 400,
                      tag="sweeps", params=[q("scope", {"type": "string", "enum": ["mine", "all"]})])},
        "/api/v1/sweeps/estimate": {"post": op(
            "What a sweep would cost at most, before it starts", (200, ESTIMATE), 400, 403, 413, 415, 422, tag="sweeps",
            body=spec)},
        base: {"get": op("A sweep: its state, progress and best trial so far", (200, sweep), 404, tag="sweeps",
                         params=[SWEEP_ID])},
        f"{base}/trials": {"get": op("The sweep's trials in order, with their parameters, state and objective",
                                     (200, trials), 404, tag="sweeps", params=[SWEEP_ID])},
        f"{base}/best": {"get": op(
            "The best trial's job values: POST them to /api/v1/jobs to run it as a single job",
            (200, {"type": "object", "required": ["values"], "properties": {"values": {"type": "object"}}}), 404, 409,
            tag="sweeps", params=[SWEEP_ID])},
        f"{base}/importances": {"get": op(
            "How much each varied parameter mattered to the objective (Optuna's PED-ANOVA over the finished trials; "
            "they add up to 1, largest first; {} until four trials have a value and two parameters vary)",
            (200, {"type": "object", "required": ["importances"], "properties": {"importances": {
                "type": "object", "additionalProperties": {"type": "number"}}}}), 404, tag="sweeps",
            params=[SWEEP_ID])},
        f"{base}/stop": {"post": op("Stop a sweep: no new trials, its running trials are stopped", (202, sweep), 400,
                                    403, 404, 409, 413, 415, tag="sweeps", params=[SWEEP_ID],
                                    body={"type": "object"})},
        f"{base}/extend": {"post": op("Add trials to a sweep's budget (a finished one runs again)", (200, sweep), 400,
                                      403, 404, 409, 413, 415, 422, tag="sweeps", params=[SWEEP_ID], body=more)},
    }
