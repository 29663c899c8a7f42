"""The checkpoints' part of the OpenAPI document (api/openapi.py): Save checkpoint, the job's checkpoints and
requests, and Retry from checkpoint (api/checkpoints.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NULLABLE_STR = {"type": ["string", "null"]}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
REQUEST = {"type": "object", "required": ["id", "requested_by", "requested_at"], "properties": {
    "id": {"type": "integer"}, "requested_by": {"type": "string"}, "requested_at": {"type": "string"},
    "delivered_at": {**NULLABLE_STR, "description": "When the signal was sent (locally) or the job's pods were "
                     "annotated (on a cluster: the script gets SIGUSR1 at the kubelet's next sync, about a minute)."},
    "written_at": {**NULLABLE_STR, "description": "When a checkpoint appeared in checkpoints/ after the request."},
    "checkpoint": {**NULLABLE_STR, "description": "Its name."},
    "error": {**NULLABLE_STR, "description": "Why it could not be delivered."}}}
CHECKPOINT = {"type": "object", "required": ["name", "size", "files", "modified"], "properties": {
    "name": {"type": "string"}, "size": {"type": "integer"}, "files": {"type": "integer"},
    "modified": {"type": "string"}}}


def checkpoint_paths(op: Callable[..., dict[str, Any]], job: dict[str, Any]) -> dict[str, Any]:
    return {
        "/api/v1/jobs/{job_id}/checkpoint": {"post": op(
            "Save a checkpoint now: SIGUSR1 to the running script (owner or admin)", (202, REQUEST), 403, 404, 409,
            503, params=[JOB_ID], body={"type": "object"})},
        "/api/v1/jobs/{job_id}/checkpoints": {"get": op(
            "The job's checkpoints (its checkpoints/ folder) and its checkpoint requests, newest first",
            (200, {"type": "object", "required": ["requests", "checkpoints"], "properties": {
                "requests": {"type": "array", "items": REQUEST},
                "checkpoints": {"type": "array", "items": CHECKPOINT}}}), 404, params=[JOB_ID])},
        "/api/v1/jobs/{job_id}/checkpoints/retry": {"post": op(
            "Retry a finished job from one of its checkpoints (--resume-from and PORTAL_RESUME_FROM)",
            (201, job), 403, 404, 409, 422, params=[JOB_ID], body={
                "type": "object", "required": ["checkpoint"], "properties": {"checkpoint": {"type": "string"}}})},
    }
