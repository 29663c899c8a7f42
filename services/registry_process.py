"""The registry worker's upload process (services/registry_upload.py), kept alive between registrations: loading
MLflow's client takes seconds, which a process per registration paid each time.

Its environment is the portal's few plain variables and never a login: each registration's login (read from its
files then, so a rotated Secret needs no restart) travels with its plan through the pipe and lives in the child's
environment only while that registration runs. A child that died, hung past the limit or answered nonsense is
killed and the next registration starts a fresh one; it also dies with the worker's thread (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from services.tensorboard import _die_with_parent

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "HTTP_PROXY",
              "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
START_TIMEOUT_SECONDS = 120.0


def base_env(home: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true",
               MLFLOW_HTTP_REQUEST_MAX_RETRIES="2", MLFLOW_HTTP_REQUEST_TIMEOUT="120")
    return env


class UploadProcess:
    def __init__(self, home: Path):
        self.home = home
        self.proc: subprocess.Popen[str] | None = None
        self.started = 0  # processes started so far (the bench and tests read it)

    def _start(self) -> subprocess.Popen[str]:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        stderr = open(self.home / "upload.log", "w")  # noqa: SIM115 - the child's; read on a failure
        try:
            proc = subprocess.Popen([sys.executable, "-m", "services.registry_upload"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr, text=True, env=base_env(self.home),
                                    cwd=ROOT, preexec_fn=_die_with_parent)
        finally:
            stderr.close()
        self.started += 1
        assert proc.stdout is not None
        if _line(proc.stdout, START_TIMEOUT_SECONDS) is None:
            self._kill(proc)
            raise OSError("the MLflow upload process did not start")
        return proc

    def ask(self, plan: dict[str, Any], login: dict[str, str], timeout: float) -> dict[str, Any]:
        """One registration's answer; a transient error when the process failed (the next one starts afresh)."""
        try:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = self._start()
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps({"plan": plan, "login": login}) + "\n")
            self.proc.stdin.flush()
            line = _line(self.proc.stdout, timeout)
            answer = json.loads(line) if line else None
        except (OSError, ValueError) as exc:
            log.warning("the MLflow upload process failed: %s", exc)
            line, answer = "", None
        if isinstance(answer, dict) and ("ok" in answer or "error" in answer):
            return answer
        log.warning("the MLflow upload ended unexpectedly: %s", self._log_tail())
        self.close()
        if line is None:
            return {"error": f"The upload to MLflow took longer than {timeout / 3600:g} hours.", "transient": True}
        return {"error": "The upload to MLflow ended unexpectedly (see the portal's log).", "transient": True}

    def _log_tail(self) -> str:
        try:
            return (self.home / "upload.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc is not None:
            self._kill(self.proc)
            self.proc = None

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _line(stream: IO[str], timeout: float) -> str | None:
    """The next line, '' at the end of the stream, None after timeout seconds without one."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if sel.select(min(left, 60.0)):
                return stream.readline()
