"""The GPU type each pod of a cluster job ran on, for its price (services/costs.py) and the Usage page's breakdown.

Where it comes from, first found wins: the label `gpu_type_node_label` of the pod's node (the hardware itself, e.g.
NVIDIA's GPU feature discovery's `nvidia.com/gpu.product`), then the Kueue ResourceFlavor its Workload was admitted
with for `nvidia.com/gpu`, then nothing (the job is priced as PORTAL_DEFAULT_GPU_TYPE). Reading a node is a
cluster-scoped `get` (manifests/components/node-gpu-types): without it, or during an outage, the flavor and the
default are used and the tick goes on; a pod whose type was known keeps it."""

from __future__ import annotations

import json
import logging
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from services.backends.base import Observation
from services.config import Settings

log = logging.getLogger(__name__)
GPU = "nvidia.com/gpu"
GPU_TYPE_LENGTH = 100  # job_usage.gpu_type, as costs.gpu_type_of caps it
NODE_TTL_SECONDS = 600.0  # node labels change when hardware does: read each node once per 10 minutes
RETRY_SECONDS = 60.0  # an outage or an odd answer: asked again a minute later, not on every tick
DENIED = (401, 403)  # no right to read nodes (the component is not applied): the same answer for every node
GONE = 404  # that node only (an autoscaler removed it); the others still answer
PODS_KEPT = 50_000  # pods whose type is remembered; the least recently seen are forgotten past it


def clean(value: Any) -> str | None:
    """A label or flavor as a GPU type: no control or format characters (a label is the node owner's text and
    ends up in CSVs and pages), at most GPU_TYPE_LENGTH characters; None when nothing is left."""
    if value is None:
        return None
    text = "".join(ch for ch in str(value) if not unicodedata.category(ch).startswith("C")).strip()
    return text[:GPU_TYPE_LENGTH].strip() or None


def gpu_flavor(workload: dict[str, Any] | None) -> str | None:
    """The ResourceFlavor Kueue assigned to the Workload's GPUs at admission (its first pod set that has one)."""
    admission = ((workload or {}).get("status") or {}).get("admission") or {}
    for ps in admission.get("podSetAssignments") or []:
        found = clean((ps.get("flavors") or {}).get(GPU))
        if found:
            return found
    return None


def pick(node_type: str | None, flavor: str | None) -> str | None:
    """The node's label says the hardware, so it wins over the flavor, which says what the quota was counted in."""
    return node_type or flavor


def pod_key(iv: dict[str, Any]) -> str | None:
    return iv.get("uid") or iv.get("pod")


class GpuTypes:
    """Node labels read once per node and kept NODE_TTL_SECONDS; used by the sync loop's observe only.

    A pod's type, once known, is kept for that pod: every tick relabels all of a job's pods and its accrual
    reprices them all, so a pod whose node has since gone (or does not answer) must not fall back to the default
    and change what its finished run cost."""

    def __init__(self, core: client.CoreV1Api, settings: Settings, counter: Callable[[], None]):
        self.core = core
        self.settings = settings
        self._count = counter
        self._nodes: dict[str, tuple[float, str | None]] = {}  # node -> (read again after, its type)
        self._denied_until = 0.0
        self._told: set[str] = set()
        # pod -> (its type, whether its node's label said it): a label found later still wins over a flavor
        self._pods: OrderedDict[str, tuple[str, bool]] = OrderedDict()

    def label(self, obs: Observation, workload: dict[str, Any] | None,
              remembered: dict[str, str] | None = None) -> None:
        """Each pod interval of the observation gets the GPU type it ran on, where one is known. `remembered`: the
        types the job's row keeps (services/costs.py), what an earlier process of the portal found."""
        intervals = obs.extra.get("pods") or []
        if not intervals:
            return
        flavor = gpu_flavor(workload)
        for key, kind in (remembered if isinstance(remembered, dict) else {}).items():
            if key not in self._pods and (kind := clean(kind)):
                self._pods[key] = (kind, True)
        for iv in intervals:
            kind = self._of_pod(iv, flavor)
            if kind:
                iv["gpu_type"] = kind

    def _of_pod(self, iv: dict[str, Any], flavor: str | None) -> str | None:
        key = pod_key(iv)
        known = self._pods.get(key) if key else None
        if known and known[1]:  # its node's label: the hardware it ran on, for good (no read needed)
            self._pods.move_to_end(key)  # type: ignore[arg-type]
            return known[0]
        node_type = self.of_node(iv.get("node"))
        # The flavor of an earlier admission is what the pod ran under; a re-admission's must not reprice it.
        kind = pick(node_type, known[0] if known else flavor)
        if key and kind:
            self._pods[key] = (kind, bool(node_type))
            self._pods.move_to_end(key)
            if len(self._pods) > PODS_KEPT:
                self._pods.popitem(last=False)
        return kind

    def of_node(self, node: str | None) -> str | None:
        key = self.settings.gpu_type_node_label
        if not key or not node:
            return None
        now = time.monotonic()
        cached = self._nodes.get(node)
        known = cached[1] if cached else None
        if (cached and now < cached[0]) or now < self._denied_until:
            return known
        ok, found, again = self._read(node, key, now)
        if not ok:
            found = known  # a failed read (or a node since removed) says nothing new about what it was
        if len(self._nodes) > 10_000:  # nodes come and go in an autoscaled cluster: forget the long unread
            self._nodes = {n: v for n, v in self._nodes.items() if v[0] > now}
        self._nodes[node] = (again, found)
        return found

    def _read(self, node: str, key: str, now: float) -> tuple[bool, str | None, float]:
        """(answered, its type, read again after). Any failure but a gone node stops all reads for a while: in an
        outage every node's read would wait out the request timeout, one after another, on each tick."""
        self._count()
        try:
            resp = self.core.read_node(node, _preload_content=False,
                                       _request_timeout=self.settings.kube_request_timeout_seconds)
            labels = (json.loads(resp.data).get("metadata") or {}).get("labels") or {}
            if not isinstance(labels, dict):
                raise ValueError(f"the node's labels are a {type(labels).__name__}, not a map")
            found = clean(labels.get(key))
        except ApiException as exc:
            if exc.status != GONE:
                self._denied_until = now + (NODE_TTL_SECONDS if exc.status in DENIED else RETRY_SECONDS)
            self._tell(str(exc.status), f"the cluster answered {exc.status}")
            return False, None, now + (NODE_TTL_SECONDS if exc.status in (*DENIED, GONE) else RETRY_SECONDS)
        except Exception as exc:  # unreachable, a timeout, a body that is no JSON or no node
            self._denied_until = now + RETRY_SECONDS
            self._tell(type(exc).__name__, f"{type(exc).__name__}: {str(exc)[:200]}")
            return False, None, now + RETRY_SECONDS
        return True, found, now + NODE_TTL_SECONDS

    def _tell(self, key: str, what: str) -> None:
        if key not in self._told:  # once per kind of failure: a tick per second would fill the log otherwise
            self._told.add(key)
            log.info("could not read a node's GPU type label (%s): pods there are priced by their Kueue flavor "
                     "or the default GPU type (manifests/components/node-gpu-types grants the read)", what)
