#!/usr/bin/env python3
"""A stand-in for NVIDIA's dcgm-exporter: serves /metrics in the Prometheus text format on 127.0.0.1.

The series are those of dcgm-sample.prom (one node, two H100s, in the exporter's own format, with the pod
mapping labels container/namespace/pod). A test says which pods have which GPUs in a JSON file, re-read on
every scrape::

    {"generation": 1,
     "pods": [{"namespace": "ns", "pod": "mlp-7-abc", "hostname": "gpu-node-0",
               "gpus": [{"DCGM_FI_PROF_GR_ENGINE_ACTIVE": 0.9, "DCGM_FI_DEV_GPU_UTIL": 90,
                         "DCGM_FI_DEV_FB_USED": 40000},
                        {"DCGM_FI_PROF_GR_ENGINE_ACTIVE": 0.4}]},
              {"namespace": "ns", "pod": "mlp-8-x",
               "gpus": [{"DCGM_FI_DEV_GPU_UTIL": 5, "DCGM_FI_PROF_GR_ENGINE_ACTIVE": null}]}],
     "idle_gpus": 1}

Every GPU gets every metric family of the sample: a value given for it wins, ``null`` leaves that series out
(a GPU without profiling metrics, say), anything else keeps the recorded value. ``idle_gpus`` GPUs carry no
pod labels, as the exporter shows unallocated GPUs. ``generation`` is served as ``portal_testenv_generation``
so a test can wait until Prometheus has scraped what it wrote. Without a spec file the sample is served as is.

Usage: dcgm_exporter.py PORT [SPEC.json] [--sample FILE]   (PORT 0: any free port; the first line printed
is "listening on 127.0.0.1:PORT").
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}\s+(\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
POD_LABELS = ("container", "namespace", "pod")
LANDING = b"""<html><head><title>GPU Exporter</title></head>
<body><h1>GPU Exporter</h1><p><a href="/metrics">Metrics</a></p></body></html>
"""


@dataclass
class Family:
    name: str
    comments: list[str] = field(default_factory=list)
    series: list[tuple[list[tuple[str, str]], str]] = field(default_factory=list)  # (labels in order, value)


def parse_sample(text: str) -> list[Family]:
    families: dict[str, Family] = {}
    for line in text.splitlines():
        if line.startswith("# "):
            name = line.split()[2]
            families.setdefault(name, Family(name)).comments.append(line)
        elif line.strip():
            match = SERIES.match(line)
            if not match:
                raise ValueError(f"not a series line: {line!r}")
            name, labels, value = match.groups()
            families.setdefault(name, Family(name)).series.append((LABEL.findall(labels), value))
    return list(families.values())


def _format(name: str, labels: list[tuple[str, str]], value: Any) -> str:
    body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels)
    return f"{name}{{{body}}} {value}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render(families: list[Family], spec: dict[str, Any] | None) -> str:
    if spec is None:
        lines: list[str] = []
        for fam in families:
            lines += fam.comments + [_format(fam.name, labels, value) for labels, value in fam.series]
        return "\n".join(lines) + "\n"
    # Each GPU: (hostname, index, pod labels, overrides).
    gpus: list[tuple[str, int, dict[str, str], dict[str, Any]]] = []
    next_index: dict[str, int] = {}
    for pod in spec.get("pods", []):
        host = pod.get("hostname", "gpu-node-0")
        pod_labels = {"container": pod.get("container", "main"), "namespace": pod["namespace"], "pod": pod["pod"]}
        for overrides in pod.get("gpus", []):
            index = next_index.get(host, 0)
            next_index[host] = index + 1
            gpus.append((host, index, pod_labels, overrides))
    for _ in range(int(spec.get("idle_gpus", 0))):
        host = "gpu-node-0"
        index = next_index.get(host, 0)
        next_index[host] = index + 1
        gpus.append((host, index, dict.fromkeys(POD_LABELS, ""), {}))
    lines = []
    for fam in families:
        allocated_labels, allocated_value = fam.series[0]
        idle_value = fam.series[-1][1]
        rows = []
        for host, index, pod_labels, overrides in gpus:
            if fam.name in overrides and overrides[fam.name] is None:
                continue
            idle = not pod_labels["pod"]
            value = _value(overrides[fam.name]) if fam.name in overrides else (idle_value if idle else allocated_value)
            gpu_uuid = uuid.uuid5(uuid.NAMESPACE_DNS, f"{host}.gpu{index}.portal-testenv")
            identity = {"gpu": str(index), "UUID": f"GPU-{gpu_uuid}", "pci_bus_id": f"00000000:{0x18 + index:02X}:00.0",
                        "device": f"nvidia{index}", "Hostname": host, **pod_labels}
            labels = [(k, identity.get(k, v)) for k, v in allocated_labels]
            rows.append(_format(fam.name, labels, value))
        if rows:
            lines += fam.comments + rows
    lines += ["# HELP portal_testenv_generation Generation of the test's GPU spec (not a DCGM series).",
              "# TYPE portal_testenv_generation gauge", f"portal_testenv_generation {int(spec.get('generation', 0))}"]
    return "\n".join(lines) + "\n"


def make_server(port: int, spec_path: Path | None, sample: Path) -> ThreadingHTTPServer:
    families = parse_sample(sample.read_text())

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self._send(200, LANDING, "text/html; charset=utf-8")
                return
            spec = None
            if spec_path is not None and spec_path.exists():
                spec = json.loads(spec_path.read_text())
            self._send(200, render(families, spec).encode(), "text/plain; version=0.0.4; charset=utf-8")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self._send(200, LANDING, "text/html; charset=utf-8")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="A dcgm-exporter stand-in for tests (binds 127.0.0.1).")
    parser.add_argument("port", type=int)
    parser.add_argument("spec", nargs="?", type=Path)
    parser.add_argument("--sample", type=Path, default=HERE / "dcgm-sample.prom")
    args = parser.parse_args(argv)
    server = make_server(args.port, args.spec, args.sample)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
