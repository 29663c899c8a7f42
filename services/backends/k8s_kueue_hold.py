"""A team's ClusterQueue held while its budget is spent (`spec.stopPolicy: Hold`: Kueue admits nothing new from it,
admitted workloads run on) and released when the budget allows again. The portal marks a hold as its own with an
annotation carrying the sentence its waiting jobs show, and releases only holds it made: an admin's own Hold stays."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kubernetes.client.rest import ApiException

from services.backends.k8s_priorities import GROUP, VERSION

if TYPE_CHECKING:
    from services.backends.k8s_kueue import Kueue

log = logging.getLogger(__name__)
HOLD_ANNOTATION = "ml-portal/budget-hold"


def held_by_budget(cluster_queue: dict[str, Any] | None) -> str | None:
    """The sentence of the portal's own budget hold on this ClusterQueue, if it holds it."""
    return ((cluster_queue or {}).get("metadata") or {}).get("annotations", {}).get(HOLD_ANNOTATION)


class QueueHolds:
    """Holds and releases on the ClusterQueues of one Kueue view (services/backends/k8s_kueue.py)."""

    def __init__(self, kueue: Kueue):
        self.kueue = kueue
        self.custom = kueue.custom
        self.namespace = kueue.namespace
        self.timeout = kueue.settings.kube_request_timeout_seconds

    def cluster_queue_of(self, local_queue: str) -> str | None:
        """The ClusterQueue a LocalQueue of the namespace feeds (None: no such LocalQueue)."""
        lq = self.kueue.view.local_queues.get(local_queue)
        if lq is None:
            self.kueue._count()
            try:
                lq = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "localqueues",
                                                              local_queue, _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        return (lq.get("spec") or {}).get("clusterQueue")

    def set_holds(self, want: dict[str, str | None]) -> None:
        """`want`: ClusterQueue -> the sentence to hold it with, or None to release it. A ClusterQueue the portal
        holds and `want` does not name is released too (its budget was removed or no longer says "wait")."""
        known = self.kueue.view.cluster_queues
        for name, cq in known.items():
            if name not in want and held_by_budget(cq) is not None:
                want = {**want, name: None}
        for name, sentence in want.items():
            cq = known.get(name)
            ours = held_by_budget(cq)
            stop = ((cq or {}).get("spec") or {}).get("stopPolicy")
            if sentence is not None and (ours != sentence or stop != "Hold"):
                body: dict[str, Any] = {"metadata": {"annotations": {HOLD_ANNOTATION: sentence}},
                                        "spec": {"stopPolicy": "Hold"}}
            elif sentence is None and ours is not None:
                body = {"metadata": {"annotations": {HOLD_ANNOTATION: None}}, "spec": {"stopPolicy": "None"}}
            else:
                continue
            self.kueue._count()
            patched = self.custom.patch_cluster_custom_object(GROUP, VERSION, "clusterqueues", name, body,
                                                              _request_timeout=self.timeout)
            known[name] = patched  # the pages' blockers say it at once, not at the next list of the queues
            log.info("ClusterQueue %s %s", name, f"held: {sentence}" if sentence else "released")
