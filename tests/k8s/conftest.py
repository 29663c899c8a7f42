"""The Kubernetes test control plane (testenv/): a real kube-apiserver, etcd, controller-manager and
scheduler with KWOK-simulated GPU nodes, started once per test session on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from services.config import Settings
from services.portal import Portal, build_portal

ROOT = Path(__file__).resolve().parents[2]
TESTENV = ROOT / "testenv"
LOGS_DIR = Path(os.environ.get("PORTAL_TESTENV_LOGS", "/var/tmp/ml-portal-kwok-logs"))
# Another name gives a session its own control plane (a test that restarts the apiserver disturbs no one else).
CLUSTER = os.environ.get("PORTAL_TESTENV_CLUSTER", "portal-it")


class Cluster:
    def __init__(self, kubeconfig: Path, bin_dir: Path):
        self.kubeconfig = kubeconfig
        self.bin = bin_dir
        self._started: dict[str, subprocess.Popen[bytes]] = {}

    def kubectl(self, *args: str, check: bool = True) -> str:
        out = subprocess.run([str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                             capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def apiserver_pid(self) -> int:
        return int((self.kubeconfig.parent / "pids" / "kube-apiserver.pid").read_text().strip())

    @contextmanager
    def apiserver_down(self) -> Iterator[None]:
        """The kube-apiserver killed (SIGTERM, as a crash-restart or an upgrade does) for the block, then started
        again with its own command line, log and pid file (so stop.sh still ends it); back when it is ready."""
        with self.down("kube-apiserver"):
            yield

    @contextmanager
    def down(self, component: str) -> Iterator[None]:
        """One component of the control plane (kube-apiserver, etcd, kube-controller-manager, kube-scheduler,
        kwok-controller) killed for the block and started again as it was."""
        pid = int((self.kubeconfig.parent / "pids" / f"{component}.pid").read_text().strip())
        argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        cwd = os.readlink(f"/proc/{pid}/cwd")
        ports = [c.laddr for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
        os.kill(pid, signal.SIGTERM)
        ours = self._started.pop(component, None)  # started by an earlier block: ours to reap
        if ours is not None and ours.pid == pid:
            try:
                ours.wait(30)
            except subprocess.TimeoutExpired:
                ours.kill()
                ours.wait()
        else:
            deadline = time.monotonic() + 30
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        # Its ports are held while it is down, so that a cluster another session creates meanwhile cannot take them.
        held = [_hold(addr.ip, addr.port) for addr in ports]
        try:
            yield
        finally:
            for sock in held:
                if sock is not None:
                    sock.close()
            with open(self.kubeconfig.parent / "logs" / f"{component}.log", "ab") as log:
                proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=log, start_new_session=True)
            (self.kubeconfig.parent / "pids" / f"{component}.pid").write_text(f"{proc.pid}\n")
            self._started[component] = proc
            deadline = time.monotonic() + 60
            while self.kubectl("get", "--raw", "/readyz", "--request-timeout=2s", check=False).strip() != "ok":
                if time.monotonic() > deadline:
                    raise AssertionError(f"the control plane did not answer within 60 s of starting {component}")
                time.sleep(0.3)

    def kwokctl(self, *args: str) -> None:
        env = dict(os.environ, KWOK_WORKDIR=os.environ.get("KWOK_WORKDIR", "/var/tmp/ml-portal-kwok"))
        subprocess.run([str(self.bin / "kwokctl"), *args, "--name", CLUSTER], check=True, env=env, timeout=180,
                       capture_output=True)


class _PortHold:
    """A port kept while its component is down: listening, so that no other cluster's component can bind it
    meanwhile (kwokctl picks free ports), and resetting every connection at once, so that a client fails
    as it would against a dead process."""

    def __init__(self, ip: str, port: int):
        self.sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the old one's TIME_WAITs are no owners
        self.sock.bind((ip, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._refuse, daemon=True)
        self._thread.start()

    def _refuse(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
            conn.close()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(2)
        self.sock.close()


def _hold(ip: str, port: int) -> _PortHold | None:
    try:
        return _PortHold(ip, port)
    except OSError:  # taken already: the restart will say so
        return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the Kubernetes tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if shutil.which("go") is None:
        _unavailable("Go is not installed, so the Kubernetes test control plane cannot be built")
    try:
        bin_dir = Path(subprocess.run([str(TESTENV / "build.sh")], check=True, capture_output=True, text=True,
                                      timeout=3600).stdout.strip().splitlines()[-1])
        kubeconfig = Path(subprocess.run([str(TESTENV / "start.sh"), CLUSTER], check=True, capture_output=True,
                                         text=True, timeout=600).stdout.strip().splitlines()[-1])
    except subprocess.CalledProcessError as exc:
        _unavailable(f"the test control plane did not start: {exc.stderr[-2000:]}")
    c = Cluster(kubeconfig, bin_dir)
    yield c
    if not os.environ.get("PORTAL_TESTENV_KEEP"):
        subprocess.run([str(TESTENV / "stop.sh"), CLUSTER], capture_output=True, timeout=120)


def recorded_example_output(epochs: int = 3) -> list[str]:
    """Real output of examples/train_example.py, which simulated pods serve as their log."""
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_example.py"), "--epochs", str(epochs),
                          "--seconds-per-epoch", "0", "--samples", "200"],
                         capture_output=True, text=True, check=True, timeout=60,
                         env=dict(os.environ, PORTAL_OUTPUT_DIR=str(LOGS_DIR / "example-output")))
    return out.stdout.splitlines()


def write_cri_log(path: Path, lines: list[str]) -> None:
    """The kubelet's CRI log format, which KWOK serves through the real pods/log API."""
    start = datetime.now(UTC) - timedelta(seconds=len(lines))
    with open(path, "w") as fh:
        for i, line in enumerate(lines):
            ts = (start + timedelta(milliseconds=10 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            fh.write(f"{ts} stdout F {line}\n")


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    LOGS_DIR.mkdir(parents=True, exist_ok=True)
    log_file = LOGS_DIR / f"{ns}.log"
    write_cri_log(log_file, recorded_example_output())
    manifest = LOGS_DIR / f"{ns}-logs.yaml"
    manifest.write_text(
        "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterLogs\n"
        f"metadata: {{name: logs-{ns}}}\n"
        f"spec:\n  selector: {{matchNamespaces: [\"{ns}\"]}}\n"
        f"  logs:\n  - containers: [main]\n    logsFile: {log_file}\n"
    )
    cluster.kubectl("apply", "-f", str(manifest))
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    cluster.kubectl("delete", "clusterlogs", f"logs-{ns}", "--wait=false", check=False)


def k8s_settings(cluster: Cluster, namespace: str, data_dir: Path, **overrides) -> Settings:
    values = {"data_dir": data_dir, "backend": "kubernetes", "kubeconfig": str(cluster.kubeconfig),
              "namespace": namespace, "sync_interval_seconds": 0.5, "kube_request_timeout_seconds": 5,
              "max_gpus_per_node": 16} | overrides
    return Settings(**values)


@pytest.fixture
def k8s_portal(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Portal]:
    portal = build_portal(k8s_settings(cluster, namespace, tmp_path / "portal-data"))
    yield portal
    portal.close()


MANIFESTS = ROOT / "manifests"


def render_manifests(cluster: Cluster, workdir: Path, target: str, namespace: str,
                     components: tuple[str, ...] = ()) -> Path:
    """`kubectl kustomize` of an overlay placed in `namespace`, the way an admin sets their namespace."""
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "namespace": namespace, "resources": [os.path.relpath(MANIFESTS / target, workdir)]}
    if components:
        kustomization["components"] = [os.path.relpath(MANIFESTS / c, workdir) for c in components]
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    out = workdir / "rendered.yaml"
    out.write_text(cluster.kubectl("kustomize", str(workdir)))
    return out


def service_account_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig holding only a token of `account`, as the portal's pod has (TokenRequest API)."""
    import yaml

    token = cluster.kubectl("-n", namespace, "create", "token", account, "--duration=2h").strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "portal",
        "clusters": [{"name": "test", "cluster": server}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "portal", "context": {"cluster": "test", "user": account, "namespace": namespace}}],
    }))
    return path


@pytest.fixture
def deployed(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """The kubernetes overlay applied to a namespace that enforces Pod Security "restricted"; returns a
    kubeconfig with the portal ServiceAccount's own token."""
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")
    rendered = render_manifests(cluster, tmp_path / "deploy", "overlays/kubernetes", namespace)
    # The test cluster has no storage provisioner: a volume for the data claim, as a storage class would make.
    volume = tmp_path / "pv.json"
    volume.write_text(json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"data-{namespace}"},
        "spec": {"capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": f"/var/tmp/ml-portal-kwok-volumes/{namespace}"},
                 "claimRef": {"namespace": namespace, "name": "ml-portal-data"},
                 "persistentVolumeReclaimPolicy": "Delete"}}))
    cluster.kubectl("apply", "-f", str(volume))
    cluster.kubectl("apply", "-f", str(rendered))
    try:
        cluster.kubectl("-n", namespace, "rollout", "status", "deployment/ml-portal", "--timeout=90s")
        yield service_account_kubeconfig(cluster, namespace, "ml-portal", tmp_path / "portal-sa.kubeconfig")
    finally:
        cluster.kubectl("delete", "persistentvolume", f"data-{namespace}", "--wait=false", check=False)
