"""Pod logs of Kubernetes jobs, archived on the portal's disk: each pull appends what every pod printed since the
last one to its rank's file (cursors kept in the job folder), so pages read files, never the cluster.
A mixin of `KubernetesBackend`."""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from services import safe_files
from services.backends.base import ActiveJob
from services.backends.k8s_manifests import INDEX_ANNOTATION, job_name
from services.backends.k8s_status import parse_time
from services.config import Settings

_TS_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z) ?(.*)$")


class PodLogArchive:
    """Reading pod logs into the job's log archive (one file per rank)."""

    # Provided by KubernetesBackend.
    settings: Settings
    core: client.CoreV1Api
    namespace: str
    _cursors: dict[str, dict[str, Any]]
    _last_pull: dict[int, float]
    _pull_lock: threading.Lock
    _finishing: set[int]
    _inc: Callable[[], None]
    _timeout: Callable[[], float]
    job_dir: Callable[[int], Path]
    log_path: Callable[..., Path]
    pods_of: Callable[[str], list[dict[str, Any]]]

    def _cursor_file(self, job_id: int) -> Path:
        return self.job_dir(job_id) / "log-cursors.json"

    def pull_logs(self, job: ActiveJob, force: bool = False) -> None:
        """Append what each pod printed since the last pull to the job's archive (one file per rank)."""
        with self._pull_lock:
            self._pull_logs(job, force)

    def _pull_logs(self, job: ActiveJob, force: bool) -> None:
        name = job.ref.get("job_name") or job_name(self.settings, job.id)
        pods = self.pods_of(name)
        # The Job has finished, so its containers have: read to the end now, even where the pods' own state
        # has not reached the cache yet (this is the job's last pull).
        finishing = job.id in self._finishing
        self._finishing.discard(job.id)
        force = force or finishing
        if not pods:
            return
        # Running pods are read every few seconds (the log pane's pace), finished ones once more at once.
        now = time.monotonic()
        all_running = all((p.get("status") or {}).get("phase") == "Running" for p in pods)
        if not force and all_running and now - self._last_pull.get(job.id, 0.0) < self.settings.log_poll_seconds:
            return
        key = str(job.id)
        if key not in self._cursors:
            try:
                self._cursors[key] = json.loads(safe_files.read_bytes(*safe_files.split(self._cursor_file(job.id), 2)))
            except (FileNotFoundError, ValueError):
                self._cursors[key] = {}
        cursors = self._cursors[key]
        changed = False
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            pod_name = pod["metadata"]["name"]
            cur = cursors.get(pod_name) or {}
            if phase not in ("Running", "Succeeded", "Failed") or cur.get("done"):
                continue
            rank = int((pod["metadata"].get("annotations") or {}).get(INDEX_ANNOTATION, 0))
            self._last_pull[job.id] = now  # only a read of a started pod counts toward the pace
            if self._pull_pod(job.id, pod_name, rank, cur, final=finishing or phase != "Running"):
                changed = True
            cursors[pod_name] = cur
        if changed:
            # The pod can write in its job directory: a rename replaces whatever link it put there.
            safe_files.write_replace(*safe_files.split(self._cursor_file(job.id), 2), json.dumps(cursors).encode())

    def _pull_pod(self, job_id: int, pod_name: str, rank: int, cur: dict[str, Any], final: bool) -> bool:
        kwargs: dict[str, Any] = {"timestamps": True, "_request_timeout": self._timeout()}
        last = cur.get("ts")
        if last:
            ago = (datetime.now(UTC) - parse_time(last)).total_seconds()
            kwargs["since_seconds"] = max(1, math.ceil(ago) + 1)
        self._inc()
        try:
            text = self.core.read_namespaced_pod_log(pod_name, self.namespace, container="main", **kwargs)
        except ApiException as exc:
            if exc.status in (400, 404):  # container not started yet, or the pod is gone
                return False
            raise
        lines: list[str] = []
        seen_at_last = int(cur.get("n", 0))
        same = 0
        for raw in (text or "").splitlines():
            m = _TS_LINE.match(raw)
            ts, body = (m.group(1), m.group(2)) if m else (last or "", raw)
            if last and ts < last:
                continue
            if last and ts == last:
                same += 1
                if same <= seen_at_last:
                    continue  # already archived: since_seconds overlaps on purpose
            if ts != last:
                last, same, seen_at_last = ts, 1, 0
            lines.append(body)
        cur["ts"], cur["n"] = last, max(same, seen_at_last)
        if final:
            cur["done"] = True
        if lines:
            # Never through a link the pod put in the log's place (it would append to any file the portal can write).
            fd = safe_files.open_append(*safe_files.split(self.log_path(job_id, rank), 2))
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
        return bool(lines) or final

    def log_ranks(self, job_id: int) -> list[int]:
        ranks = [0]
        for p in self.job_dir(job_id).glob("job.rank-*.log"):
            number = p.stem.rsplit("-", 1)[1]  # the pod can make any name here
            if number.isascii() and number.isdecimal() and 0 < int(number) <= 4096:
                ranks.append(int(number))
        return sorted(ranks)
