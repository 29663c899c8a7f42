"""The model registry's part of the OpenAPI document (api/openapi.py): register a finished job's files as an MLflow
model version, and list the job's registrations (api/registry.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NULLABLE_STR = {"type": ["string", "null"]}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
REGISTRATION = {"type": "object", "required": ["id", "name", "status", "paths"], "properties": {
    "id": {"type": "integer"}, "job_id": {"type": "integer"},
    "registration_id": {"type": "string", "description": "Tags the MLflow run and version (portal.registration)."},
    "name": {"type": "string"}, "alias": NULLABLE_STR, "paths": {"type": "array", "items": {"type": "string"}},
    "status": {"type": "string", "enum": ["pending", "done", "failed"]},
    "version": {**NULLABLE_STR, "description": "The MLflow model version, once done."},
    "run_id": NULLABLE_STR, "model_url": {**NULLABLE_STR, "description": "The version's page in MLflow."},
    "error": {**NULLABLE_STR, "description": "Why it failed (or why the last attempt did, while pending)."},
    "requested_by": {"type": "string"}, "requested_at": {"type": "string"}, "finished_at": NULLABLE_STR}}
BODY = {"type": "object", "required": ["paths", "name"], "properties": {
    "paths": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 100,
              "description": "Files or folders of the job's output (as GET /jobs/{id}/files lists them)."},
    "name": {"type": "string", "minLength": 1, "maxLength": 250, "description": "The MLflow registered model."},
    "alias": {**NULLABLE_STR, "maxLength": 255, "description": "Set on the new version (letters, digits, _ and -)."}}}


def registry_paths(op: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    register = op("Register files or folders of a finished job's output as an MLflow model version, in the "
                  "background (owner or admin)", (202, REGISTRATION), 400, 403, 404, 409, 413, 415, 422,
                  params=[JOB_ID], body=BODY)
    return {
        "/api/v1/jobs/{job_id}/register-model": {"post": register},
        "/api/v1/jobs/{job_id}/models": {
            "get": op("The job's model registrations, newest first", (200, {
                "type": "object", "required": ["models"], "properties": {
                    "models": {"type": "array", "items": REGISTRATION}}}), 404, params=[JOB_ID]),
            "post": register},
    }
