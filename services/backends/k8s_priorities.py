"""The admin's Kueue WorkloadPriorityClasses as the priorities the submit form offers: by name, lowest value first,
each with its `description` (or a sentence made from its value), and the one the admin marked as the default.

The form asks on every rerun, so the list is kept OFFER_TTL_SECONDS; a submit checks its class against a fresh read
(one made a minute ago is accepted at once)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from services.config import Settings
from services.queue_model import DEFAULT_PRIORITY

log = logging.getLogger(__name__)
GROUP = "kueue.x-k8s.io"  # Kueue's API group and version, for every read of its objects (k8s_kueue.py too)
VERSION = "v1beta2"
# On a WorkloadPriorityClass (annotation or label), "true": the form's preselected priority.
DEFAULT_MARK = "ml-portal/default-priority"
OFFER_TTL_SECONDS = 60.0


@dataclass(frozen=True)
class ClassList:
    options: list[tuple[str, str]]  # (name, sentence), lowest value first
    default: str


def _value(item: dict[str, Any]) -> int:
    try:
        return int(item.get("value", 0))
    except (TypeError, ValueError):
        return 0


def sentence(item: dict[str, Any]) -> str:
    """What the form says under a class: the admin's description, else what its value means."""
    text = " ".join(str(item.get("description") or "").split())
    if text:
        return text[:300]
    return (f"Priority value {_value(item)}: waiting jobs with a higher value start first, and may take GPUs "
            "from running jobs with a lower one.")


def _marked(item: dict[str, Any]) -> bool:
    meta = item.get("metadata") or {}
    return any(str((meta.get(where) or {}).get(DEFAULT_MARK, "")).lower() == "true"
               for where in ("annotations", "labels"))


def class_list(items: list[dict[str, Any]]) -> ClassList | None:
    """The form's options from the listed classes; None when the cluster has none (every job has one priority)."""
    ordered = sorted(items, key=lambda i: (_value(i), i["metadata"]["name"]))
    if not ordered:
        return None
    names = [i["metadata"]["name"] for i in ordered]
    marked = [i["metadata"]["name"] for i in ordered if _marked(i)]
    # No mark: "normal" where it exists, else the lowest (asking for more than the least needs the user's choice).
    default = marked[0] if marked else DEFAULT_PRIORITY if DEFAULT_PRIORITY in names else names[0]
    return ClassList([(i["metadata"]["name"], sentence(i)) for i in ordered], default)


class PriorityClasses:
    """Reads of the cluster's WorkloadPriorityClasses, the last good one kept for the form."""

    def __init__(self, custom: client.CustomObjectsApi, settings: Settings, counter: Callable[[], None]):
        self.custom = custom
        self.settings = settings
        self._count = counter
        self._lock = threading.Lock()
        self._kept: ClassList | None = None
        self._read_at = -OFFER_TTL_SECONDS

    def read(self) -> dict[str, int] | None:
        """The classes by name with their values, read now; None when the portal may not list them."""
        self._count()
        try:
            body = self.custom.list_cluster_custom_object(
                GROUP, VERSION, "workloadpriorityclasses", _request_timeout=self.settings.kube_request_timeout_seconds)
        except ApiException as exc:
            if exc.status != 403:
                raise
            # Not granted (the kueue component's ClusterRole is not applied): Kueue then judges the label itself.
            log.info("may not list Kueue's WorkloadPriorityClasses: the priority label is sent unchecked")
            return None
        items = body.get("items") or []
        with self._lock:
            self._kept, self._read_at = class_list(items), time.monotonic()
        return {item["metadata"]["name"]: _value(item) for item in items}

    def offered(self, fresh: bool = False) -> ClassList | None:
        """The classes for the form, read at most every OFFER_TTL_SECONDS (or now when `fresh`); a failed read
        keeps the last good list, and waits out the same time before it is tried again."""
        with self._lock:
            if not fresh and time.monotonic() - self._read_at < OFFER_TTL_SECONDS:
                return self._kept
            self._read_at = time.monotonic()
        try:
            self.read()
        except Exception as exc:  # the cluster cannot be reached: the form still draws, with what it had
            log.info("could not read Kueue's WorkloadPriorityClasses: %s", exc)
        with self._lock:
            return self._kept
