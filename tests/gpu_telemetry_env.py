"""A real Prometheus (Debian's /usr/bin/prometheus) scraping the DCGM exporter stand-in
(testenv/prometheus/dcgm_exporter.py) every second, both on 127.0.0.1.

Two scrape jobs read the same exporter: ``dcgm`` keeps the exporter's ``pod``/``namespace`` labels (plain
Kubernetes, a static scrape config); ``dcgm-operator`` gives the target its own ``pod``/``namespace`` labels,
as the Prometheus Operator does, so Prometheus renames the exporter's to ``exported_pod``/``exported_namespace``
(OpenShift's monitoring stack, kube-prometheus).

By hand: ``.venv/bin/python -m tests.gpu_telemetry_env`` starts both and prints the URL and the spec file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = ROOT / "testenv" / "prometheus" / "dcgm_exporter.py"
PROMETHEUS = "/usr/bin/prometheus"


def prometheus_binary() -> str | None:
    """Debian's prometheus, or one on PATH; None when neither is there."""
    if Path(PROMETHEUS).is_file():
        return PROMETHEUS
    return shutil.which("prometheus")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gpu(util: float | None = None, engine: float | None = None, fb_mib: float | None = None) -> dict[str, Any]:
    """One GPU of a pod for the spec: only the three series the portal reads are set; None leaves one out."""
    return {"DCGM_FI_DEV_GPU_UTIL": util, "DCGM_FI_PROF_GR_ENGINE_ACTIVE": engine, "DCGM_FI_DEV_FB_USED": fb_mib}


def _get(url: str, timeout: float = 5.0, data: bytes | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as r:
        return r.read()


class PrometheusEnv:
    """Start with ``start()``, stop with ``stop()`` (kills exactly the two processes it started)."""

    # The exporter stand-in scraped (``script PORT SPEC.json``), and the scrape config naming it: a subclass swaps
    # both (tests/resource_telemetry_env.py: the kubelet's cAdvisor).
    exporter_script = EXPORTER

    def __init__(self, workdir: Path, binary: str | None = None, web_config: Path | None = None,
                 scrape: bool = True):
        self.workdir = workdir
        self.binary = binary or prometheus_binary() or PROMETHEUS
        self.web_config = web_config
        self.scrape = scrape
        self.spec_path = workdir / "gpus.json"
        self.generation = 0
        self.exporter: subprocess.Popen[str] | None = None
        self.prometheus: subprocess.Popen[bytes] | None = None
        self.exporter_port = 0
        self.port = 0
        self.log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        scheme = "https" if self.web_config and "tls_server_config" in self.web_config.read_text() else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def exporter_url(self) -> str:
        return f"http://127.0.0.1:{self.exporter_port}"

    def start(self, timeout: float = 60.0) -> PrometheusEnv:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.scrape:
            self.exporter = subprocess.Popen([sys.executable, str(self.exporter_script), "0", str(self.spec_path)],
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert self.exporter.stdout is not None
            first = self.exporter.stdout.readline().strip()
            if not first.startswith("listening on 127.0.0.1:"):
                self.stop()
                raise RuntimeError(f"the exporter stand-in {self.exporter_script.name} did not start: {first!r}")
            self.exporter_port = int(first.rsplit(":", 1)[1])
        config = self.workdir / "prometheus.yml"
        config.write_text(self._config())
        self.port = free_port()
        args = [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        if self.web_config:
            args.append(f"--web.config.file={self.web_config}")
        with self.log_path.open("wb") as log:
            self.prometheus = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        self._wait_ready(timeout)
        return self

    def _config(self) -> str:
        if not self.scrape:
            return "global:\n  scrape_interval: 1s\nscrape_configs: []\n"
        target = f"127.0.0.1:{self.exporter_port}"
        return f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: dcgm
    static_configs:
      - targets: ["{target}"]
  - job_name: dcgm-operator
    static_configs:
      - targets: ["{target}"]
        labels:
          namespace: gpu-operator
          pod: nvidia-dcgm-exporter-x7k2p
          container: nvidia-dcgm-exporter
"""

    def _wait_ready(self, timeout: float) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.prometheus is not None
            if self.prometheus.poll() is not None:
                log = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"prometheus exited with {self.prometheus.returncode}: {log}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                # Both scrape jobs have read the exporter at least once.
                if not self.scrape or len(self.instant("up == 1")) >= 2:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus did not become ready within {timeout}s")

    def instant(self, promql: str) -> list[dict[str, Any]]:
        """Query this Prometheus directly (plain http only; for waiting, not for the code under test)."""
        body = urllib.parse.urlencode({"query": promql}).encode()
        payload = json.loads(_get(f"http://127.0.0.1:{self.port}/api/v1/query", data=body))
        return payload["data"]["result"]

    def set_gpus(self, pods: list[dict[str, Any]], idle_gpus: int = 1, timeout: float = 30.0) -> None:
        """Make the exporter show these pods' GPUs and wait until both scrape jobs have taken them in."""
        self.generation += 1
        tmp = self.spec_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"generation": self.generation, "pods": pods, "idle_gpus": idle_gpus}))
        tmp.replace(self.spec_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.instant(f"portal_testenv_generation >= {self.generation}")
            if len(seen) >= 2:
                return
            time.sleep(0.2)
        raise AssertionError(f"Prometheus did not scrape generation {self.generation} within {timeout}s")

    def query_requests_total(self) -> float:
        """Prometheus's own count of /api/v1/query requests, read from its /metrics (which is not that handler)."""
        text = _get(f"http://127.0.0.1:{self.port}/metrics").decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line)

    def stop(self) -> None:
        for proc in (self.prometheus, self.exporter):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        if self.exporter is not None and self.exporter.stdout is not None:
            self.exporter.stdout.close()


def main() -> None:
    import tempfile

    if prometheus_binary() is None:
        sys.exit("prometheus is not installed: `make prometheus` (Debian's package) first")
    env = PrometheusEnv(Path(tempfile.mkdtemp(prefix="portal-prometheus-"))).start()
    env.set_gpus([{"namespace": "default", "pod": "mlp-1-abcde", "gpus": [gpu(90, 0.9, 40000), gpu(40, 0.4, 20000)]}])
    print(f"Prometheus:      {env.url}   (PORTAL_PROMETHEUS_URL)")
    print(f"DCGM exporter:   {env.exporter_url}/metrics")
    print(f"GPU spec (JSON): {env.spec_path}   (re-read on every scrape; see testenv/prometheus/dcgm_exporter.py)")
    print("Ctrl-C stops both.")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        env.stop()


if __name__ == "__main__":
    main()
