"""Jobs queued through Kueue (https://kueue.sigs.k8s.io), when the cluster has it and a queue is configured.

A queued Job is created suspended with Kueue's queue and priority labels; Kueue unsuspends it when it admits its
Workload. While it waits, the Workload's conditions say why (quota, an inactive queue, a preemption) and Kueue's
visibility API says where it stands in its LocalQueue. Both are read by the sync loop (throttled, never per page
view) and kept here for the pages, in the backend-neutral terms of services/queue_model.py."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from services.backends.base import BackendError, Observation
from services.backends.k8s_kueue_hold import held_by_budget
from services.backends.k8s_priorities import GROUP, VERSION, ClassList, PriorityClasses
from services.config import Settings
from services.models import JobStatus
from services.queue_model import DEFAULT_PRIORITY, PRIORITIES, QueueStatus, QueueSummary

log = logging.getLogger(__name__)
VISIBILITY = "/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/{namespace}/localqueues/{name}/pendingworkloads"
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_PRIORITY = "kueue.x-k8s.io/priority-class"
GPU = "nvidia.com/gpu"
PREEMPTED = "Preempted by a higher-priority job; it will restart when GPUs are free"
READ_EVERY_SECONDS = 2.0  # Workloads and positions change at admission speed; the pages read what is kept here
INSTALLED_TTL_SECONDS = 60.0
QUEUES_EVERY_SECONDS = 30.0

_UNUSED = re.compile(r"insufficient unused quota for (\S+) in flavor (\S+), (\S+) more needed")
_OVER_MAX = re.compile(r"insufficient quota for (\S+) in flavor (\S+),.*> maximum capacity \((\S+)\)")


@dataclass
class KueueView:
    """What the last read found, by Job name."""

    workloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # the visibility API's entries
    local_queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    cluster_queues: dict[str, dict[str, Any]] = field(default_factory=dict)


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _get_json(api: client.ApiClient, path: str, params: dict[str, str], timeout: float) -> dict[str, Any]:
    """A GET of a path the typed client has no method for (discovery, the visibility API's subresource)."""
    method, url, headers, body, post = api.param_serialize(method="GET", resource_path=path, path_params=params,
                                                           header_params={"Accept": "application/json"},
                                                           auth_settings=["BearerToken"])
    resp = api.call_api(method, url, header_params=headers, body=body, post_params=post, _request_timeout=timeout)
    resp.read()
    if resp.status >= 400:
        raise ApiException(http_resp=resp)
    return json.loads(resp.data)


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def _true(conds: dict[str, dict[str, Any]], kind: str) -> bool:
    return (conds.get(kind) or {}).get("status") == "True"


def _owner_job(workload: dict[str, Any]) -> str | None:
    for ref in workload["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "Job":
            return ref.get("name")
    return None


def gpu_quota(cluster_queue: dict[str, Any] | None) -> int | None:
    """The ClusterQueue's nominal GPU quota over all its flavors; None when it sets none."""
    if not cluster_queue:
        return None
    total, found = 0, False
    for group in (cluster_queue.get("spec") or {}).get("resourceGroups") or []:
        for flavor in group.get("flavors") or []:
            for res in flavor.get("resources") or []:
                if res.get("name") == GPU:
                    total += _quantity(res.get("nominalQuota", 0))
                    found = True
    return total if found else None


def gpus_reserved(workload: dict[str, Any]) -> int:
    """The GPUs Kueue reserved for an admitted workload (its admission's resource usage)."""
    admission = (workload.get("status") or {}).get("admission") or {}
    assignments = admission.get("podSetAssignments") or []
    return sum(_quantity((ps.get("resourceUsage") or {}).get(GPU, 0)) for ps in assignments)


def blocker(workload: dict[str, Any], team: str, quota: int | None) -> str:
    """Why Kueue has not admitted the workload, as a person would say it."""
    conds = _conditions(workload)
    if _true(conds, "Preempted") or ((conds.get("Evicted") or {}).get("reason") == "Preempted"
                                     and _true(conds, "Evicted")):
        return PREEMPTED
    message = (conds.get("QuotaReserved") or {}).get("message") or ""
    m = _UNUSED.search(message)
    if m:
        resource, _, needed = m.groups()
        if resource == GPU:
            if quota is not None:
                return f"{team}'s quota of {quota} GPUs is in use; {needed} more needed"
            return f"{team}'s GPU quota is in use; {needed} more needed"
        return f"{team}'s {resource} quota is in use; {needed} more needed"
    m = _OVER_MAX.search(message)
    if m:
        resource, _, maximum = m.groups()
        what = "GPUs" if resource == GPU else resource
        return f"It asks for more {what} than {team}'s whole quota ({maximum}): it cannot start in this queue"
    if "doesn't exist" in message or "is inactive" in message or "is not active" in message:
        return f"The queue {team} is not active; ask your admin"
    if message:
        return f"Waiting in {team}'s queue: {message[:160]}"
    return f"Waiting for its turn in {team}'s queue"


class Kueue:
    """The Kueue side of the Kubernetes backend: labels at submit, and reads of where queued jobs stand."""

    def __init__(self, api: client.ApiClient, namespace: str, settings: Settings, counter: Callable[[], None]):
        self.api = api
        self.namespace = namespace
        self.settings = settings
        self.custom = client.CustomObjectsApi(api)
        self._count = counter
        self.classes = PriorityClasses(self.custom, settings, counter)
        self._installed: tuple[float, bool] | None = None
        self._read_at = 0.0
        self._queues_read_at = -QUEUES_EVERY_SECONDS
        self._last_read_queued = False
        self._visibility: client.ApiClient | None = None
        self._lock = threading.Lock()
        self.view = KueueView()
        self._job_name = re.compile(rf"^{re.escape(settings.job_name_prefix)}-(\d+)$")

    # Submit -------------------------------------------------------------------------------------
    def installed(self) -> bool:
        """Kueue's API group answers (discovery needs no permission); remembered for a minute."""
        now = time.monotonic()
        if self._installed and now - self._installed[0] < INSTALLED_TTL_SECONDS:
            return self._installed[1]
        self._count()
        try:
            _get_json(self.api, f"/apis/{GROUP}/{VERSION}", {}, self.settings.kube_request_timeout_seconds)
            found = True
        except ApiException as exc:
            if exc.status != 404:
                raise
            found = False
        self._installed = (now, found)
        return found

    def queue_for(self, groups: tuple[str, ...]) -> str:
        """The LocalQueue a person's jobs go to: their first group the settings map, else the default."""
        for group, queue in self.settings.kueue_group_queues.items():
            if group in groups:
                return queue
        return self.settings.kueue_default_queue

    def prepare(self, manifest: dict[str, Any], groups: tuple[str, ...], priority: str,
                team_queue: str = "") -> str | None:
        """Make the Job one Kueue queues (suspended, labelled), after checking its queue and priority class
        exist. Returns the queue, or None when jobs are not queued through Kueue here (today's behaviour).
        `team_queue`: the job's team's own queue (set on the Teams page), which wins over the settings'."""
        queue = team_queue or self.queue_for(groups)
        if not queue or not self.installed():
            return None
        self._count()
        try:
            self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "localqueues", queue,
                                                     _request_timeout=self.settings.kube_request_timeout_seconds)
        except ApiException as exc:
            if exc.status == 404:
                raise BackendError(f"The queue '{queue}' does not exist in namespace {self.namespace}, so the job "
                                   "cannot wait for GPUs there; ask your admin to create it (a Kueue "
                                   "LocalQueue) or to change the portal's queue settings.") from exc
            raise
        labels = manifest["metadata"].setdefault("labels", {})
        labels[LABEL_QUEUE] = queue
        classes = self.classes.read() if priority else {}
        if classes and priority not in classes:
            raise BackendError(f"The cluster has no priority '{priority}' (a Kueue WorkloadPriorityClass); "
                               "ask your admin to create it, or submit with another priority.")
        if priority and classes != {}:  # a cluster with no classes has one priority for all: nothing to send
            labels[LABEL_PRIORITY] = priority
        # Without Kueue's webhooks nothing suspends the Job for us, and an unsuspended Job starts a pod at once.
        manifest["spec"]["suspend"] = True
        return queue

    def _queued_here(self) -> bool:
        return bool(self.settings.kueue_default_queue or self.settings.kueue_group_queues)

    def _class_list(self, fresh: bool = False) -> ClassList | None:
        """The cluster's classes when jobs are queued through Kueue here; None: the portal's own priorities."""
        if not self._queued_here():
            return None
        try:
            if not self.installed():
                return None
        except Exception as exc:  # cannot be reached: the form draws with the portal's own list
            log.info("could not ask whether Kueue is installed: %s", exc)
            return None
        return self.classes.offered(fresh)

    def priorities(self, fresh: bool = False) -> list[tuple[str, str]]:
        """What the submit form offers: the admin's WorkloadPriorityClasses, else low / normal / urgent."""
        listed = self._class_list(fresh)
        return listed.options if listed else list(PRIORITIES.items())

    def default_priority(self) -> str:
        listed = self._class_list()
        return listed.default if listed else DEFAULT_PRIORITY

    # Read (sync loop) ---------------------------------------------------------------------------
    def refresh(self, queued: bool) -> None:
        """Read the namespace's Workloads, its LocalQueues and their pending lists, at most every
        READ_EVERY_SECONDS and only while a portal job waits or runs in a queue."""
        now = time.monotonic()
        if not (queued or self._last_read_queued) or now - self._read_at < READ_EVERY_SECONDS:
            return
        self._read_at = now
        self._last_read_queued = queued  # one more read after the last queued job leaves: the Queues page empties
        timeout = self.settings.kube_request_timeout_seconds
        view = KueueView()
        self._count()
        body = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "workloads",
                                                         _request_timeout=timeout)
        for wl in body.get("items") or []:
            owner = _owner_job(wl)
            if owner:
                view.workloads[owner] = wl
        # Queues and quotas are the admin's and change rarely: read again only every QUEUES_EVERY_SECONDS.
        view.local_queues, view.cluster_queues = self.view.local_queues, self.view.cluster_queues
        if now - self._queues_read_at >= QUEUES_EVERY_SECONDS:
            self._queues_read_at = now
            self._count()
            body = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "localqueues",
                                                             _request_timeout=timeout)
            view.local_queues = {lq["metadata"]["name"]: lq for lq in body.get("items") or []}
            try:
                self._count()
                body = self.custom.list_cluster_custom_object(GROUP, VERSION, "clusterqueues",
                                                              _request_timeout=timeout)
                view.cluster_queues = {cq["metadata"]["name"]: cq for cq in body.get("items") or []}
            except ApiException as exc:  # quotas are a nicety: without this read the sentence leaves them out
                log.info("could not read Kueue's ClusterQueues: %s", exc.status)
        waiting = {(wl.get("spec") or {}).get("queueName") for wl in view.workloads.values()
                   if not _true(_conditions(wl), "QuotaReserved")}
        for queue in sorted(q for q in waiting if q):
            for item in self._pending(queue):
                owner = next((r.get("name") for r in item["metadata"].get("ownerReferences") or []
                              if r.get("kind") == "Job"), None)
                if owner:
                    view.pending[owner] = item
        with self._lock:
            self.view = view

    def _pending(self, queue: str) -> list[dict[str, Any]]:
        """Kueue's visibility API: the LocalQueue's pending workloads, next to be admitted first."""
        api = self._visibility_api()
        self._count()
        try:
            body = _get_json(api, VISIBILITY, {"namespace": self.namespace, "name": queue},
                             self.settings.kube_request_timeout_seconds)
        except ApiException as exc:
            log.info("Kueue's visibility API did not answer for %s: %s", queue, exc.status)
            return []
        return body.get("items") or []

    def _visibility_api(self) -> client.ApiClient:
        """Through the apiserver (Kueue's APIService), or straight at Kueue where the settings say so."""
        url = self.settings.kueue_visibility_url
        if not url:
            return self.api
        if self._visibility is None:  # one connection pool, kept: it is read every few seconds
            cfg = client.Configuration()
            for key, value in vars(self.api.configuration).items():
                setattr(cfg, key, value)
            cfg.host = url.rstrip("/")
            self._visibility = client.ApiClient(cfg)
        return self._visibility

    # What the pages see -------------------------------------------------------------------------
    def job_id(self, name: str) -> int | None:
        m = self._job_name.match(name)
        return int(m.group(1)) if m else None

    def _team(self, queue: str, view: KueueView) -> tuple[str, int | None]:
        cq_name = ((view.local_queues.get(queue) or {}).get("spec") or {}).get("clusterQueue") or queue
        return cq_name, gpu_quota(view.cluster_queues.get(cq_name))

    def observation(self, name: str, kjob: dict[str, Any]) -> Observation | None:
        """Queued with the Workload's blocker while Kueue holds the Job suspended; None when Kueue has nothing
        to add (admitted and running, or no Workload yet)."""
        if not (kjob.get("spec") or {}).get("suspend"):
            return None
        view = self.view
        wl = view.workloads.get(name)
        if wl is None:
            return Observation(JobStatus.QUEUED, "Waiting for Kueue to queue it")
        queue = (wl.get("spec") or {}).get("queueName") or ""
        team, quota = self._team(queue, view)
        return Observation(JobStatus.QUEUED, held_by_budget(view.cluster_queues.get(team)) or blocker(wl, team, quota))

    def statuses(self, names: dict[int, str]) -> dict[int, QueueStatus]:
        """Where each waiting job (id -> Job name) stands, from the last read."""
        view = self.view
        out: dict[int, QueueStatus] = {}
        by_queue: dict[str, list[tuple[int, int]]] = {}
        for name, item in view.pending.items():
            jid = self.job_id(name)
            if jid is not None:
                by_queue.setdefault(item.get("localQueueName", ""), []).append(
                    (int(item.get("positionInLocalQueue", 0)), jid))
        for queue_jobs in by_queue.values():
            queue_jobs.sort()
        for jid, name in names.items():
            wl = view.workloads.get(name)
            if wl is None or _true(_conditions(wl), "QuotaReserved"):
                continue
            queue = (wl.get("spec") or {}).get("queueName") or ""
            team, quota = self._team(queue, view)
            item = view.pending.get(name)
            position = int(item.get("positionInLocalQueue", 0)) + 1 if item else 0
            ahead = [other for pos, other in by_queue.get(queue, []) if pos < position - 1]
            priority = ((wl.get("spec") or {}).get("priorityClassRef") or {}).get("name") \
                or (wl.get("spec") or {}).get("priorityClassName") or ""
            why = held_by_budget(view.cluster_queues.get(team)) or blocker(wl, team, quota)
            out[jid] = QueueStatus(queue=queue, position=position, ahead=ahead, blocker=why,
                                   estimate=None, priority=priority or "normal",
                                   holders=self._admitted_in(queue, view))
        return out

    def _admitted_in(self, queue: str, view: KueueView) -> list[int]:
        out = []
        for name, wl in view.workloads.items():
            jid = self.job_id(name)
            if jid is not None and (wl.get("spec") or {}).get("queueName") == queue \
                    and _true(_conditions(wl), "QuotaReserved"):
                out.append(jid)
        return sorted(out)

    def summaries(self) -> list[QueueSummary]:
        view = self.view
        out = []
        for queue in sorted(view.local_queues):
            team, quota = self._team(queue, view)
            waiting = sorted((int(item.get("positionInLocalQueue", 0)), jid) for name, item in view.pending.items()
                             if item.get("localQueueName") == queue and (jid := self.job_id(name)) is not None)
            used = sum(gpus_reserved(wl) for wl in view.workloads.values()
                       if (wl.get("spec") or {}).get("queueName") == queue and _true(_conditions(wl), "QuotaReserved"))
            out.append(QueueSummary(name=queue, quota_gpus=quota, used_gpus=used,
                                    waiting=[jid for _, jid in waiting], running=self._admitted_in(queue, view),
                                    description=f"Kueue queue of {team}"))
        return out
