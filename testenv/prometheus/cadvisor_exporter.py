#!/usr/bin/env python3
"""A stand-in for the kubelet's cAdvisor endpoint (/metrics/cadvisor): serves the two container series the portal
reads, in cAdvisor's shape, on 127.0.0.1. A test says which containers run, how many cores each burns and how much
memory it holds, in a JSON file re-read on every scrape::

    {"generation": 1,
     "containers": [{"namespace": "team-a", "pod": "mlp-7-abcde", "container": "main",
                     "cores": 1.5, "memory_bytes": 2147483648}]}

Per container it serves ``container_cpu_usage_seconds_total`` (a counter growing by ``cores`` per second of wall
time since the container first appeared; a change of ``cores`` changes its slope from then on) and
``container_memory_working_set_bytes``, labelled as cAdvisor labels them (``container``, ``cpu="total"``, ``id``,
``image``, ``name``, ``namespace``, ``pod``). As the real one does, it also serves each pod's own cgroup
(``container=""``, the sum of its containers) and its pause container (``container="POD"``), which a reader must
not add to the containers'. ``generation`` is served as ``portal_testenv_cadvisor_generation``.

Usage: cadvisor_exporter.py PORT SPEC.json   (PORT 0: any free port; the first line printed is
"listening on 127.0.0.1:PORT").
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CPU = "container_cpu_usage_seconds_total"
MEMORY = "container_memory_working_set_bytes"
PAUSE_CORES, PAUSE_BYTES = 0.001, 1 << 20


class Counters:
    """CPU seconds of each container so far: integrated over time at the spec's rate, monotonic like a counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at: dict[tuple[str, ...], tuple[float, float]] = {}  # key → (last time, seconds then)

    def value(self, key: tuple[str, ...], cores: float, now: float) -> float:
        with self._lock:
            at, seconds = self._at.get(key, (now, 0.0))
            seconds += max(0.0, cores) * (now - at)
            self._at[key] = (now, seconds)
            return seconds


def _line(name: str, labels: dict[str, str], value: float) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{body}}} {value!r}"


def render(spec: dict[str, Any], counters: Counters, now: float) -> str:
    pods: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in spec.get("containers", []):
        pods.setdefault((c["namespace"], c["pod"]), []).append(c)
    cpu_lines, memory_lines = [], []
    for (namespace, pod), containers in pods.items():
        pod_uid = uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}.{pod}")
        cgroup = f"/kubepods/burstable/pod{pod_uid}"
        members = [(c["container"], float(c.get("cores", 0)), float(c.get("memory_bytes", 0))) for c in containers]
        members.append(("POD", PAUSE_CORES, PAUSE_BYTES))
        pod_cpu = pod_memory = 0.0
        for container, cores, memory in members:
            cid = uuid.uuid5(pod_uid, container).hex
            labels = {"container": container, "cpu": "total", "id": f"{cgroup}/{cid}", "name": cid,
                      "image": "registry.k8s.io/pause:3.9" if container == "POD" else "ghcr.io/team/train:1",
                      "namespace": namespace, "pod": pod}
            seconds = counters.value((namespace, pod, container), cores, now)
            pod_cpu, pod_memory = pod_cpu + seconds, pod_memory + memory
            cpu_lines.append(_line(CPU, labels, seconds))
            memory_lines.append(_line(MEMORY, {k: v for k, v in labels.items() if k != "cpu"}, memory))
        pod_labels = {"container": "", "id": cgroup, "image": "", "name": "", "namespace": namespace, "pod": pod}
        cpu_lines.append(_line(CPU, {**pod_labels, "cpu": "total"}, pod_cpu))
        memory_lines.append(_line(MEMORY, pod_labels, pod_memory))
    return "\n".join([
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.",
        f"# TYPE {CPU} counter", *cpu_lines,
        "# HELP container_memory_working_set_bytes Current working set in bytes.",
        f"# TYPE {MEMORY} gauge", *memory_lines,
        "# TYPE portal_testenv_cadvisor_generation gauge",
        f"portal_testenv_cadvisor_generation {int(spec.get('generation', 0))}",
    ]) + "\n"


def make_server(port: int, spec_path: Path) -> ThreadingHTTPServer:
    counters = Counters()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            spec = json.loads(spec_path.read_text()) if spec_path.exists() else {}
            body = render(spec, counters, time.time()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main(argv: list[str]) -> None:
    server = make_server(int(argv[0]), Path(argv[1]))
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt), server:
        server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
