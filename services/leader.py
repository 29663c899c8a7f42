"""Which portal replica runs the sync loop and its workers: leader election with a `coordination.k8s.io/v1` Lease.

Written with the official client's `CoordinationV1Api` (read, create, replace with the read resourceVersion, so two
replicas writing at once cannot both win) rather than the client's own `kubernetes.leaderelection` module: that one
blocks in `run()`, campaigns once (a replica that lost the lease never becomes a candidate again), compares wall
clocks, cannot say "am I leader right now" for a fence, and never releases the lease on shutdown.

The rules, as client-go's:
- a follower takes the lease only after it has seen it unchanged for a whole lease duration on its own monotonic
  clock (no clock skew between replicas matters), or at once when the holder released it;
- the leader renews every lease/3 seconds and counts itself leader only until 2/3 of a lease after the start of its
  last successful renewal: it stops applying at least a third of a lease before anyone else may start.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.rest import ApiException

from services.config import LOCAL_REPLICAS, Settings

log = logging.getLogger(__name__)


class Leadership(Protocol):
    """What the sync loop asks before it writes, and what /healthz reports."""

    enabled: bool
    identity: str
    error: str | None

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def held(self) -> bool: ...

    def holder(self) -> str | None: ...


def identity() -> str:
    """This process among the replicas: the pod's name (POD_NAME from the downward API), else host name and pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class SoleReplica:
    """No election: this process is the only portal on its store and always leads."""

    enabled = False
    error: str | None = None

    def __init__(self) -> None:
        self.identity = identity()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def held(self) -> bool:
        return True

    def holder(self) -> str | None:
        return self.identity


def _micro_time(at: datetime) -> str:
    # A Lease's times are MicroTime: RFC 3339 with exactly six fractional digits.
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """One candidate for the Lease `name` in `namespace`; `held()` is the fence checked before every write."""

    enabled = True

    def __init__(self, api: client.ApiClient, namespace: str, name: str, lease_seconds: float,
                 request_timeout: float, me: str | None = None):
        self.coordination = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = me or identity()
        self.lease_seconds = lease_seconds
        self.retry_seconds = lease_seconds / 3
        self.renew_deadline = lease_seconds * 2 / 3
        self.timeout = min(request_timeout, self.retry_seconds)
        self.error: str | None = None
        self.transitions = 0  # times this process became leader
        self._leading = False
        self._renewed_at = 0.0  # monotonic start of the last renewal that succeeded
        self._holder: str | None = None
        self._observed_version: str | None = None
        self._observed_at = 0.0  # monotonic time the lease was last seen to change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # What the sync loop and /healthz read --------------------------------------------------------
    def held(self) -> bool:
        return self._leading and time.monotonic() < self._renewed_at + self.renew_deadline

    def holder(self) -> str | None:
        return self.identity if self.held() else self._holder

    # The campaign ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="portal-leader", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop campaigning and hand the lease back, so that another replica takes over at once (a rolling update)
        rather than after a whole lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 1)
        if self._leading:
            self._leading = False  # nothing is applied from here on, whether the release lands or not
            try:
                self._release()
            except Exception as exc:
                log.info("could not hand the lease %s back (another replica takes it when it expires): %s",
                         self.name, exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.attempt()
            self._stop.wait(self.retry_seconds)

    def attempt(self) -> bool:
        """One try to take or renew the lease; whether this process leads now."""
        with self._lock:
            started = time.monotonic()
            try:
                won = self._try(started)
                self._said(None)
            except Exception as exc:  # the apiserver cannot be reached: leadership lapses at its deadline
                self._said(_sentence(exc))
                return self.held()
            was = self._leading
            if won:
                self._leading, self._renewed_at, self._holder = True, started, self.identity
                if not was:
                    self.transitions += 1
                    log.info("%s leads now (lease %s/%s): the sync loop runs here", self.identity, self.namespace,
                             self.name)
            elif was:
                self._leading = False
                log.warning("%s lost the lease %s to %s: the sync loop stops here", self.identity, self.name,
                            self._holder)
            return self.held()

    def _try(self, now: float) -> bool:
        lease = self._read()
        stamp = _micro_time(datetime.now(UTC))
        if lease is None:
            spec = {"holderIdentity": self.identity, "leaseDurationSeconds": round(self.lease_seconds),
                    "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}
            try:
                created = self.coordination.create_namespaced_lease(
                    self.namespace, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                     "metadata": {"name": self.name}, "spec": spec},
                    _preload_content=False, _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status == 409:  # another replica created it first
                    return False
                raise
            self._observe(json.loads(created.data), now)
            return True
        spec = lease.get("spec") or {}
        self._observe(lease, now)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        if holder and holder != self.identity and now < self._observed_at + duration:
            return False  # held, and renewed within a lease as far as this replica has seen
        ours = holder == self.identity
        new_spec = {"holderIdentity": self.identity, "leaseDurationSeconds": round(self.lease_seconds),
                    "renewTime": stamp, "acquireTime": spec.get("acquireTime") if ours else stamp,
                    "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)}
        if not ours:
            log.info("%s takes the lease %s over from %s", self.identity, self.name, holder or "nobody (released)")
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": new_spec}
        try:
            replaced = self.coordination.replace_namespaced_lease(self.name, self.namespace, body,
                                                                  _preload_content=False, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 409:  # someone wrote it since it was read: they hold it now
                return False
            raise
        self._observe(json.loads(replaced.data), now)
        return True

    def _observe(self, lease: dict[str, Any], now: float) -> None:
        version = lease["metadata"].get("resourceVersion")
        if version != self._observed_version:
            self._observed_version, self._observed_at = version, now
        self._holder = (lease.get("spec") or {}).get("holderIdentity") or None

    def _read(self) -> dict[str, Any] | None:
        try:
            resp = self.coordination.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                           _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def _release(self) -> None:
        lease = self._read()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        stamp = _micro_time(datetime.now(UTC))
        lease["spec"] |= {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": stamp}
        self.coordination.replace_namespaced_lease(self.name, self.namespace, lease, _preload_content=False,
                                                   _request_timeout=self.timeout)
        log.info("%s handed the lease %s back", self.identity, self.name)

    def _said(self, sentence: str | None) -> None:
        if sentence != self.error:
            if sentence:
                log.warning("leader election: %s", sentence)
            else:
                log.info("leader election: the lease %s can be read again", self.name)
        self.error = sentence


def _sentence(exc: Exception) -> str:
    if isinstance(exc, ApiException) and exc.status == 403:
        return ("the portal may not read or write Leases: its Role needs leases get, create and update "
                "(manifests/base/role.yaml)")
    if isinstance(exc, ApiException):
        return f"the cluster refused the lease ({exc.status} {exc.reason})"
    return f"the cluster cannot be reached ({type(exc).__name__})"


def election_wanted(settings: Settings) -> bool:
    if settings.leader_election != "auto":
        return settings.leader_election == "on"
    # Replicas share a store only through PostgreSQL, and a Lease needs the cluster.
    return settings.resolved_backend() == "kubernetes" and settings.sqlalchemy_url.startswith("postgresql")


def make_leadership(settings: Settings, backend: Any) -> Leadership:
    """SoleReplica unless an election is wanted; then a LeaseElector on the backend's own API client."""
    if not election_wanted(settings):
        return SoleReplica()
    api = getattr(backend, "api", None)
    if api is None:
        raise ValueError(LOCAL_REPLICAS)
    return LeaseElector(api, backend.namespace, settings.leader_lease_name, settings.leader_lease_seconds,
                        settings.kube_request_timeout_seconds)
