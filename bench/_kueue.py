"""For the queue benches: the session's own test control plane (testenv/start.sh NAME) with a real Kueue run out of
cluster against it, as tests/k8s/kueue_env.py starts it, and one team's ClusterQueue and LocalQueue.

Kueue reads its certificates from fixed paths (/visibility, /etc/kueue/metrics/certs) that another session's Kueue
may be reading at the same moment: this one runs in a private mount namespace (`unshare -m`) where its own folders
are bound over those paths, so nobody else's Kueue sees its certificates change.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _common import ROOT

sys.path.insert(0, str(ROOT))
from tests.k8s.conftest import Cluster
from tests.k8s.kueue_env import (
    METRICS_CERTS,
    VISIBILITY_CERTS,
    _config,
    _free_port,
    _self_signed,
    _signed_by_cluster_ca,
    stop,
    wait_ready,
    with_crds,
)

CLUSTER_NAME = os.environ.setdefault("PORTAL_TESTENV_CLUSTER", "qbench")
FLAVOR = ROOT / "manifests" / "components" / "kueue" / "resourceflavor.yaml"
PRIORITIES = ROOT / "manifests" / "components" / "kueue" / "priorityclasses.yaml"


@dataclass
class QueueEnv:
    cluster: Cluster
    namespace: str
    queue: str
    visibility_url: str
    log: Path

    def kueue_get(self, path: str) -> str:
        """A GET at Kueue's own (visibility) server with the admin's client certificate."""
        import ssl

        pki = self.cluster.kubeconfig.parent / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        with urllib.request.urlopen(f"{self.visibility_url}{path}", context=ctx, timeout=10) as resp:
            return resp.read().decode()


def start_cluster() -> Cluster:
    bin_dir = subprocess.run([str(ROOT / "testenv" / "build.sh")], check=True, capture_output=True, text=True,
                             timeout=3600).stdout.strip().splitlines()[-1]
    kubeconfig = subprocess.run([str(ROOT / "testenv" / "start.sh"), CLUSTER_NAME], check=True, capture_output=True,
                                text=True, timeout=600).stdout.strip().splitlines()[-1]
    return Cluster(Path(kubeconfig), Path(bin_dir))


def request_counts(metrics: str) -> dict[tuple[str, str], float]:
    """An API server's own counters (apiserver_request_total, in the Prometheus text of its /metrics) summed by
    (verb, resource[/subresource]): the kube-apiserver's, or Kueue's visibility server's (the same library)."""
    out: dict[tuple[str, str], float] = {}
    for line in metrics.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        key = (labels.get("verb", ""), resource or labels.get("path", "?"))
        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


@contextmanager
def kueue_queue(cluster: Cluster, gpus: int, *, strategy: str = "BestEffortFIFO") -> Iterator[QueueEnv]:
    """Kueue running, a ClusterQueue of `gpus` GPUs (the flavor and priorities of manifests/components/kueue),
    a fresh namespace with its LocalQueue; all removed again afterwards."""
    built = with_crds(cluster)
    workdir = cluster.kubeconfig.parent / "kueue-bench"
    workdir.mkdir(exist_ok=True)
    _self_signed(workdir / "webhook-certs")
    _self_signed(workdir / "metrics-certs")
    _signed_by_cluster_ca(workdir / "visibility-certs", cluster.kubeconfig.parent / "pki")
    ports = {name: _free_port() for name in ("health", "metrics", "webhook", "visibility")}
    log = workdir / "kueue.log"
    inner = " && ".join([
        f"mkdir -p {METRICS_CERTS} {VISIBILITY_CERTS}",
        f"mount --bind {shlex.quote(str(workdir / 'metrics-certs'))} {METRICS_CERTS}",
        f"mount --bind {shlex.quote(str(workdir / 'visibility-certs'))} {VISIBILITY_CERTS}",
        f"exec {shlex.quote(str(built / 'kueue'))} --kubeconfig={shlex.quote(str(cluster.kubeconfig))} "
        f"--config={shlex.quote(str(_config(workdir, ports)))}"])
    with open(log, "ab") as out:
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", inner], stdout=out,
                                stderr=out, start_new_session=True)
    ns = f"qbench-{uuid.uuid4().hex[:6]}"
    cq = f"qbench-{uuid.uuid4().hex[:4]}"
    try:
        wait_ready(proc, ports["health"], log)
        for path in (FLAVOR, PRIORITIES):
            cluster.kubectl("apply", "-f", str(path))
        cluster.kubectl("create", "namespace", ns)
        objects = [
            {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": cq},
             "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                      "queueingStrategy": strategy, "preemption": {"withinClusterQueue": "LowerPriority"},
                      "resourceGroups": [{"coveredResources": ["cpu", "memory", "nvidia.com/gpu"], "flavors": [
                          {"name": "h100", "resources": [{"name": "cpu", "nominalQuota": "256"},
                                                         {"name": "memory", "nominalQuota": "2Ti"},
                                                         {"name": "nvidia.com/gpu", "nominalQuota": str(gpus)}]}]}]}},
            {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
             "metadata": {"name": "team", "namespace": ns}, "spec": {"clusterQueue": cq}}]
        manifest = workdir / f"{ns}.json"
        manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        cluster.kubectl("apply", "-f", str(manifest))
        yield QueueEnv(cluster, ns, "team", f"https://127.0.0.1:{ports['visibility']}", log)
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        cluster.kubectl("delete", "clusterqueue", cq, "--wait=false", check=False)
        stop(proc)
