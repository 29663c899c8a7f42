"""A real MLflow tracking server for the model registry tests: `mlflow server` on 127.0.0.1 with a SQLite backend
and a local artifact store, started once per test session.

The server is full `mlflow` (Flask, scikit-learn, its UI) in an environment of its own, .venv/mlflow-server
(`make test` installs requirements-mlflow-server.txt there): it pins pyarrow<26 and the portal pyarrow 26, so the two
cannot share one environment. The portal itself talks to it with `mlflow-skinny` (requirements.txt).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, wait_until

SERVER_ENV = ROOT / ".venv" / "mlflow-server"


def mlflow_executable() -> str | None:
    """The `mlflow` command of the server's environment (or PORTAL_TEST_MLFLOW, or one on PATH)."""
    for candidate in (os.environ.get("PORTAL_TEST_MLFLOW", ""), str(SERVER_ENV / "bin" / "mlflow")):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("mlflow")


@dataclass
class MlflowServer:
    url: str
    artifacts: Path
    proc: subprocess.Popen[bytes]
    log: Path


def start_mlflow(folder: Path, admin_password: str | None = None) -> MlflowServer:
    """The server; with `admin_password`, behind MLflow's basic-auth app (user admin)."""
    exe = mlflow_executable()
    if exe is None:
        pytest.skip("no MLflow server here: python3 -m venv .venv/mlflow-server && "
                    ".venv/mlflow-server/bin/pip install -r requirements-mlflow-server.txt")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "mlflow-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PORTAL_"))}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    auth = []
    if admin_password is not None:
        env.update(MLFLOW_AUTH_ADMIN_PASSWORD=admin_password, MLFLOW_FLASK_SERVER_SECRET_KEY=os.urandom(16).hex())
        auth = ["--app-name", "basic-auth"]
    proc = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination",
         str(folder / "artifacts"), *auth],
        cwd=folder, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=120, interval=0.3)
    return MlflowServer(url, folder / "artifacts", proc, log)


def stop_mlflow(server: MlflowServer) -> None:
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, 15)
        try:
            server.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, 9)
            server.proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield server
    stop_mlflow(server)
