"""The GPU type each pod of a cluster job ran on, for its price (services/costs.py) and the Usage page's breakdown.

Where it comes from, first found wins: the label `gpu_type_node_label` of the pod's node (the hardware itself, e.g.
NVIDIA's GPU feature discovery's `nvidia.com/gpu.product`), then the Kueue ResourceFlavor its Workload was admitted
with for `nvidia.com/gpu`, then nothing (the job is priced as PORTAL_DEFAULT_GPU_TYPE). Reading a node is a
cluster-scoped `get` (manifests/components/node-gpu-types): without it, or during an outage, the flavor and the
default are used and the tick goes on."""

from __future__ import annotations

import json
import logging
import time
import unicodedata
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
DENIED = (401, 403, 404)  # no right to read nodes (the component is not applied), or the node is gone


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


class GpuTypes:
    """Node labels read once per node and kept NODE_TTL_SECONDS; used by the sync loop's observe only."""

    def __init__(self, core: client.CoreV1Api, settings: Settings, counter: Callable[[], None]):
        self.core = core
        self.settings = settings
        self._count = counter
        self._nodes: dict[str, tuple[float, str | None]] = {}  # node -> (read again after, its type)
        self._denied_until = 0.0
        self._told: set[str] = set()

    def label(self, obs: Observation, workload: dict[str, Any] | None) -> None:
        """Each pod interval of the observation gets the GPU type it ran on, where one is known."""
        intervals = obs.extra.get("pods") or []
        if not intervals:
            return
        flavor = gpu_flavor(workload)
        for iv in intervals:
            kind = pick(self.of_node(iv.get("node")), flavor)
            if kind:
                iv["gpu_type"] = kind

    def of_node(self, node: str | None) -> str | None:
        key = self.settings.gpu_type_node_label
        if not key or not node:
            return None
        now = time.monotonic()
        cached = self._nodes.get(node)
        if cached and now < cached[0]:
            return cached[1]
        if now < self._denied_until:
            return None
        found, again = self._read(node, key, now)
        if len(self._nodes) > 10_000:  # nodes come and go in an autoscaled cluster: forget the long unread
            self._nodes = {n: v for n, v in self._nodes.items() if v[0] > now}
        self._nodes[node] = (again, found)
        return found

    def _read(self, node: str, key: str, now: float) -> tuple[str | None, float]:
        self._count()
        try:
            resp = self.core.read_node(node, _preload_content=False,
                                       _request_timeout=self.settings.kube_request_timeout_seconds)
            labels = (json.loads(resp.data).get("metadata") or {}).get("labels") or {}
        except ApiException as exc:
            if exc.status in (401, 403):  # one answer for every node: no more asking until the TTL is over
                self._denied_until = now + NODE_TTL_SECONDS
            self._tell(str(exc.status), f"the cluster answered {exc.status}")
            return None, now + (NODE_TTL_SECONDS if exc.status in DENIED else RETRY_SECONDS)
        except Exception as exc:  # unreachable, a timeout, a body that is no JSON
            self._tell(type(exc).__name__, f"{type(exc).__name__}: {str(exc)[:200]}")
            return None, now + RETRY_SECONDS
        return clean(labels.get(key)), now + NODE_TTL_SECONDS

    def _tell(self, key: str, what: str) -> None:
        if key not in self._told:  # once per kind of failure: a tick per second would fill the log otherwise
            self._told.add(key)
            log.info("could not read a node's GPU type label (%s): pods there are priced by their Kueue flavor "
                     "or the default GPU type (manifests/components/node-gpu-types grants the read)", what)
