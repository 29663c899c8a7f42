"""The portal's one view of the cluster per kind: a LIST+WATCH loop (with relist on 410 Gone and backoff on
errors) keeping the namespace's labelled Jobs or Pods as plain dicts, read by the Kubernetes backend.

`synced` means *current*: set by a LIST, cleared whenever the WATCH breaks (an error, a 410) until the next LIST
has replaced the view, so nothing is concluded from a view that may have missed events."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from services.backends.k8s_manifests import selector

log = logging.getLogger(__name__)
WATCH_SECONDS = 240


class WatchCache:
    """One LIST+WATCH loop for a kind of object in the namespace, keeping the objects as plain dicts."""

    def __init__(self, api: client.ApiClient, list_fn: Callable[..., Any], namespace: str, kind: str,
                 on_error: Callable[[Exception | None], None], counter: Callable[[], None]):
        self.api = api
        self.list_fn = list_fn
        self.namespace = namespace
        self.kind = kind
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._resp: Any = None
        self._thread: threading.Thread | None = None
        self._on_error = on_error
        self._count = counter
        self.relists = 0
        self.breaks = 0  # watches that ended in an error (apiserver gone, 410 Gone, timeouts)
        self.gone = 0  # 410 Gone answers: the version watched from was compacted away
        self._resume_from: str | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"k8s-watch-{self.kind}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(5)

    def _interrupt(self) -> None:
        """Cut the open WATCH connection so the loop notices a stop or a resume at once."""
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown() if hasattr(resp, "shutdown") else resp.close()

    def rewatch(self, resource_version: str) -> None:
        """End the current watch and resume from the given version (an old one tests the 410 path)."""
        self._resume_from = resource_version
        self._interrupt()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self.objects)

    def relist(self) -> str:
        """Paginated LIST by label; replaces the view. Returns the resourceVersion to watch from."""
        items: dict[str, dict[str, Any]] = {}
        cont: str | None = None
        while True:
            self._count()
            resp = self.list_fn(self.namespace, label_selector=selector(), limit=500, _continue=cont,
                                _preload_content=False, _request_timeout=30)
            body = json.loads(resp.data)
            for obj in body.get("items") or []:
                items[obj["metadata"]["name"]] = obj
            cont = (body.get("metadata") or {}).get("continue")
            if not cont:
                break
        with self._lock:
            self.objects = items
        self.relists += 1
        if self.relists > 1:
            log.info("listed %s again (%d lists, %d watch breaks): %d objects", self.kind, self.relists, self.breaks,
                     len(items))
        self.synced.set()
        return body["metadata"]["resourceVersion"]

    def _run(self) -> None:
        backoff = 1.0
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if self._resume_from is not None:
                    rv, self._resume_from = self._resume_from, None
                if rv is None:
                    rv = self.relist()
                    self._on_error(None)
                self._count()
                for event in self.stream_events(rv):
                    obj = event["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if event["type"] == "BOOKMARK":
                        continue
                    with self._lock:
                        if event["type"] == "DELETED":
                            self.objects.pop(obj["metadata"]["name"], None)
                        else:
                            self.objects[obj["metadata"]["name"]] = obj
                    if self._stop.is_set() or self._resume_from is not None:
                        break
                backoff = 1.0
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: start over from a fresh LIST
                    self.synced.clear()
                    self.gone += 1
                    log.info("watch of %s: 410 Gone (%d so far), listing again", self.kind, self.gone)
                    rv = None
                    continue
                self._failed(exc, backoff)
                backoff = min(backoff * 2, 30.0)
                rv = None
            except Exception as exc:  # connection refused, timeouts, TLS: wait and relist
                self._failed(exc, backoff)
                backoff = min(backoff * 2, 30.0)
                rv = None

    def stream_events(self, rv: str, seconds: int = WATCH_SECONDS) -> Iterator[dict[str, Any]]:
        """One WATCH request as raw JSON events; an ERROR event becomes an ApiException (410 Gone included)."""
        resp = self.list_fn(self.namespace, label_selector=selector(), resource_version=rv, watch=True,
                            allow_watch_bookmarks=True, timeout_seconds=seconds,
                            _preload_content=False, _request_timeout=seconds + 30)
        self._resp = resp
        try:
            for line in iter_resp_lines(resp):
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiException(status=status.get("code", 500), reason=status.get("message", "watch error"))
                yield event
        finally:
            self._resp = None
            resp.close()
            resp.release_conn()

    def _failed(self, exc: Exception, backoff: float) -> None:
        # Events may be missed from here until the next LIST: the view no longer counts as current.
        self.synced.clear()
        if self._stop.is_set():
            return
        self.breaks += 1
        log.info("watch of %s broke (%d so far, %d lists): %s", self.kind, self.breaks, self.relists, exc)
        self._on_error(exc)
        self._stop.wait(backoff * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
