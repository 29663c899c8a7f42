"""Shared fixtures: every test gets its own data directory (SQLite file, workspace, job dirs)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from services.auth import local_user
from services.models import User
from services.portal import Portal, get_portal, reset_portal

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    d = tmp_path / "portal-data"
    monkeypatch.setenv("PORTAL_DATA_DIR", str(d))
    monkeypatch.setenv("PORTAL_STOP_GRACE_SECONDS", "2")
    monkeypatch.setenv("PORTAL_BACKEND", "local")
    reset_portal()
    yield d
    reset_portal()


@pytest.fixture
def portal(data_dir: Path) -> Iterator[Portal]:
    p = get_portal()
    yield p
    _kill_leftover_jobs(p)


def _kill_leftover_jobs(p: Portal) -> None:
    """A failed test must not leave training processes behind."""
    for job_dir in p.settings.jobs_dir.glob("*"):
        state = job_dir / "state.json"
        if state.exists():
            st = json.loads(state.read_text())
            for key in ("runner_pid", "child_pid"):
                pid = st.get(key)
                if pid and "returncode" not in st:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL) if key == "child_pid" else os.kill(pid, signal.SIGKILL)


@pytest.fixture
def user(portal: Portal) -> User:
    """The single-mode user of a laptop portal (an admin of their own portal)."""
    return local_user(portal.settings)


@pytest.fixture
def workspace_script(portal: Portal) -> Callable[[str, str], str]:
    """Write a script into the workspace; returns its workspace path."""

    def write(name: str, body: str) -> str:
        path = portal.settings.workspace_dir / name
        path.write_text(body)
        return name

    return write


def run_to_end(portal: Portal, user: User, job_id: int, timeout: float = 60.0):
    """Drive the sync loop by hand until the job has finished; returns its view."""

    def finished():
        portal.sync.tick()
        job = portal.jobs.get(user, job_id)
        return job if not job.is_active else None

    return wait_until(finished, timeout=timeout, interval=0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortalServer:
    """The portal as a user starts it: `streamlit run portal_app.py`, bound to 127.0.0.1."""

    def __init__(self, data_dir: Path, port: int | None = None, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.extra_env = env or {}
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PortalServer:
        env = dict(os.environ, PORTAL_DATA_DIR=str(self.data_dir), PORTAL_STOP_GRACE_SECONDS="2")
        env.setdefault("PORTAL_BACKEND", "local")
        env.update(self.extra_env)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "portal_app.py", "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(self.port),
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
             "--client.toolbarMode", "viewer"],
            cwd=ROOT, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )

        def healthy() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=60, interval=0.3)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def open_tmp_path() -> Iterator[Path]:
    """A temporary folder that strangers may pass through (0711), for a multi-user portal with local jobs: each
    job runs under its own UID, which cannot traverse pytest's own tmp_path (0700)."""
    import shutil
    import tempfile

    # Not under /tmp: a job's private /tmp would hide its own folder (the portal then keeps the shared one).
    path = Path(tempfile.mkdtemp(prefix="mlp-shared-", dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sandbox_python() -> str:
    """The venv's Python if the job accounts can reach it (its real file, not the venv's link), else the system's:
    tests that run sandboxed jobs need only the standard library in them."""
    real = Path(sys.executable).resolve()
    if all(os.stat(p).st_mode & 0o001 for p in real.parents):
        return sys.executable
    return "/usr/bin/python3"


def sandbox_skip_reason() -> str | None:
    """Why jobs of a multi-user portal cannot run here (not root, not Linux), else None."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "job isolation needs root on Linux (CI runs as root)"
    return None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PortalServer]:
    srv = PortalServer(tmp_path / "portal-data").start()
    yield srv
    srv.stop()


def create_token(data_dir: Path, user: str, name: str = "test", groups: tuple[str, ...] = ()) -> str:
    """A personal API token for `user`, written straight into the store of the portal at data_dir."""
    from services.config import Settings
    from services.portal import build_portal

    p = build_portal(Settings(data_dir=data_dir, backend="local"))
    try:
        _, secret = p.tokens.create(User(name=user, groups=groups), name)
        return secret
    finally:
        p.close()


# PostgreSQL as well as SQLite (tests/pg_env.py) ---------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """One throwaway PostgreSQL cluster for the session, started on first use (skipped or failed without it)."""
    from tests.pg_env import start_server

    server = start_server()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLAlchemy URL of an empty database: a SQLite file in tmp_path, or a new database on pg_server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    server = request.getfixturevalue("pg_server")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


@contextlib.contextmanager
def portal_on(database_url: str, tmp_path: Path) -> Iterator[Portal]:
    """A laptop portal (local backend) whose store is the database of `database_url` (building one runs the
    start-up migrations, as a portal process does)."""
    from services.config import Settings
    from services.portal import build_portal

    p = build_portal(Settings(data_dir=tmp_path / "portal-data", backend="local", database_url=database_url,
                              stop_grace_seconds=2))
    try:
        yield p
    finally:
        _kill_leftover_jobs(p)
        p.close()


@pytest.fixture
def any_portal(database_url: str, tmp_path: Path) -> Iterator[Portal]:
    with portal_on(database_url, tmp_path) as p:
        yield p
