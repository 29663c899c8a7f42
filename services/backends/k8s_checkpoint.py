"""Save checkpoint on a cluster without pods/exec: the portal annotates the job's running pods, the kubelet
projects the annotations into each pod (a Downward API volume, k8s_manifests.py), and the portal's launcher in the
pod (services/scriptkit/portal_launch.py) turns the new value into SIGUSR1 for the script.

The kubelet refreshes a Downward API volume on its periodic pod sync (its --sync-frequency, 1 min by default, plus
its cache's TTL), so a request takes up to about a minute, seldom more, to reach the script."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.rest import ApiException

from services.backends.base import BackendError
from services.backends.k8s_manifests import CHECKPOINT_REQUEST, job_name


class PodCheckpoints:
    """A mixin of the Kubernetes backend (its core API client, namespace and pods cache)."""

    core: Any
    namespace: str
    settings: Any
    pods_of: Callable[[str], list[dict[str, Any]]]
    _inc: Callable[[], None]
    _timeout: Callable[[], Any]

    def signal_checkpoint(self, job_id: int, ref: dict[str, Any]) -> None:
        """Write a new request value on each running pod of the job."""
        from services.backends.kubernetes import backend_error  # the module that mixes this class in

        name = ref.get("job_name") or job_name(self.settings, job_id)
        running = [p for p in self.pods_of(name) if (p.get("status") or {}).get("phase") == "Running"
                   and not p["metadata"].get("deletionTimestamp")]
        if not running:
            raise BackendError("The job has no running pod at the moment, so it cannot save a checkpoint now.")
        # A value unlike every earlier one (the launcher acts on a change) that says when it was asked.
        value = datetime.now(UTC).isoformat(timespec="microseconds")
        done = 0
        for pod in running:
            body = {"metadata": {"annotations": {CHECKPOINT_REQUEST: value}}}
            self._inc()
            try:
                self.core.patch_namespaced_pod(pod["metadata"]["name"], self.namespace, body,
                                               _request_timeout=self._timeout())
            except ApiException as exc:
                if exc.status == 404:
                    continue  # ended meanwhile
                raise backend_error(exc) from exc
            except Exception as exc:
                raise backend_error(exc) from exc
            done += 1
        if not done:
            raise BackendError("The job's pods ended meanwhile, so it cannot save a checkpoint now.")
