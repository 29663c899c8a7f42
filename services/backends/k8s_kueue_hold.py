"""A team's ClusterQueue held while its budget is spent (`spec.stopPolicy: Hold`: Kueue admits nothing new from it,
admitted workloads run on) and released when the budget allows again. The portal marks a hold as its own with an
annotation carrying the sentence its waiting jobs show, and releases only holds it made: an admin's own Hold stays."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

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
        self._feeds: dict[str, str | None] | None = None

    def feeds(self) -> dict[str, str | None]:
        """Each LocalQueue of the namespace -> the ClusterQueue it feeds, read now (once for this object): whether a
        ClusterQueue is one team's own must not rest on the Kueue view, which is read only while jobs wait in Kueue."""
        if self._feeds is None:
            self.kueue._count()
            body = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "localqueues",
                                                             _request_timeout=self.timeout)
            self._feeds = {lq["metadata"]["name"]: (lq.get("spec") or {}).get("clusterQueue")
                           for lq in body.get("items") or []}
        return self._feeds

    def cluster_queue_of(self, local_queue: str) -> str | None:
        """The ClusterQueue a LocalQueue of the namespace feeds (None: no such LocalQueue)."""
        return self.feeds().get(local_queue)

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
