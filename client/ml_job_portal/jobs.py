"""A job as the portal describes it (:class:`Job`), with its actions, and its results (:class:`JobResults`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ml_job_portal.errors import JobFailed

if TYPE_CHECKING:
    from ml_job_portal.client import JobClient

FINISHED_STATUSES = frozenset({"Succeeded", "Failed", "Stopped", "Submit failed"})


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))  # Python 3.10 does not read "Z"
    except ValueError:
        return None


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
    cost: float | None
    gpu_hours: float | None
    exit_code: int | None
    request: dict[str, Any]
    parent_id: int | None
    parent_kind: str | None
    sweep_id: int | None
    sweep_trial: int | None
    queue: dict[str, Any] | None
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
        # What it has cost (the portal's currency) and its GPU-hours: so far while it runs, final once it ended.
        self.cost, self.gpu_hours = d.get("cost"), d.get("gpu_hours")
        self.exit_code = d.get("exit_code")
        self.request = dict(d.get("request") or {})
        # The job this one was cloned from ("clone") or is a retry of ("retry").
        self.parent_id = d.get("parent_id")
        self.parent_kind = d.get("parent_kind")
        self.sweep_id, self.sweep_trial = d.get("sweep_id"), d.get("sweep_trial")  # a sweep's trial; None otherwise
        # A waiting job's place: {"queue", "position", "ahead", "blocker", "estimated_start", "priority"}; else None.
        self.queue = d.get("queue")
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

    def save_checkpoint(self) -> dict[str, Any]:
        """Ask the running script to save a checkpoint now (SIGUSR1); the request, with when it was delivered."""
        return self._client._json("POST", f"{self._path}/checkpoint")

    def checkpoints(self) -> dict[str, Any]:
        """The job's checkpoints (its checkpoints/ folder) and its checkpoint requests, newest first."""
        return self._client._json("GET", f"{self._path}/checkpoints")

    def retry_from_checkpoint(self, checkpoint: str) -> Job:
        """A new job (a retry of this one) that gets the checkpoint as --resume-from and PORTAL_RESUME_FROM."""
        return Job(self._client, self._client._json("POST", f"{self._path}/checkpoints/retry",
                                                    json_body={"checkpoint": checkpoint}))

    def register_model(self, name: str, paths: list[str] | str, alias: str | None = None) -> dict[str, Any]:
        """Register files or folders of this finished job's output as a version of the MLflow model ``name`` (with
        ``alias`` set on it): uploaded in the background; the registration, ``status`` "pending" until "done"
        (``version``, ``model_url``) or "failed" (``error``). See ``models()``."""
        body = {"name": name, "paths": [paths] if isinstance(paths, str) else list(paths), "alias": alias}
        return self._client._json("POST", f"{self._path}/register-model", json_body=body)

    def models(self) -> list[dict[str, Any]]:
        """The job's model registrations, newest first: ``name``, ``version``, ``alias``, ``status``, ``model_url``."""
        return self._client._json("GET", f"{self._path}/models")["models"]

    def script(self) -> str:
        """The script this job ran, as it was when the job was submitted."""
        return self._client._request("GET", f"{self._path}/script").text

    def script_diff(self, against: str | int | Job = "workspace") -> str:
        """A unified diff of this job's script against your workspace file of its name (``"workspace"``) or another
        job's script (its id or the ``Job``); ``""`` when they are identical."""
        other = against.id if isinstance(against, Job) else against
        return self._client._json("GET", f"{self._path}/script/diff", params={"against": other})["diff"]

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
