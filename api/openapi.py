"""The OpenAPI 3.1 document of /api/v1, built from the same pydantic model that validates submissions."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from api.openapi_checkpoints import checkpoint_paths
from api.openapi_registry import registry_paths
from api.openapi_sweeps import sweep_paths, sweep_schemas
from api.openapi_teams import team_paths
from api.openapi_usage import usage_paths
from services.history import SORT_KEYS
from services.models import JobRequest, StatusGroup

ERROR = {"$ref": "#/components/schemas/Error"}
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad request", 401: "No or bad API token", 403: "Cross-site mutation", 404: "Not found",
            409: "Conflicts with the job's state", 413: "Too large", 415: "Not JSON", 422: "Invalid values",
            429: "Past the hourly limit (the Retry-After header says in how many seconds the next may go)",
            503: "The cluster refused or cannot be reached"}
    return {str(c): {"description": text[c], **_content(ERROR)} for c in codes}


def _op(summary: str, ok: tuple[int, dict[str, Any] | None], *errors: int, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, tag: str = "jobs") -> dict[str, Any]:
    code, schema = ok
    responses: dict[str, Any] = {str(code): {"description": "OK", **(_content(schema) if schema else {})}}
    responses |= _errors(401, *errors)
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, **_content(body)}
    return op


def _or_later(op: dict[str, Any]) -> dict[str, Any]:
    """A submit that may also be accepted for later: 202 while the cluster cannot be reached (status Submitting)."""
    op["responses"]["202"] = {"description": "Accepted, not yet in the cluster: Submitting while the cluster "
                                             "cannot be reached, or Queued and kept back while its budget is "
                                             "spent (its reason says so); submitted, once, when it can be",
                              **_content(_ref("Job"))}
    return op


def _q(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
FILE_PATH = {"name": "path", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
RANK = _q("rank", {"type": "integer", "minimum": 0, "maximum": 4096}, "Node of a multi-node job (0 = the first).")
NULLABLE_NUM = {"type": ["number", "null"]}
LOG_LINES = {"type": "object", "required": ["lines"], "properties": {
    "lines": {"type": "array", "items": {"type": "string"}}, "offset": {"type": "integer"},
    "next_offset": {"type": "integer"}, "total": {"type": "integer"}, "finished": {"type": "boolean"}}}
LOG_SEARCH = {"type": "object", "required": ["query", "hits", "total", "more"], "properties": {
    "query": {"type": "string"}, "total": {"type": "integer"}, "more": {"type": "integer"},
    "hits": {"type": "array", "items": {"type": "object", "properties": {
        "rank": {"type": "integer"}, "line": {"type": "integer"}, "text": {"type": "string"}}}},
    "per_rank": {"type": "object"}, "lines_searched": {"type": "integer"}, "complete": {"type": "boolean"}}}
NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_STR = {"type": ["string", "null"]}
METRICS = {"type": "object", "additionalProperties": {"type": ["number", "null"]}}


TOKEN = {"type": "object", "required": ["id", "owner", "name", "prefix", "created_at", "expires_at", "active"],
         "properties": {"id": {"type": "integer"}, "owner": {"type": "string"}, "name": {"type": "string"},
                        "prefix": {"type": "string", "description": "The token's first characters (the rest is "
                                                                   "never stored)."},
                        "created_at": {"type": "string"}, "last_used_at": NULLABLE_STR,
                        "expires_at": {"type": "string"}, "revoked_at": NULLABLE_STR,
                        "expired": {"type": "boolean"}, "active": {"type": "boolean",
                                                                    "description": "Neither revoked nor expired."}}}


ESTIMATE = {"type": ["object", "null"], "description": "When it should start (UTC), if nothing more urgent "
            "arrives; null: unknown (nothing gives a basis).", "properties": {
                "earliest": {"type": "string"}, "latest": {"type": "string"}}}
QUEUE_STATUS = {"type": "object", "required": ["queue", "position", "ahead", "blocker", "estimated_start", "priority"],
                "properties": {"queue": {"type": "string"}, "position": {"type": "integer", "description": "1: next"},
                               "ahead": {"type": "array", "items": {"type": "integer"},
                                         "description": "Ids of the jobs that start before it, in order."},
                               "blocker": {"type": "string", "description": "Why it waits, in a person's words."},
                               "estimated_start": ESTIMATE, "priority": {"type": "string"}}}
QUEUED_JOB = {"type": "object", "required": ["id", "gpus", "priority"], "properties": {
    "id": {"type": "integer"}, "name": {**NULLABLE_STR, "description": "null: another user's job you may not see"},
    "owner": NULLABLE_STR, "gpus": {"type": "integer"}, "priority": {"type": "string"},
    "position": {"type": "integer"}, "blocker": NULLABLE_STR, "estimated_start": ESTIMATE}}
QUEUES = {"type": "object", "required": ["queues"], "properties": {"queues": {"type": "array", "items": {
    "type": "object", "required": ["name", "quota_gpus", "used_gpus", "waiting", "running"], "properties": {
        "name": {"type": "string"}, "description": {"type": "string"}, "quota_gpus": NULLABLE_INT,
        "used_gpus": {"type": "integer"}, "waiting": {"type": "array", "items": QUEUED_JOB},
        "running": {"type": "array", "items": QUEUED_JOB}}}}}}


def _token_paths() -> dict[str, Any]:
    listing = _op("Your API tokens; every user's with scope=all (admins only)", (200, {
        "type": "object", "required": ["tokens", "max_days"], "properties": {
            "tokens": {"type": "array", "items": _ref("Token")},
            "max_days": {"type": "number", "description": "The longest lifetime a new token may have."}}}),
        400, 403, tag="account", params=[_q("scope", {"type": "string", "enum": ["mine", "all"]})])
    listing["responses"]["403"]["description"] = "scope=all by someone who is not an admin"
    token_id = {"name": "token_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    return {
        "/api/v1/tokens": {"get": listing},
        "/api/v1/tokens/{token_id}": {"delete": _op(
            "Revoke a token: your own, or anyone's for an admin (another's is not found)", (204, None), 400, 403,
            404, 413, 415, tag="account", params=[token_id], body={"type": "object"})},
    }


def _notification_paths() -> dict[str, Any]:
    events = {"type": "array", "items": {"type": "string", "enum": [
        "succeeded", "failed", "stopped", "max_runtime", "started", "log_match", "metric_threshold", "stuck",
        "gpu_idle"]}}
    alerts = {"log_pattern": {"type": "string", "description": "A regular expression; a job's first log line "
                              "matching it is said once (empty: off)."},
              "metric_rules": {"type": "string", "description": "e.g. 'loss > 10, loss is nan': a job's first "
                               "metric point crossing one is said once (empty: off)."},
              "stuck_minutes": {"type": "number", "minimum": 0, "maximum": 10080, "description": "A running job "
                                "without log output this long 'may be stuck', said once (0: off)."}}
    channel = {"type": "object", "required": ["id", "kind", "target", "events", "enabled", "has_secret"],
               "properties": {"id": {"type": "integer"}, "kind": {"type": "string"}, "target": {"type": "string"},
                              "events": events, "enabled": {"type": "boolean"}, "disabled_reason": NULLABLE_STR,
                              "last_result": NULLABLE_STR, "last_at": NULLABLE_STR, "has_secret": {"type": "boolean"},
                              "confirmed": {"type": "boolean", "description": "An e-mail address gets nothing but "
                                            "its confirmation until its code is confirmed (a webhook: true)."}}}
    choice = {"type": "string", "enum": ["end", "failure", "never"]}
    settings = {"type": "object", "required": ["default_notify", "channels"], "properties": {
        "default_notify": choice, "channels": {"type": "array", "items": channel}, **alerts,
        "new_secrets": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "Secrets the portal made for new webhooks, by channel id: shown this once."}}}
    change = {"type": "object", "properties": {**alerts, "default_notify": choice, "channels": {
        "type": "array", "items": {
        "type": "object", "properties": {
            "id": {"type": "integer", "description": "An existing channel (its events and enabled may change)."},
            "kind": {"type": "string", "enum": ["email", "slack", "teams", "mattermost", "generic"]},
            "target": {"type": "string", "description": "The e-mail address or the webhook's URL."},
            "events": events, "enabled": {"type": "boolean"},
            "secret": {"type": "string", "description": "The webhook's HMAC key; empty: the portal makes one."}}},
        "description": "The whole list: channels not in it are removed."}}}
    listing = {"type": "object", "required": ["unread", "notifications"], "properties": {
        "unread": {"type": "integer"}, "notifications": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "integer"}, "event": {"type": "string"}, "job_id": NULLABLE_INT,
            "sentence": {"type": "string"}, "url": {"type": "string"}, "created_at": {"type": "string"},
            "read": {"type": "boolean"}}}}}}
    channel_id = {"name": "channel_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    return {
        "/api/v1/notifications/settings": {
            "get": _op("Your notification settings: the default per-job choice and your channels", (200, settings),
                       tag="notifications"),
            "put": _op("Replace your notification settings (a webhook outside the portal's allow-list is refused)",
                       (200, settings), 400, 403, 413, 415, 422, tag="notifications", body=change)},
        "/api/v1/notifications": {"get": _op(
            "Your notifications, newest first, with the unread count", (200, listing), 400, tag="notifications",
            params=[_q("limit", {"type": "integer", "minimum": 1, "maximum": 500})])},
        "/api/v1/notifications/read": {"post": _op(
            "Mark all your notifications read", (200, {"type": "object"}), 400, 403, 413, 415, tag="notifications",
            body={"type": "object"})},
        "/api/v1/notifications/channels/{channel_id}/test": {"post": _op(
            "Send a test message to one of your channels (its result shows on the channel)", (202, {"type": "object"}),
            400, 403, 404, 413, 415, 429, tag="notifications", params=[channel_id], body={"type": "object"})},
        "/api/v1/notifications/confirm": {"post": _op(
            "Confirm one of your e-mail addresses with the code its confirmation mail carries (a wrong, expired or "
            "another user's code is a 422)", (200, channel), 400, 403, 413, 415, 422, tag="notifications",
            body={"type": "object", "required": ["code"], "properties": {"code": {
                "type": "string", "description": "The code in the confirmation mail (its link's confirm=...)."}}})},
        "/api/v1/notifications/channels/{channel_id}/confirmation": {"post": _op(
            "Send an unconfirmed e-mail address its confirmation again (within the hourly limit of test and "
            "confirmation messages)", (202, {"type": "object", "required": ["queued", "channel", "message"],
                                             "properties": {"queued": {"type": "boolean"}, "channel": channel,
                                                            "message": {"type": "string"}}}),
            400, 403, 404, 409, 413, 415, 429, tag="notifications", params=[channel_id], body={"type": "object"})},
    }


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    submit = JobRequest.model_json_schema()
    submit_props = dict(submit["properties"])
    submit_props["template"] = {"type": "string", "description": "Name of a template whose values are the base."}
    submit_schema = {"type": "object", "properties": submit_props, "required": submit.get("required", []),
                     "additionalProperties": False}
    changes = {"type": "object", "properties": submit_props, "additionalProperties": False}
    job = {"type": "object", "required": ["id", "name", "owner", "status", "finished"], "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "owner": {"type": "string"},
        "status": {"type": "string", "enum": ["Submitting", "Queued", "Running", "Succeeded", "Failed", "Stopped",
                                              "Submit failed"]},
        "group": {"type": "string", "enum": [g.value for g in StatusGroup]}, "finished": {"type": "boolean"},
        "reason": NULLABLE_STR, "created_at": {"type": "string"}, "started_at": NULLABLE_STR,
        "finished_at": NULLABLE_STR, "epoch": NULLABLE_INT, "total_epochs": NULLABLE_INT, "progress": NULLABLE_NUM,
        "eta_seconds": NULLABLE_NUM, "latest_metrics": METRICS, "final_metrics": METRICS, "gpus": {"type": "integer"},
        "nodes": {"type": "integer"}, "cost_per_hour": {"type": "number"}, "exit_code": NULLABLE_INT,
        "cost": {**NULLABLE_NUM, "description": "What it has cost: so far while it runs, final once it ended (null: "
                                                "it has not run)."},
        "gpu_hours": {**NULLABLE_NUM, "description": "Its GPU-hours on every node, as cost (null: it has not run)."},
        "request": {"type": "object"}, "url": {"type": "string"},
        "parent_id": {**NULLABLE_INT, "description": "The job this one was cloned from or is a retry of."},
        "parent_kind": {"type": ["string", "null"], "enum": ["clone", "retry", None],
                        "description": "How it came from parent_id (null: not recorded, or no parent)."},
        "sweep_id": {**NULLABLE_INT, "description": "The sweep this job is a trial of (null: a single job)."},
        "sweep_trial": {**NULLABLE_INT, "description": "Its trial number in that sweep."},
        "team": {**NULLABLE_STR, "description": "The submitter's team it belongs to (its members see it)."},
        "queue": {"oneOf": [{"type": "null"}, _ref("QueueStatus")],
                  "description": "A waiting job's place in its queue (null: not waiting, or not known)."}}}
    files = {"type": "object", "required": ["files"], "properties": {"files": {"type": "array", "items": {
        "type": "object", "required": ["path", "size"], "properties": {
            "path": {"type": "string"}, "size": {"type": "integer"}, "modified": {"type": "string"}}}}}}
    template = {"type": "object", "required": ["id", "name", "owner", "values"], "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "owner": {"type": "string"},
        "values": {"type": "object"}, "created_at": {"type": "string"}}}
    binary = {"type": "string", "format": "binary"}
    view = [_q("search", {"type": "string", "maxLength": 200}, "Every word must match (name, owner, parameters "
                                                               "as key=value, tags, note)."),
            _q("status", {"type": "string"}, "Comma-separated: " + ", ".join(g.value for g in StatusGroup)),
            _q("owner", {"type": "string", "maxLength": 255}), _q("tag", {"type": "string", "maxLength": 40}),
            _q("template", {"type": "string", "maxLength": 100}),
            _q("date_from", {"type": "string", "format": "date"}, "Created on or after this day (UTC)."),
            _q("date_to", {"type": "string", "format": "date"}, "Created on or before this day (UTC)."),
            _q("gpus_min", {"type": "integer", "minimum": 0, "maximum": 1024}),
            _q("gpus_max", {"type": "integer", "minimum": 0, "maximum": 1024}),
            _q("metric_filter", {"type": "string", "maxLength": 500}, "Conditions on final metric values, combined "
               "with 'and': `accuracy > 0.9 and eval_loss < 0.3` (operators > >= < <= = !=)."),
            _q("scope", {"type": "string", "enum": ["mine", "team", "all"]}, "Whose jobs: yours, your teams' or all "
               "you may see (the default)."),
            _q("sweep", {"type": "integer", "minimum": 1}, "Only the trials of this sweep (its id)."),
            _q("sort", {"type": "string", "enum": list(SORT_KEYS)}, "final_metric sorts by `metric`."),
            _q("metric", {"type": "string", "maxLength": 64}, "The final metric of sort=final_metric."),
            _q("descending", {"type": "boolean"})]
    paging = [_q("page", {"type": "integer", "minimum": 1, "maximum": 1_000_000}),
              _q("page_size", {"type": "integer", "minimum": 1, "maximum": 500})]
    summary = {"type": "object", "required": ["jobs", "succeeded", "gpu_hours", "cost"], "properties": {
        "jobs": {"type": "integer"}, "succeeded": {"type": "integer"}, "success_rate": NULLABLE_NUM,
        "gpu_hours": {"type": "number"}, "cost": {"type": "number"}}}
    jobs_path = "/api/v1/jobs/{job_id}"
    paths: dict[str, Any] = {
        "/api/v1/me": {"get": _op("Who the token belongs to", (200, {"type": "object", "required": ["name", "role"],
                                                                     "properties": {"name": {"type": "string"},
                                                                                    "email": {"type": "string"},
                                                                                    "role": {"type": "string"},
                                                                                    "groups": {"type": "array"}}}),
                                  tag="account")},
        "/api/v1/jobs": {
            "post": _or_later(_op("Submit a job", (201, _ref("Job")), 400, 403, 404, 413, 415, 422,
                                  body=submit_schema)),
            "get": _op("List jobs (newest first)", (200, {"type": "object", "required": ["jobs", "has_more"],
                                                          "properties": {"jobs": {"type": "array",
                                                                                  "items": _ref("Job")},
                                                                         "limit": {"type": "integer"},
                                                                         "offset": {"type": "integer"},
                                                                         "has_more": {"type": "boolean"}}}), 400,
                       params=[_q("scope", {"type": "string", "enum": ["mine", "team", "all"]},
                                       "mine (default), team (your teams' jobs) or all"),
                               _q("group", {"type": "string", "enum": [g.value for g in StatusGroup]}),
                               _q("search", {"type": "string", "maxLength": 200}),
                               _q("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                               _q("offset", {"type": "integer", "minimum": 0})]),
        },
        jobs_path: {
            "get": _op("Get a job", (200, _ref("Job")), 404, params=[JOB_ID]),
            "delete": _op("Delete a finished job with its logs, metrics and files", (204, None), 400, 403, 404, 409,
                          413, 415, 503, params=[JOB_ID]),
        },
        f"{jobs_path}/status": {"get": _op("A job's status and progress", (200, {"type": "object"}), 404,
                                           params=[JOB_ID])},
        f"{jobs_path}/stop": {"post": _op(
            "Stop a running job (its owner, an admin or a lead of its team; 403 for others who see it)",
            (202, _ref("Job")), 400, 403, 404, 409, 413, 415, 503, params=[JOB_ID], body={"type": "object"})},
        f"{jobs_path}/clone": {"post": _or_later(_op(
            "Submit a copy with some values changed", (201, _ref("Job")), 400, 403, 404, 413, 415, 422,
            params=[JOB_ID], body=changes))},
        f"{jobs_path}/retry": {"post": _or_later(_op(
            "Submit the same values again", (201, _ref("Job")), 400, 403, 404, 409, 413, 415, 422,
            params=[JOB_ID], body={"type": "object"}))},
        f"{jobs_path}/script": {"get": {
            "summary": "The script the job ran, as snapshotted when it was submitted", "tags": ["jobs"],
            "parameters": [JOB_ID], "responses": {"200": {"description": "The script", "content": {
                "text/plain": {"schema": {"type": "string"}}}}, **_errors(401, 404)}}},
        f"{jobs_path}/script/diff": {"get": _op(
            "Unified diff of the job's script against the workspace file of its name or another job's script",
            (200, {"type": "object", "required": ["identical", "diff"], "properties": {
                "job_id": {"type": "integer"}, "against": {"type": "string"}, "from": {"type": "string"},
                "to": {"type": "string"}, "identical": {"type": "boolean"}, "diff": {"type": "string"}}}),
            400, 404, 422, params=[JOB_ID, _q("against", {"type": "string", "maxLength": 20},
                                              "'workspace' (default) or another job's id.")])},
        f"{jobs_path}/logs": {"get": _op(
            "Log lines: the tail, a range from a line number, or the lines containing `search` in every rank's log",
            (200, {"anyOf": [LOG_LINES, LOG_SEARCH]}), 400, 404, tag="logs",
            params=[JOB_ID, RANK, _q("tail", {"type": "integer", "minimum": 1, "maximum": 10000}),
                    _q("offset", {"type": "integer", "minimum": 0}),
                    _q("limit", {"type": "integer", "minimum": 1, "maximum": 10000}),
                    _q("search", {"type": "string", "minLength": 1},
                       "Text to find (ASCII case ignored); hits with rank and line number.")])},
        f"{jobs_path}/logs/stream": {"get": {
            "summary": "Live log as server-sent events: `id` is the line number, `event: end` closes it",
            "tags": ["logs"], "parameters": [JOB_ID, RANK, _q("offset", {"type": "integer", "minimum": 0})],
            "responses": {"200": {"description": "text/event-stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 404)}}},
        f"{jobs_path}/metrics": {"get": _op(
            "Metric series (downsampled on the server) and final values", (200, {"type": "object",
                                                                               "required": ["series"]}),
            400, 404, tag="metrics", params=[JOB_ID, _q("max_points", {"type": "integer", "minimum": 10,
                                                                       "maximum": 20000})])},
        f"{jobs_path}/files": {"get": _op("Files the job wrote", (200, files), 404, tag="files", params=[JOB_ID])},
        f"{jobs_path}/files/{{path}}": {"get": {
            "summary": "Download one of the job's files", "tags": ["files"], "parameters": [JOB_ID, FILE_PATH],
            "responses": {"200": {"description": "The file", "content": {"application/octet-stream": {
                "schema": binary}}}, **_errors(401, 404)}}},
        f"{jobs_path}/results.zip": {"get": {
            "summary": "All of the job's files as one zip", "tags": ["files"], "parameters": [JOB_ID],
            "responses": {"200": {"description": "zip", "content": {"application/zip": {"schema": binary}}},
                          **_errors(401, 404)}}},
        "/api/v1/files": {
            "get": _op("Scripts and files in the workspace", (200, files), tag="files"),
            "post": {"summary": "Upload a training script (.py) into the workspace", "tags": ["files"],
                     "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                         "type": "object", "required": ["file"], "properties": {"file": binary}}}}},
                     "responses": {"201": {"description": "Stored", **_content({"type": "object", "required": [
                         "script"], "properties": {"script": {"type": "string"}}})},
                                   **_errors(400, 401, 403, 413, 415, 422)}},
        },
        "/api/v1/files/{path}": {"get": {
            "summary": "Download a workspace file", "tags": ["files"], "parameters": [FILE_PATH],
            "responses": {"200": {"description": "The file", "content": {"application/octet-stream": {
                "schema": binary}}}, **_errors(401, 404)}}},
        "/api/v1/templates": {
            "get": _op("Job templates", (200, {"type": "object", "required": ["templates"], "properties": {
                "templates": {"type": "array", "items": _ref("Template")}}}), tag="templates"),
            "post": _op("Save (or update your own) template", (201, _ref("Template")), 400, 403, 409, 413, 415, 422,
                        tag="templates", body={"type": "object", "required": ["name", "values"], "properties": {
                            "name": {"type": "string", "minLength": 1, "maxLength": 100},
                            "values": changes}}),
        },
        "/api/v1/history": {"get": _op(
            "Experiment history: every job you may see, filtered, sorted (also by any final metric) and paged",
            (200, {"type": "object", "required": ["jobs", "has_more"], "properties": {
                "jobs": {"type": "array", "items": _ref("Job")}, "page": {"type": "integer"},
                "page_size": {"type": "integer"}, "has_more": {"type": "boolean"}}}), 400, 422, tag="history",
            params=view + paging)},
        "/api/v1/history/summary": {"get": _op("Jobs, successes, GPU-hours and cost of a history view", (200, summary),
                                               400, 422, tag="history", params=view)},
        "/api/v1/history/metrics": {"get": _op("The final metrics reported by the jobs you may see (to sort by)", (
            200, {"type": "object", "required": ["metrics"], "properties": {"metrics": {"type": "array", "items": {
                "type": "string"}}}}), tag="history")},
        "/api/v1/history/export": {"get": {
            "summary": "Every page of a history view as CSV or Parquet, streamed", "tags": ["history"],
            "parameters": [*view, _q("format", {"type": "string", "enum": ["csv", "parquet"]})],
            "responses": {"200": {"description": "The rows", "content": {
                "text/csv": {"schema": {"type": "string"}}, "application/vnd.apache.parquet": {"schema": binary}}},
                **_errors(400, 401, 422)}}},
        "/api/v1/templates/{template_id}": {"delete": _op(
            "Delete one of your templates", (204, None), 400, 403, 404, 413, 415, tag="templates",
            params=[{"name": "template_id", "in": "path", "required": True,
                     "schema": {"type": "integer", "minimum": 1}}], body={"type": "object"})},
        **_token_paths(),
        **_notification_paths(),
        **sweep_paths(_op, _q),
        **checkpoint_paths(_op, _ref("Job")),
        **registry_paths(_op),
        **team_paths(_op),
        **usage_paths(_op, _q),
        "/api/v1/queues": {"get": _op("Each queue's GPUs, running jobs and waiting jobs in the order they start",
                                      (200, QUEUES), tag="queues")},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "ML Job Portal API", "version": "1",
                 "description": "Submit and follow training jobs. Authenticate with a personal API token from the "
                                "portal's 'API tokens' page. Mutations need Content-Type: application/json."},
        "paths": paths,
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Job": job, "Template": template, "Token": TOKEN, "QueueStatus": QUEUE_STATUS, "Error": {
                "type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "problems": {"type": "object",
                                                              "additionalProperties": {"type": "string"}}}},
                **{k: v for k, v in submit.get("$defs", {}).items()}, **sweep_schemas()},
        },
        "security": [{"token": []}],
    }
