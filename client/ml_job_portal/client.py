"""Client for the ML Job Portal REST API (``{cluster_url}/api/v1``): the connection, its errors, and the calls on
jobs, files, templates and tokens; the history's calls are in history.py, a job's in jobs.py, the errors in
errors.py. Every name is also importable from here, as before the split.

One :class:`JobClient` holds one ``httpx.Client`` (connection reuse, one place for the token);
:class:`Job` objects keep a reference to it so that ``job.wait()`` or ``job.stream_logs()`` need no
extra arguments.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from ml_job_portal._sse import _seen, _sse_lines, _SSEParser
from ml_job_portal.errors import (
    _ERROR_CLASSES,
    AuthenticationError,
    ConflictError,
    JobFailed,
    NotFoundError,
    PermissionDenied,
    PortalConnectionError,
    PortalError,
    ServerError,
    ValidationError,
)
from ml_job_portal.history import HistoryMixin
from ml_job_portal.jobs import FINISHED_STATUSES, Job, JobResults
from ml_job_portal.notifications import NotificationsMixin
from ml_job_portal.sweeps import Sweep, SweepsMixin, int_range, loguniform, uniform

# Everything this module exported before it was split, so that `from ml_job_portal.client import NotFoundError`
# in an old notebook keeps working.
__all__ = [
    "FINISHED_STATUSES",
    "AuthenticationError",
    "ConflictError",
    "Job",
    "JobClient",
    "JobFailed",
    "JobResults",
    "NotFoundError",
    "PermissionDenied",
    "PortalConnectionError",
    "PortalError",
    "ServerError",
    "Sweep",
    "ValidationError",
    "int_range",
    "loguniform",
    "uniform",
]

API_PREFIX = "/api/v1"
USER_AGENT = "ml-job-portal-client/0.1.0"
LIST_PAGE_SIZE = 50  # the server's documented default page; never more than it is sure to accept
STREAM_MAX_FAILURES = 5  # consecutive reconnects that got nothing back before giving up
STREAM_RETRY_SECONDS = 1.0  # until the server says otherwise with an SSE `retry:` field
STREAM_READ_TIMEOUT = 60.0  # a quiet job sends nothing for a while; keep-alives arrive well within this
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _drop_none(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if params is None else {k: v for k, v in params.items() if v is not None}


# The client --------------------------------------------------------------------------------------
class JobClient(HistoryMixin, NotificationsMixin, SweepsMixin):
    """A session with one portal. ``token`` defaults to the ``PORTAL_TOKEN`` environment variable."""

    def __init__(
        self,
        cluster_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        verify: ssl.SSLContext | str | bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = cluster_url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"cluster_url must start with http:// or https://, not {cluster_url!r}")
        url = url.removesuffix(API_PREFIX)  # the API's own address works as well as the portal's
        self.cluster_url = url
        self.api_url = url + API_PREFIX
        self.timeout = timeout
        token = token if token is not None else os.environ.get("PORTAL_TOKEN")
        self._has_token = bool(token and token.strip())
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token and token.strip():
            headers["Authorization"] = f"Bearer {token.strip()}"  # tokens pasted from a page bring newlines
        # The trailing slash makes httpx append relative paths ("jobs/3") to /api/v1/.
        self._http = httpx.Client(
            base_url=self.api_url + "/", headers=headers, timeout=timeout, verify=verify, transport=transport
        )

    # Plumbing ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> JobClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JobClient(cluster_url={self.cluster_url!r})"

    def _connection_error(self, exc: httpx.TransportError) -> PortalConnectionError:
        if isinstance(exc, httpx.TimeoutException):
            return PortalConnectionError(f"The portal at {self.cluster_url} did not answer in time ({exc}).")
        return PortalConnectionError(f"Could not reach the portal at {self.cluster_url}: {exc or type(exc).__name__}.")

    def _error(self, response: httpx.Response) -> PortalError:
        """The exception for an error response; its message is the server's own sentence."""
        message, problems = "", {}
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            message = str(body.get("error") or "")
            if isinstance(body.get("problems"), dict):
                problems = {str(k): str(v) for k, v in body["problems"].items()}
        if not message:
            request = response.request
            message = (f"The portal answered {response.status_code} {response.reason_phrase} "
                       f"to {request.method} {request.url}.")
        status = response.status_code
        if status == 401 and not self._has_token:
            message += (" No API token was given: pass token=... or set PORTAL_TOKEN "
                        "(create one on the portal's \"API tokens\" page).")
        cls = _ERROR_CLASSES.get(status, ServerError if status >= 500 else PortalError)
        if status == 400 and problems:  # a field the portal could not read (a history's metric_filter)
            cls = ValidationError
        return cls(message, status, problems)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        files: Any = None,
    ) -> httpx.Response:
        kwargs: dict[str, Any] = {}
        if files is not None:
            kwargs["files"] = files
        elif method in MUTATING:
            # The portal refuses mutations that are not JSON (its CSRF defence), so always send a body.
            kwargs["json"] = {} if json_body is None else json_body
        try:
            response = self._http.request(method, path, params=_drop_none(params), **kwargs)
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc
        if response.is_error:
            raise self._error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            # Typically a web page: the address is not the portal, or the portal has no API.
            raise PortalError(
                f"{self.cluster_url} answered {method} {API_PREFIX}/{path} with something that is not JSON; "
                "is that the portal's address?", response.status_code,
            ) from None

    def _download(self, path: str, remote_name: str, dest: str | os.PathLike[str],
                  params: Mapping[str, Any] | None = None) -> Path:
        target = Path(dest)
        if target.is_dir():
            target = target / PurePosixPath(remote_name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed at the end: a dropped download never looks complete.
        part = target.with_name(target.name + ".part")
        try:
            with self._http.stream("GET", path, params=_drop_none(params)) as response:
                if response.is_error:
                    response.read()
                    raise self._error(response)
                with part.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
            part.replace(target)
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc
        finally:
            part.unlink(missing_ok=True)
        return target

    # Account, files, templates -------------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        """Who the token belongs to: ``{"name", "email", "role", "groups"}``."""
        return self._json("GET", "me")

    def openapi(self) -> dict[str, Any]:
        """The API's OpenAPI document."""
        return self._json("GET", "openapi.json")

    def upload(self, path: str | os.PathLike[str]) -> str:
        """Upload a local ``.py`` file to your workspace, where ``submit_job(script="train.py")`` finds it by its
        name (the upload made last, if you upload it again after an edit). Returns its workspace path
        (``uploads/train.py``), which names exactly this upload. The portal checks it as the Submit page does:
        size, a ``.py`` name, valid Python."""
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"No file {str(source)!r} here to upload (looked in {Path.cwd()}).")
        with source.open("rb") as fh:
            body = self._json("POST", "files", files={"file": (source.name, fh, "text/x-python")})
        return body["script"]

    upload_script = upload  # its name before upload(); notebooks use both

    def workspace_files(self) -> list[dict[str, Any]]:
        """The files in your workspace: ``[{"path", "size", "modified"}]``."""
        return self._json("GET", "files")["files"]

    def download_workspace_file(self, path: str, dest: str | os.PathLike[str] = ".") -> Path:
        """Download a workspace file to ``dest`` (a file, or a folder to put it in)."""
        return self._download(f"files/{quote(path, safe='/')}", path, dest)

    def templates(self) -> list[dict[str, Any]]:
        """The saved submit templates: ``[{"id", "name", "owner", "values", "created_at"}]``."""
        return self._json("GET", "templates")["templates"]

    def save_template(self, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Save submit values under ``name``; use them with ``submit_job(..., template=name)``."""
        return self._json("POST", "templates", json_body={"name": name, "values": dict(values)})

    def delete_template(self, template_id: int) -> None:
        """Delete a saved template."""
        self._json("DELETE", f"templates/{int(template_id)}")

    def tokens(self, scope: str = "mine") -> list[dict[str, Any]]:
        """Your API tokens (``scope="all"``: every user's, for admins): ``[{"id", "owner", "name", "prefix",
        "created_at", "last_used_at", "expires_at", "revoked_at", "expired", "active"}]``."""
        return self._json("GET", "tokens", params={"scope": scope})["tokens"]

    def revoke_token(self, token_id: int) -> None:
        """Revoke one of your tokens (an admin: anyone's). Revoking the token this client uses ends its access."""
        self._json("DELETE", f"tokens/{int(token_id)}")

    def queues(self) -> list[dict[str, Any]]:
        """Each queue: ``{"name", "description", "quota_gpus", "used_gpus", "running", "waiting"}``, its waiting
        jobs in the order they start (``{"id", "name", "owner", "gpus", "priority", "position", "blocker",
        "estimated_start"}``; name, owner and blocker are null for others' jobs you may not see)."""
        return self._json("GET", "queues")["queues"]

    def usage(self, start: str | None = None, end: str | None = None, by: str | list[str] = "month"
              ) -> list[dict[str, Any]]:
        """GPU-hours and cost of your jobs and your teams' (an admin: everyone's) from month ``start`` to ``end``
        (``"2026-12"``; default this year), one row per ``by`` of user, team, month, gpu_type:
        ``{"month", ..., "jobs", "gpu_hours", "cost"}``."""
        params = {"by": by if isinstance(by, str) else ",".join(by)} | {
            k: v for k, v in (("from", start), ("to", end)) if v}
        return self._json("GET", "usage", params=params)["rows"]

    def teams(self) -> list[dict[str, Any]]:
        """Your teams (an admin: every team): ``{"name", "lead", "source", "everyone_visible", "default_queue",
        "notify_channel", "members", "leads"}``. ``submit_job(..., team=...)`` picks the job's team (default: your
        first); ``list_jobs(scope="team")`` lists your teams' jobs."""
        return self._json("GET", "teams")["teams"]

    # Jobs ------------------------------------------------------------------------------------------
    def submit_job(self, name: str, script: str, **values: Any) -> Job:
        """Submit a job. ``script`` is a workspace file: a name alone (``"train.py"``) is your newest upload of that
        name (``upload()``) or your workspace file of it; a path (``"uploads/train-2.py"``) that file exactly.
        ``values`` are the submit form's fields (``epochs=3``, ``gpus=1``, ``template=...``)."""
        return Job(self, self._json("POST", "jobs", json_body={"name": name, "script": script, **values}))

    def get_job(self, job_id: int) -> Job:
        """One job by its number."""
        return Job(self, self._json("GET", f"jobs/{int(job_id)}"))

    def list_jobs(
        self, scope: str = "mine", group: str | None = None, search: str = "", limit: int | None = 50
    ) -> list[Job]:
        """Jobs, newest first, up to ``limit`` (``None``: all), fetched page by page."""
        jobs: list[Job] = []
        while limit is None or len(jobs) < limit:
            page_size = LIST_PAGE_SIZE if limit is None else min(LIST_PAGE_SIZE, limit - len(jobs))
            params = {"scope": scope, "group": group, "search": search or None,
                      "limit": page_size, "offset": len(jobs)}
            page = self._json("GET", "jobs", params=params)
            jobs.extend(Job(self, data) for data in page["jobs"])
            if not page.get("has_more") or not page["jobs"]:  # an empty page ends it even if has_more says not
                break
        return jobs

    def _stream_log_lines(self, job_id: int, rank: int, offset: int) -> Iterator[str]:
        """Lines of the SSE log stream; returns the `end` event's data (``{"status": ...}``)."""
        path = f"jobs/{int(job_id)}/logs/stream"
        params = {"offset": offset, "rank": rank}
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_READ_TIMEOUT))
        last_id: str | None = None
        retry = STREAM_RETRY_SECONDS
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last_id is not None:
                # Resume after the last line we yielded; the offset stays as first asked and `_seen`
                # drops any replay, so this is right whichever of the two the server goes by.
                headers["Last-Event-ID"] = last_id
            received = False
            try:
                with self._http.stream("GET", path, params=params, headers=headers, timeout=timeout) as response:
                    if response.is_error:
                        response.read()
                        error = self._error(response)
                        if not isinstance(error, ServerError):
                            raise error
                        problem: str = str(error)  # a restarting portal answers 502/503: try again
                    elif not response.headers.get("content-type", "").startswith("text/event-stream"):
                        raise PortalError(
                            f"{self.cluster_url} did not answer the log stream of job {job_id} with an event "
                            "stream; is that the portal's address?", response.status_code,
                        )
                    else:
                        parser = _SSEParser(last_id)
                        for line in _sse_lines(response.iter_bytes()):
                            received = True
                            event = parser.feed(line)
                            if parser.retry_seconds is not None:
                                retry = parser.retry_seconds
                            if event is None:
                                continue
                            if event.type == "end":
                                try:
                                    return json.loads(event.data)
                                except ValueError:
                                    return {}
                            if event.type != "message" or _seen(event.id, last_id):
                                continue
                            last_id = event.id
                            yield event.data
                        problem = "the stream closed before its end event"  # a proxy's timeout, a restart
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
                if isinstance(exc, httpx.ReadTimeout) and not received and self._job_running(job_id):
                    received = True  # only quiet (a long epoch without keep-alives): not a failure
            failures = 0 if received else failures + 1
            if failures >= STREAM_MAX_FAILURES:
                raise PortalConnectionError(
                    f"The log stream of job {job_id} at {self.cluster_url} failed {failures} times in a row: {problem}."
                )
            time.sleep(retry * max(1, failures))

    def _job_running(self, job_id: int) -> bool:
        try:
            return not self._json("GET", f"jobs/{int(job_id)}/status").get("finished", False)
        except PortalError:
            return False
