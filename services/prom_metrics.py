"""The portal's own health as Prometheus metrics (served on /metrics by api/metrics_route.py).

Nothing here counts by itself: the collectors read, at each scrape, the counters the parts already keep (the
sync loop's ticks, the watch caches' breaks and 410s, the backend's outages) and two cheap queries of the store
(jobs by state from the running totals, undelivered notifications by their index). Only the submit latency is
recorded as it happens, by JobService.submit into the histogram made here.

Each Portal gets its own CollectorRegistry, never prometheus_client's global one: tests build many portals in
one process, and a global registry would refuse the second portal's metrics (or mix two portals' values)."""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from sqlalchemy import func, select

from services.models import GROUP_OF, JobStatus, StatusGroup
from services.notifications_outbox import PENDING, SENDING
from services.store.notification_tables import NotificationDelivery
from services.store.orm import Job, JobTotals

if TYPE_CHECKING:
    from services.portal import Portal
    from services.sync import SyncLoop

# From a local process start (milliseconds) to a cluster's slow admission webhook (seconds).
SUBMIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WATCHED = ("jobs", "pods")  # the Kubernetes backend's watch caches (services/backends/k8s_watch.py)


def submit_latency_histogram() -> Histogram:
    """The histogram JobService.submit observes into: unregistered, its Portal's collector exports it."""
    return Histogram("portal_submit_latency_seconds",
                     "Time from a submission reaching the portal to the backend accepting the job.",
                     buckets=SUBMIT_BUCKETS, registry=None)


def sync_lag(sync: SyncLoop, now: float) -> float:
    """Seconds since the loop's last pass completed (since it started, before its first): dated by the loop itself,
    so a scrape after a stall sees the whole stall, however long since the previous scrape."""
    last = sync.last_tick_at if sync.last_tick_at is not None else sync.started_at.timestamp()
    return max(0.0, now - last)


class PortalCollector:
    """Reads one portal's live values at scrape time."""

    def __init__(self, portal: Portal):
        self.portal = portal

    def collect(self) -> Iterator[Metric]:
        portal = self.portal
        yield from self._jobs()
        yield from self._sync()
        yield from self._backend()
        yield from self._notifications()
        yield from portal.jobs.submit_latency.collect()
        info = InfoMetricFamily("portal_build", "What this portal process runs.")
        info.add_metric([], {"backend": portal.jobs.backend.name, "auth_mode": portal.settings.auth_mode,
                             "python": platform.python_version(), "streamlit": _streamlit_version()})
        yield info

    def _jobs(self) -> Iterator[Metric]:
        """Finished jobs from the running totals (kept by triggers: the same cost at a million jobs as at ten);
        the active ones, always few, counted by their exact status."""
        with self.portal.jobs.session() as s:
            groups = dict(s.execute(select(JobTotals.status_group, func.sum(JobTotals.jobs))
                                    .group_by(JobTotals.status_group)).all())
            active = dict(s.execute(select(Job.status, func.count()).where(Job.status_group == StatusGroup.ACTIVE.value)
                                    .group_by(Job.status)).all())
        family = GaugeMetricFamily("portal_jobs", "Jobs in the store by state (Failed includes Submit failed).",
                                   labels=["state"])
        for status, group in GROUP_OF.items():
            if group is StatusGroup.ACTIVE:
                family.add_metric([status.value], int(active.get(status.value, 0)))
            elif status is not JobStatus.SUBMIT_FAILED:  # it shares the Failed section's total
                family.add_metric([status.value], int(groups.get(group.value) or 0))
        yield family

    def _sync(self) -> Iterator[Metric]:
        sync = self.portal.sync
        leading = bool(sync.alive and sync.leadership.held())
        yield GaugeMetricFamily("portal_sync_leader", "1 when this replica runs the sync loop (holds the Lease).",
                                value=1 if leading else 0)
        yield CounterMetricFamily("portal_sync_ticks", "Sync loop passes completed without an error.",
                                  value=sync.ticks)
        yield GaugeMetricFamily("portal_sync_failing", "1 when the sync loop's last pass failed.",
                                value=1 if sync.last_error else 0)
        if leading:  # a replica that does not lead has no loop to lag: alert on the leader's value
            yield GaugeMetricFamily("portal_sync_lag_seconds", "Seconds since the sync loop last completed a pass.",
                                    value=sync_lag(sync, time.time()))

    def _backend(self) -> Iterator[Metric]:
        backend = self.portal.jobs.backend
        restarts = CounterMetricFamily("portal_watch_restarts", "Cluster watches that broke and were started "
                                       "again (errors, apiserver restarts, 410 Gone).", labels=["resource"])
        relists = CounterMetricFamily("portal_watch_relists", "Lists again after 410 Gone (the version watched "
                                      "from was compacted away).", labels=["resource"])
        for resource in WATCHED:
            cache: Any = getattr(backend, resource, None)
            if isinstance(getattr(cache, "breaks", None), int):
                restarts.add_metric([resource], cache.breaks + cache.gone)
                relists.add_metric([resource], cache.gone)
        yield restarts
        yield relists
        yield CounterMetricFamily("portal_backend_outages", "Times the cluster stopped answering (0: local jobs).",
                                  value=int(getattr(backend, "outages", 0)))
        yield GaugeMetricFamily("portal_backend_reachable", "1 when the backend answers now.",
                                value=0 if backend.health() else 1)

    def _notifications(self) -> Iterator[Metric]:
        with self.portal.jobs.session() as s:
            pending = s.scalar(select(func.count()).select_from(NotificationDelivery)
                               .where(NotificationDelivery.status.in_([PENDING, SENDING])))
        yield GaugeMetricFamily("portal_notifications_pending", "Notification deliveries not yet sent (the outbox).",
                                value=int(pending or 0))


def _streamlit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamlit")
    except PackageNotFoundError:
        return "unknown"


_lock = threading.Lock()


def registry_for(portal: Portal) -> CollectorRegistry:
    """The portal's registry, made on the first scrape (the collectors read live values, so nothing is missed;
    the submit histogram lives on the JobService from its start)."""
    with _lock:
        registry: CollectorRegistry | None = getattr(portal, "_prometheus_registry", None)
        if registry is None:
            # auto_describe off: registering must not run the collectors' store queries
            registry = CollectorRegistry(auto_describe=False)
            registry.register(PortalCollector(portal))
            portal._prometheus_registry = registry  # type: ignore[attr-defined]
        return registry


def exposition(portal: Portal) -> bytes:
    """The portal's metrics in Prometheus's text format."""
    return generate_latest(registry_for(portal))
