"""The process-wide services: one settings object, one engine, one backend, one sync loop."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from services.auth import ensure_signing_key
from services.backends.base import Backend
from services.backends.local import LocalBackend
from services.backends.local_sandbox import protect_data_dir
from services.config import Settings, get_settings
from services.gpu_telemetry import make_telemetry
from services.history import HistoryService
from services.jobs import JobService
from services.leader import make_leadership
from services.notifications_sender import NotificationSender
from services.notifications_settings import NotificationService
from services.reasons import use_admin_patterns
from services.registry_worker import RegistryWorker
from services.store.db import make_engine, make_sessionmaker, migrate
from services.sweep_runner import SweepRunner
from services.sync import SyncLoop
from services.tb_scalars import EventScalarScanner
from services.templates import TemplateService
from services.tensorboard import TensorBoards
from services.tokens import TokenService
from services.workspace import seed_workspace


@dataclass
class Portal:
    settings: Settings
    jobs: JobService
    sync: SyncLoop
    tokens: TokenService
    templates: TemplateService
    telemetry: Any = None  # GPU telemetry (services/gpu_telemetry.py), None when not configured
    history: Any = None  # services/history.py
    notifications: Any = None  # services/notifications_settings.py: settings, channels, the in-portal list
    sweeps: Any = None  # services/sweeps.py: hyperparameter sweeps (their runner is a worker of the sync loop)
    tensorboards: Any = None  # services/tensorboard.py: TensorBoards started on demand, served by the proxy

    def close(self) -> None:
        if self.tensorboards is not None:
            self.tensorboards.stop_all()  # its processes are this portal's children
        self.sync.stop()
        self.jobs.backend.close()
        self.jobs.sessions.kw["bind"].dispose()


def make_backend(settings: Settings) -> Backend:
    if settings.resolved_backend() == "kubernetes":
        from services.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(settings)
    return LocalBackend(settings)


def build_portal(settings: Settings) -> Portal:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    seed_workspace(settings.workspace_dir)
    use_admin_patterns(settings.failure_patterns)
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    ensure_signing_key(settings)
    protect_data_dir(settings)
    sessions = make_sessionmaker(engine)
    service = JobService(settings, sessions, make_backend(settings))
    telemetry = make_telemetry(settings, service.backend.name)
    sync = SyncLoop(service, settings.sync_interval_seconds, telemetry=telemetry)
    # With replicas only the Lease's holder runs the loop and its workers; pages and the API run on every one.
    sync.leadership = make_leadership(settings, service.backend)
    sync.workers.append(NotificationSender(settings, sessions))  # delivers the outbox; runs with the sync loop
    sync.workers.append(sweeps := SweepRunner.of(settings, sessions, service, sync))  # asks for, follows trials
    sync.workers.append(EventScalarScanner(service))  # TensorBoard event files' scalars into the charts
    sync.workers.append(RegistryWorker(service))  # Register model: uploads to MLflow, after a restart too
    templates = TemplateService(sessions, service.teams)  # a team's templates are its members'
    return Portal(settings, service, sync, TokenService(settings, sessions), templates, telemetry,
                  HistoryService(service), NotificationService(settings, sessions), sweeps.sweeps,
                  TensorBoards(settings, service))


_lock = threading.Lock()
_portal: Portal | None = None


def get_portal() -> Portal:
    """The one Portal of this process, built on first use (pages, API routes and the lifespan share it)."""
    global _portal
    with _lock:
        if _portal is None:
            get_settings.cache_clear()
            _portal = build_portal(get_settings())
        return _portal


def reset_portal() -> None:
    """Close and forget the process's Portal (tests point PORTAL_DATA_DIR elsewhere, then call this)."""
    global _portal
    with _lock:
        if _portal is not None:
            _portal.close()
        _portal = None
