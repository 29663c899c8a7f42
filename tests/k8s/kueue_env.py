"""Kueue on the test control plane: the real controller (built by testenv/build-kueue.sh) run out of cluster
against the session's apiserver, as docs/k8s-testenv.md describes. Started on demand by the `kueue` fixture."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.k8s.conftest import TESTENV, Cluster, _unavailable

KUEUE_VERSION = os.environ.get("KUEUE_VERSION", "0.19.2")
# Kueue reads these two certificate folders from fixed paths when its own certificate manager is off.
METRICS_CERTS = Path("/etc/kueue/metrics/certs")
VISIBILITY_CERTS = Path("/visibility")


@dataclass
class KueueEnv:
    visibility_url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _self_signed(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(folder / "tls.key"), "-out", str(folder / "tls.crt"))


def _signed_by_cluster_ca(folder: Path, pki: Path) -> None:
    """The visibility server's certificate, signed by the cluster's CA so the portal verifies it with the CA of
    its kubeconfig, as it would through the apiserver."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", str(folder / "tls.key"),
             "-out", str(folder / "tls.csr"))
    _openssl("x509", "-req", "-in", str(folder / "tls.csr"), "-CA", str(pki / "ca.crt"), "-CAkey",
             str(pki / "ca.key"), "-CAcreateserial", "-days", "30", "-extfile", str(ext), "-out",
             str(folder / "tls.crt"))


def _config(workdir: Path, ports: dict[str, int]) -> Path:
    path = workdir / "kueue-config.yaml"
    path.write_text(f"""apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
health: {{healthProbeBindAddress: "127.0.0.1:{ports['health']}"}}
metrics: {{bindAddress: "127.0.0.1:{ports['metrics']}"}}
webhook: {{host: 127.0.0.1, port: {ports['webhook']}, certDir: {workdir / 'webhook-certs'}}}
leaderElection: {{leaderElect: false}}
internalCertManagement: {{enable: false}}
visibilityServer: {{bindAddress: 127.0.0.1, bindPort: {ports['visibility']}}}
manageJobsWithoutQueueName: false
integrations: {{frameworks: [batch/job]}}
""")
    return path


def kueue_binary() -> Path:
    """The cached build (testenv/build.sh, which the `cluster` fixture runs, builds it too: ~10 minutes cold).
    A build that fails skips the Kueue tests with one line, and fails them under CI=true."""
    try:
        done = subprocess.run([str(TESTENV / "build-kueue.sh")], check=True, capture_output=True, text=True,
                              timeout=3600)
    except subprocess.CalledProcessError as exc:
        _unavailable(f"Kueue {KUEUE_VERSION} could not be built (testenv/build-kueue.sh): {exc.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def with_crds(cluster: Cluster) -> Path:
    """The built Kueue, its CRDs applied to the cluster and established: the folder of both."""
    built = kueue_binary()
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(built / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(built / "crds"))
    cluster.kubectl("create", "namespace", "kueue-system", check=False)
    return built


@pytest.fixture(scope="module")
def kueue(cluster: Cluster) -> Iterator[KueueEnv]:
    built = with_crds(cluster)
    workdir = cluster.kubeconfig.parent / "kueue"
    workdir.mkdir(exist_ok=True)
    try:
        _self_signed(workdir / "webhook-certs")
        _self_signed(METRICS_CERTS)
        _signed_by_cluster_ca(VISIBILITY_CERTS, cluster.kubeconfig.parent / "pki")
    except (OSError, subprocess.CalledProcessError) as exc:
        _unavailable(f"Kueue's certificates could not be written (it reads them from {METRICS_CERTS} and "
                     f"{VISIBILITY_CERTS}): {exc}")
    ports = {name: _free_port() for name in ("health", "metrics", "webhook", "visibility")}
    log = workdir / "kueue.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(built / "kueue"), f"--kubeconfig={cluster.kubeconfig}",
                                 f"--config={_config(workdir, ports)}"], stdout=out, stderr=out,
                                start_new_session=True)
    try:
        wait_ready(proc, ports["health"], log)
        yield KueueEnv(visibility_url=f"https://127.0.0.1:{ports['visibility']}", log=log)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Kueue ended as a Deployment's rollout ends it (SIGTERM), killed if it does not stop within 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_ready(proc: subprocess.Popen[bytes], health_port: int, log: Path) -> None:
    """Until Kueue's readiness probe answers (its caches synced, its controllers started)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"Kueue did not become ready: {log.read_text()[-3000:]}")
        time.sleep(0.5)


def pending_in_kueue(cluster: Cluster, env: KueueEnv, namespace: str, queue: str) -> list[str]:
    """Kueue's own answer (its visibility API, with the admin's client certificate): the names of the Jobs waiting
    in a LocalQueue, next to be admitted first."""
    import json
    import ssl

    pki = cluster.kubeconfig.parent / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    url = (f"{env.visibility_url}/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/{namespace}/localqueues/"
           f"{queue}/pendingworkloads")
    with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
        items = json.loads(resp.read())["items"]
    items.sort(key=lambda item: item["positionInLocalQueue"])
    return [ref["name"] for item in items for ref in item["metadata"]["ownerReferences"] if ref["kind"] == "Job"]
