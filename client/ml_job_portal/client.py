"""Client for the ML Job Portal REST API (``{cluster_url}/api/v1``).

One :class:`JobClient` holds one ``httpx.Client`` (connection reuse, one place for the token);
:class:`Job` objects keep a reference to it so that ``job.wait()`` or ``job.stream_logs()`` need no
extra arguments.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

__all__ = [
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
    "ValidationError",
]

API_PREFIX = "/api/v1"
USER_AGENT = "ml-job-portal-client/0.1.0"
FINISHED_STATUSES = frozenset({"Succeeded", "Failed", "Stopped", "Submit failed"})
LIST_PAGE_SIZE = 50  # the server's documented default page; never more than it is sure to accept
STREAM_MAX_FAILURES = 5  # consecutive reconnects that got nothing back before giving up
STREAM_RETRY_SECONDS = 1.0  # until the server says otherwise with an SSE `retry:` field
STREAM_READ_TIMEOUT = 60.0  # a quiet job sends nothing for a while; keep-alives arrive well within this
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# Errors ----------------------------------------------------------------------------------------
class PortalError(Exception):
    """Any error the portal answered with (``status_code``) or that stopped a call from reaching it."""

    def __init__(self, message: str, status_code: int | None = None, problems: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.problems: dict[str, str] = dict(problems or {})

    def __str__(self) -> str:
        return self.message


class AuthenticationError(PortalError):
    """401: no token, or the token is unknown, expired or revoked."""


class PermissionDenied(PortalError):
    """403: the portal refused the request (for example a cross-origin mutation)."""


class NotFoundError(PortalError):
    """404: no such job or file, or one you may not see."""


class ConflictError(PortalError):
    """409: the action does not fit the job's state (stopping a finished job, ...)."""


class ValidationError(PortalError):
    """422: some submitted values are not valid; ``problems`` maps each field to a sentence."""

    def __str__(self) -> str:
        # Name the fields too, unless the server's sentence already does.
        if not self.problems or all(text in self.message for text in self.problems.values()):
            return self.message
        details = "; ".join(f"{field}: {text}" if field else text for field, text in self.problems.items())
        return f"{self.message} ({details})"


class ServerError(PortalError):
    """5xx: the portal failed; retrying later may help."""


class PortalConnectionError(PortalError):
    """The portal could not be reached (DNS, refused connection, timeout, dropped stream)."""


class JobFailed(PortalError):
    """``Job.wait(raise_on_failure=True)`` found the job ended other than Succeeded."""

    def __init__(self, message: str, job: Job | None = None):
        super().__init__(message)
        self.job = job


_ERROR_CLASSES: dict[int, type[PortalError]] = {
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))  # Python 3.10 does not read "Z"
    except ValueError:
        return None


def _history_params(view: Mapping[str, Any]) -> dict[str, Any]:
    """Query parameters of a history view: lists comma-joined, dates as ISO, booleans as true/false."""
    out: dict[str, Any] = {}
    for key, value in view.items():
        if isinstance(value, list | tuple | set):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out[key] = value
    return out


