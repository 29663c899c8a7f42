"""A real Prometheus (Debian's /usr/bin/prometheus) scraping the cAdvisor stand-in
(testenv/prometheus/cadvisor_exporter.py) every second, both on 127.0.0.1: the GPU harness (tests/gpu_telemetry_env.py)
with kubelet-shaped container series instead of DCGM's.

Two scrape jobs read the same stand-in with ``honor_labels`` (as the Prometheus Operator's kubelet ServiceMonitor
does, keeping cAdvisor's ``pod``/``namespace``), so every container series arrives twice, as it can through two
scrape configs or unmerged replicas.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.gpu_telemetry_env import ROOT, PrometheusEnv

CADVISOR = ROOT / "testenv" / "prometheus" / "cadvisor_exporter.py"


def container(namespace: str, pod: str, name: str = "main", cores: float = 0.0, memory_mib: float = 0.0) -> dict:
    return {"namespace": namespace, "pod": pod, "container": name, "cores": cores, "memory_bytes": memory_mib * 2**20}


class CadvisorPrometheusEnv(PrometheusEnv):
    """Start with ``start()``, stop with ``stop()`` (kills exactly the two processes it started)."""

    exporter_script = CADVISOR

    def __init__(self, workdir: Path, binary: str | None = None):
        super().__init__(workdir, binary=binary)
        self.spec_path = workdir / "containers.json"

    def _config(self) -> str:
        target = f"127.0.0.1:{self.exporter_port}"
        jobs = "".join(f"""  - job_name: {name}
    honor_labels: true
    metrics_path: /metrics/cadvisor
    static_configs:
      - targets: ["{target}"]
""" for name in ("kubelet", "kubelet-replica"))
        return f"global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{jobs}"

    def set_containers(self, containers: list[dict[str, Any]], timeout: float = 30.0) -> None:
        """Make the stand-in show these containers and wait until both scrape jobs have taken them in, then for
        two more scrapes (a rate needs two samples of a new series)."""
        self.generation += 1
        tmp = self.spec_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"generation": self.generation, "containers": containers}))
        tmp.replace(self.spec_path)
        deadline = time.monotonic() + timeout
        while len(self.instant(f"portal_testenv_cadvisor_generation >= {self.generation}")) < 2:
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus did not scrape generation {self.generation} within {timeout}s")
            time.sleep(0.2)
        time.sleep(2.5)