def _drop_none(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if params is None else {k: v for k, v in params.items() if v is not None}


# Server-sent events ----------------------------------------------------------------------------
_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


def _sse_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Split an event stream into lines at CRLF, LF or CR only.

    Not ``str.splitlines``/``iter_lines``: those also split at form feeds and U+2028, which a log line
    may contain. A line left without its end when the stream stops is incomplete and dropped.
    """
    buf = b""
    first = True
    for chunk in chunks:
        if not chunk:
            continue
        buf += chunk
        if first:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                continue
            buf = buf.removeprefix(_BOM)
            first = False
        start = 0
        for match in _EOL.finditer(buf):
            if match.group() == b"\r" and match.end() == len(buf):
                break  # perhaps the first half of a CRLF split across chunks: wait for the next one
            yield buf[start : match.start()].decode("utf-8", "replace")
            start = match.end()
        buf = buf[start:]
    if buf.endswith(b"\r"):
        yield buf[:-1].decode("utf-8", "replace")


class _SSEEvent:
    __slots__ = ("data", "id", "type")

    def __init__(self, type_: str, data: str, id_: str | None):
        self.type = type_
        self.data = data
        self.id = id_


class _SSEParser:
    """The event-stream interpretation rules of the HTML standard, one line at a time."""

    def __init__(self, last_id: str | None = None):
        self.last_id = last_id  # persists across events (and reconnects), as in a browser
        self.retry_seconds: float | None = None
        self._data: list[str] = []
        self._type = ""

    def feed(self, line: str) -> _SSEEvent | None:
        if not line:  # a blank line dispatches the event
            data, type_ = self._data, self._type
            self._data, self._type = [], ""
            if not data:
                return None
            return _SSEEvent(type_ or "message", "\n".join(data), self.last_id)
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\x00" not in value:
                self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_seconds = int(value) / 1000
        return None


def _seen(event_id: str | None, last_id: str | None) -> bool:
    """Whether a replayed line was yielded already (ids are line numbers, so they compare)."""
    if event_id is None or last_id is None:
        return False
    try:
        return int(event_id) <= int(last_id)
    except ValueError:
        return False


# The client --------------------------------------------------------------------------------------
class JobClient:
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

    def upload_script(self, path: str | os.PathLike[str]) -> str:
        """Upload a ``.py`` file to your workspace; returns the ``script`` value to submit with."""
        source = Path(path)
        with source.open("rb") as fh:
            body = self._json("POST", "files", files={"file": (source.name, fh, "text/x-python")})
        return body["script"]

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

    # Jobs ------------------------------------------------------------------------------------------
    def submit_job(self, name: str, script: str, **values: Any) -> Job:
        """Submit a job. ``values`` are the submit form's fields (``epochs=3``, ``gpus=1``, ``template=...``)."""
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

    # History ---------------------------------------------------------------------------------------
    def history(self, *, page: int = 1, page_size: int = 50, **view: Any) -> list[Job]:
        """One page of the experiment history: every job you may see, as on the History page.

        ``view``: ``search`` (every word must match; ``"lr=0.001 lora"``), ``status`` (``"Completed"`` or a
        list of them), ``owner``, ``tag``, ``template``, ``date_from`` / ``date_to`` (dates), ``gpus_min``,
        ``gpus_max``, ``sort`` (``"final_loss"``, ``"cost"``, ``"learning_rate"``, ... or ``"final_metric"``
        with ``metric="accuracy"``) and ``descending``."""
        data = self._json("GET", "history", params={**_history_params(view), "page": page, "page_size": page_size})
        return [Job(self, item) for item in data["jobs"]]

    def iter_history(self, page_size: int = 200, **view: Any) -> Iterator[Job]:
        """Every job of a history view, in its order, fetched a page at a time. For tens of thousands of jobs,
        ``export_history`` is the faster way: one streamed file instead of ever deeper pages."""
        page = 1
        while True:
            data = self._json("GET", "history", params={**_history_params(view), "page": page,
                                                         "page_size": page_size})
            yield from (Job(self, item) for item in data["jobs"])
            if not data.get("has_more") or not data["jobs"]:
                return
            page += 1

    def history_summary(self, **view: Any) -> dict[str, Any]:
        """Jobs, successes, success rate, GPU-hours and cost of a whole history view (same filters)."""
        return self._json("GET", "history/summary", params=_history_params(view))

    def final_metric_names(self) -> list[str]:
        """The final metrics your visible jobs reported: what ``sort="final_metric", metric=...`` can take."""
        return list(self._json("GET", "history/metrics")["metrics"])

    def export_history(self, dest: str | os.PathLike[str] = ".", format: str = "parquet", **view: Any) -> Path:
        """Download every page of a history view as one Parquet (``pandas.read_parquet``) or CSV file, with
        every parameter and final metric as a column. ``dest``: a file name or a folder."""
        if format not in ("csv", "parquet"):
            raise ValueError("format is 'csv' or 'parquet'")
        return self._download("history/export", f"history.{format}", dest,
                              params={**_history_params(view), "format": format})

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


class Job:
    """A job as the portal last described it; ``refresh()`` fetches it again."""

    id: int
    name: str
    owner: str
    status: str
    group: str | None
    finished: bool
    reason: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    epoch: int | None
    total_epochs: int | None
    progress: float | None
    eta_seconds: float | None
    latest_metrics: dict[str, float]
    final_metrics: dict[str, float]
    gpus: int
    nodes: int
    cost_per_hour: float
    exit_code: int | None
    request: dict[str, Any]
    url: str
    data: dict[str, Any]

    def __init__(self, client: JobClient, data: Mapping[str, Any]):
        self._client = client
        self._update(data)

    def _update(self, data: Mapping[str, Any]) -> None:
        self.data = {**getattr(self, "data", {}), **data}
        d = self.data
        self.id = int(d["id"])
        self.name = d.get("name", "")
        self.owner = d.get("owner", "")
        self.status = d.get("status", "")
        self.group = d.get("group")
        self.finished = bool(d.get("finished", self.status in FINISHED_STATUSES))
        self.reason = d.get("reason")
        self.created_at = _parse_time(d.get("created_at"))
        self.started_at = _parse_time(d.get("started_at"))
        self.finished_at = _parse_time(d.get("finished_at"))
        self.epoch = d.get("epoch")
        self.total_epochs = d.get("total_epochs")
        self.progress = d.get("progress")
        self.eta_seconds = d.get("eta_seconds")
        self.latest_metrics = dict(d.get("latest_metrics") or {})
        self.final_metrics = dict(d.get("final_metrics") or {})
        self.gpus = d.get("gpus", 0)
        self.nodes = d.get("nodes", 1)
        self.cost_per_hour = d.get("cost_per_hour", 0.0)
        self.exit_code = d.get("exit_code")
        self.request = dict(d.get("request") or {})
        # The job's page in the portal, as an address to open in a browser.
        self.url = self._client.cluster_url + (d.get("url") or f"/job?id={self.id}")

    def __repr__(self) -> str:
        return f"Job(id={self.id}, name={self.name!r}, status={self.status!r})"

    @property
    def _path(self) -> str:
        return f"jobs/{self.id}"

    def refresh(self) -> Job:
        """Fetch the whole job again; returns itself."""
        self._update(self._client._json("GET", self._path))
        return self

    def refresh_status(self) -> dict[str, Any]:
        """Fetch the light status view (status, finished, reason, epoch, progress, eta) and apply it."""
        body = self._client._json("GET", f"{self._path}/status")
        self._update(body)
        return body

    def wait(self, timeout: float | None = None, poll: float = 2.0, raise_on_failure: bool = False) -> Job:
        """Block until the job has finished; returns itself, refreshed.

        Raises ``TimeoutError`` after ``timeout`` seconds, and ``JobFailed`` if ``raise_on_failure`` and
        the job ended other than Succeeded.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.refresh_status().get("finished", False):
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"Job {self.id} ({self.name}) is still {self.status} after {timeout:g} s.")
                time.sleep(min(poll, left))
            else:
                time.sleep(poll)
        self.refresh()  # the light view has no final metrics
        if raise_on_failure and self.status != "Succeeded":
            why = f": {self.reason}" if self.reason else "."
            raise JobFailed(f"Job {self.id} ({self.name}) ended {self.status}{why}", self)
        return self

    def stream_logs(self, rank: int = 0, offset: int = 0) -> Iterator[str]:
        """Yield log lines as the job writes them; ends by itself once the job has finished."""
        end = yield from self._client._stream_log_lines(self.id, rank, offset)
        if isinstance(end, dict) and end.get("status"):
            self._update({"finished": True, **{k: end[k] for k in ("status", "reason") if k in end}})

    def logs(self, tail: int = 200, *, rank: int = 0, offset: int | None = None, limit: int | None = None) -> list[str]:
        """The last ``tail`` log lines, or with ``offset`` lines ``offset``.. (at most ``limit``)."""
        params: dict[str, Any] = {"rank": rank}
        if offset is None:
            params["tail"] = tail
        else:
            params.update(offset=offset, limit=limit)
        return self._client._json("GET", f"{self._path}/logs", params=params)["lines"]

    def stop(self) -> Job:
        """Ask the job to stop (it ends Stopped shortly after); returns itself, updated."""
        self._update(self._client._json("POST", f"{self._path}/stop"))
        return self

    def delete(self) -> None:
        """Delete the finished job and its files."""
        self._client._json("DELETE", self._path)

    def clone(self, **changes: Any) -> Job:
        """Submit a copy of this job with some values changed (``clone(epochs=5)``)."""
        return Job(self._client, self._client._json("POST", f"{self._path}/clone", json_body=changes))

    def retry(self) -> Job:
        """Submit this job again with the same values."""
        return Job(self._client, self._client._json("POST", f"{self._path}/retry"))

    def metrics(self, max_points: int = 2000) -> dict[str, Any]:
        """Metric series ``{"series": {name: {"x", "y", "axis"}}, "final": {...}, "latest": {...}}``."""
        return self._client._json("GET", f"{self._path}/metrics", params={"max_points": max_points})

    def files(self) -> list[dict[str, Any]]:
        """The files the job wrote: ``[{"path", "size", "modified"}]``."""
        return self._client._json("GET", f"{self._path}/files")["files"]

    def download(self, path: str, dest: str | os.PathLike[str] = ".") -> Path:
        """Download one of the job's files to ``dest`` (a file, or a folder to put it in)."""
        return self._client._download(f"{self._path}/files/{quote(path, safe='/')}", path, dest)

    def get_results(self) -> JobResults:
        """Final status, final metrics and file list (fetched now)."""
        self.refresh()
        return JobResults(self.id, self.status, self.final_metrics, [f["path"] for f in self.files()])


class JobResults:
    """What a job left: ``status``, ``final_metrics``, ``files``; ``results.final_loss`` reads a metric."""

    def __init__(self, job_id: int, status: str, final_metrics: Mapping[str, float], files: list[str]):
        self.job_id = job_id
        self.status = status
        self.final_metrics = dict(final_metrics)
        self.files = list(files)

    def __getattr__(self, name: str) -> float:
        # Only called for attributes that do not exist; read the dict through __dict__ so that a
        # half-built object (copy, pickle) cannot recurse.
        metrics = self.__dict__.get("final_metrics")
        if metrics is None or not name.startswith("final_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        metric = name.removeprefix("final_")
        if metric in metrics:
            return metrics[metric]
        if metrics:
            hint = "available: " + ", ".join(sorted(metrics))
        else:
            hint = f"the job is {self.__dict__.get('status')} and has no final metrics"
        raise AttributeError(f"Job {self.__dict__.get('job_id')} has no final metric {metric!r} ({hint}).")

    def __dir__(self) -> list[str]:
        # Tab completion in notebooks offers the metrics.
        return sorted({*super().__dir__(), *(f"final_{m}" for m in self.final_metrics)})

    def __repr__(self) -> str:
        return (f"JobResults(job_id={self.job_id}, status={self.status!r}, "
                f"final_metrics={self.final_metrics!r}, files={self.files!r})")
