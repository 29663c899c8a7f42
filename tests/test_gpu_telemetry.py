"""GPU telemetry against a real Prometheus scraping a DCGM exporter stand-in (tests/gpu_telemetry_env.py),
and NVML where this machine has a GPU."""

from __future__ import annotations

import ctypes.util
import datetime
import ipaddress
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.config import Settings
from services.gpu_telemetry import (
    GpuReading,
    NvmlTelemetry,
    PrometheusTelemetry,
    TelemetryError,
    make_telemetry,
    pod_regex,
    process_tree,
)
from tests.gpu_telemetry_env import PrometheusEnv, free_port, gpu, prometheus_binary

# bcrypt hash of "portal-test-password" (Prometheus's web config wants bcrypt; made once with crypt(3)).
BASIC_AUTH_HASH = "$2b$05$abcdefghijklmnopqrstuuW531E9tGwpmPMOLHihUVIs1kK2onVN2"


def _require_prometheus() -> str:
    binary = prometheus_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide Debian's prometheus (/usr/bin/prometheus): `make prometheus` installs it")
        pytest.skip("prometheus is not installed (`make prometheus`), so the GPU telemetry tests cannot run")
    return binary


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusEnv]:
    env = PrometheusEnv(tmp_path_factory.mktemp("prometheus"), binary=_require_prometheus()).start()
    try:
        yield env
    finally:
        env.stop()


def telemetry(url: str, **settings: object) -> PrometheusTelemetry:
    return PrometheusTelemetry(Settings(prometheus_url=url, **settings))  # type: ignore[arg-type]


def pod(namespace: str, name: str, *gpus: dict, hostname: str = "gpu-node-0") -> dict:
    return {"namespace": namespace, "pod": name, "hostname": hostname, "gpus": list(gpus)}


# Readings ------------------------------------------------------------------------------------------------


def test_engine_active_is_preferred_converted_to_percent_and_memory_summed(prom: PrometheusEnv) -> None:
    prom.set_gpus([pod("team-a", "mlp-7-abcde", gpu(util=100, engine=0.9, fb_mib=40000),
                       gpu(util=100, engine=0.4, fb_mib=20000))])
    readings = telemetry(prom.url).read("team-a", {7: "mlp-7"})
    assert readings.keys() == {7}
    r = readings[7]
    assert r.util_percent == pytest.approx(65.0)  # mean of 90 % and 40 %, not DCGM_FI_DEV_GPU_UTIL's 100
    assert r.memory_used_mib == pytest.approx(60000)
    # The same GPUs also come through the second scrape job (exported_* labels): counted once, not twice.
    assert r.gpus_seen == 2


def test_falls_back_to_gpu_util_for_a_job_without_profiling_series(prom: PrometheusEnv) -> None:
    prom.set_gpus([pod("team-a", "mlp-7-abcde", gpu(util=100, engine=0.9, fb_mib=1000)),
                   pod("team-a", "mlp-8-xyz12", gpu(util=5))])
    readings = telemetry(prom.url).read("team-a", {7: "mlp-7", 8: "mlp-8"})
    assert readings[7].util_percent == pytest.approx(90.0)
    assert readings[8] == GpuReading(util_percent=5.0, memory_used_mib=None, gpus_seen=1)


def test_a_job_over_several_pods_and_nodes_is_averaged_over_all_its_gpus(prom: PrometheusEnv) -> None:
    prom.set_gpus([
        pod("team-a", "mlp-9-0-k2j4d", gpu(engine=0.8, fb_mib=10000), gpu(engine=0.6, fb_mib=11000)),
        pod("team-a", "mlp-9-1-p9x7c", gpu(engine=0.2, fb_mib=12000), gpu(engine=0.0, fb_mib=13000),
            hostname="gpu-node-1"),
    ])
    r = telemetry(prom.url).read("team-a", {9: "mlp-9"})[9]
    assert r.util_percent == pytest.approx(40.0)
    assert r.memory_used_mib == pytest.approx(46000)
    assert r.gpus_seen == 4


def test_job_name_prefixes_do_not_capture_other_jobs(prom: PrometheusEnv) -> None:
    prom.set_gpus([pod("team-a", "mlp-1-aaaaa", gpu(util=10, fb_mib=100)),
                   pod("team-a", "mlp-12-bbbbb", gpu(util=90, fb_mib=900)),
                   pod("team-a", "mlp-123-ccccc", gpu(util=50, fb_mib=500))])
    readings = telemetry(prom.url).read("team-a", {1: "mlp-1", 12: "mlp-12"})
    assert readings == {1: GpuReading(10.0, 100.0, 1), 12: GpuReading(90.0, 900.0, 1)}
    # A regex character in a name is literal: "job.3" must not match the pod "jobx3-…".
    prom.set_gpus([pod("team-a", "jobx3-aaaaa", gpu(util=10))])
    assert telemetry(prom.url).read("team-a", {3: "job.3"}) == {}


def test_the_namespace_is_respected(prom: PrometheusEnv) -> None:
    prom.set_gpus([pod("team-a", "mlp-5-aaaaa", gpu(util=11)), pod("team-b", "mlp-5-aaaaa", gpu(util=77))])
    t = telemetry(prom.url)
    assert t.read("team-a", {5: "mlp-5"})[5].util_percent == pytest.approx(11.0)
    assert t.read("team-b", {5: "mlp-5"})[5].util_percent == pytest.approx(77.0)
    assert t.read("team-c", {5: "mlp-5"}) == {}


def test_a_job_without_series_is_absent(prom: PrometheusEnv) -> None:
    prom.set_gpus([pod("team-a", "mlp-7-abcde", gpu(util=30, fb_mib=1))], idle_gpus=3)
    readings = telemetry(prom.url).read("team-a", {7: "mlp-7", 99: "mlp-99"})
    assert set(readings) == {7}
    assert telemetry(prom.url).read("team-a", {}) == {}


def test_exported_labels_behind_an_operator_managed_prometheus(prom: PrometheusEnv) -> None:
    prom.set_gpus([pod("team-a", "mlp-7-abcde", gpu(engine=0.5, fb_mib=2048), gpu(engine=0.7, fb_mib=2048))])
    t = telemetry(prom.url, prometheus_pod_label="exported_pod", prometheus_namespace_label="exported_namespace")
    assert t.read("team-a", {7: "mlp-7"}) == {7: GpuReading(60.0, 4096.0, 2)}


def _settled_request_count(prom: PrometheusEnv) -> float:
    # Prometheus counts a request after writing its answer: wait until the counter stops moving.
    last = prom.query_requests_total()
    while True:
        time.sleep(0.2)
        now = prom.query_requests_total()
        if now == last:
            return now
        last = now


def test_the_number_of_queries_per_read_does_not_grow_with_the_jobs(prom: PrometheusEnv) -> None:
    pods = [pod("team-a", f"mlp-{i}-abcde", gpu(util=100, engine=(i - 100) / 100, fb_mib=i)) for i in range(100, 120)]
    prom.set_gpus(pods)
    t = telemetry(prom.url)
    counts = {}
    for n in (1, 20):
        before = _settled_request_count(prom)
        readings = t.read("team-a", {i: f"mlp-{i}" for i in range(100, 100 + n)})
        counts[n] = _settled_request_count(prom) - before
        assert len(readings) == n
    assert counts == {1: 3, 20: 3}
    assert readings[119].util_percent == pytest.approx(19.0)
    assert pod_regex(["mlp-12", "mlp-13"]) == "mlp-12-.*|mlp-13-.*"


# Errors ----------------------------------------------------------------------------------------------------


def _message(t: PrometheusTelemetry) -> str:
    with pytest.raises(TelemetryError) as info:
        t.read("team-a", {7: "mlp-7"})
    message = str(info.value)
    assert "Traceback" not in message and "\n" not in message and message.endswith((".", ")", "?"))
    return message


def test_nothing_listening_is_a_sentence() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert _message(telemetry(url)) == f"Prometheus at {url} refused the connection: nothing listens there."


def test_something_that_is_not_prometheus_is_a_sentence(prom: PrometheusEnv) -> None:
    message = _message(telemetry(prom.exporter_url))  # the exporter answers HTML to anything but /metrics
    assert message.startswith(f"Prometheus at {prom.exporter_url} did not answer like Prometheus")
    assert "404" in _message(telemetry(prom.url + "/no/such/prefix"))


def test_a_query_prometheus_rejects_is_a_sentence(prom: PrometheusEnv) -> None:
    with pytest.raises(TelemetryError, match=r"could not run the query \(400\): .*parse error"):
        telemetry(prom.url).query("DCGM_FI_DEV_GPU_UTIL{")


def test_a_url_without_scheme_is_a_sentence_at_read_time() -> None:
    with pytest.raises(TelemetryError, match="must start with http:// or https://"):
        telemetry("prometheus:9090").read("ns", {1: "mlp-1"})


def _self_signed(dirpath: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prometheus.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = dirpath / "tls.crt", dirpath / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_ca_file_and_tokens_against_a_secured_prometheus(tmp_path: Path) -> None:
    binary = _require_prometheus()
    cert, key = _self_signed(tmp_path)
    web = tmp_path / "web.yml"
    tls = f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
    web.write_text(tls)
    env = PrometheusEnv(tmp_path / "prom", binary=binary, web_config=web, scrape=False).start()
    try:
        assert env.url.startswith("https://")
        # The service CA is not the system's: without the CA file, the certificate is refused.
        message = _message(telemetry(env.url))
        assert "certificate that could not be verified" in message and "PORTAL_PROMETHEUS_CA_FILE" in message
        assert "cannot be read" in _message(telemetry(env.url, prometheus_ca_file=str(tmp_path / "missing.crt")))
        # With it, a query goes through (no series: nothing is scraped).
        assert telemetry(env.url, prometheus_ca_file=str(cert)).read("team-a", {7: "mlp-7"}) == {}

        # The web config is re-read on every request: now Prometheus wants credentials.
        web.write_text(tls + f"basic_auth_users:\n  portal: {BASIC_AUTH_HASH}\n")
        secure = {"prometheus_ca_file": str(cert)}
        assert _message(telemetry(env.url, **secure)) == (
            f"Prometheus at {env.url} asks for credentials (401) and no token is set "
            "(PORTAL_PROMETHEUS_TOKEN or PORTAL_PROMETHEUS_TOKEN_FILE).")
        assert _message(telemetry(env.url, prometheus_token="wrong", **secure)) == (
            f"Prometheus at {env.url} refused the token (401): it is not valid there.")
        token_file = tmp_path / "token"
        token_file.write_text("also-wrong\n")
        assert "refused the token (401)" in _message(telemetry(env.url, prometheus_token_file=str(token_file),
                                                                **secure))
        missing = tmp_path / "no-token"
        assert _message(telemetry(env.url, prometheus_token_file=str(missing), **secure)) == (
            f"The Prometheus token file {missing} cannot be read (No such file or directory).")
    finally:
        env.stop()


# Choice of source and NVML -----------------------------------------------------------------------------------


def test_make_telemetry_picks_the_source_by_backend(prom: PrometheusEnv) -> None:
    assert isinstance(make_telemetry(Settings(prometheus_url=prom.url), "kubernetes"), PrometheusTelemetry)
    assert make_telemetry(Settings(prometheus_url=""), "kubernetes") is None
    local = make_telemetry(Settings(prometheus_url=prom.url), "local")
    assert local is None if not NvmlTelemetry().available() else isinstance(local, NvmlTelemetry)


def test_nvml_is_unavailable_without_a_gpu_and_that_is_not_an_error() -> None:
    nvml = NvmlTelemetry()
    if nvml.available():
        pytest.skip("this machine has an NVIDIA GPU: the no-GPU path is not what it shows")
    assert nvml.read({1: [os.getpid()]}) == {}
    assert make_telemetry(Settings(), "local") is None
    nvml.close()


CUDA_HOLDER = textwrap.dedent("""
    import ctypes, sys, time
    cuda = ctypes.CDLL("libcuda.so.1")
    ctx, ptr = ctypes.c_void_p(), ctypes.c_uint64()
    assert cuda.cuInit(0) == 0
    dev = ctypes.c_int()
    assert cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
    assert cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev) == 0
    assert cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(512 * 2**20)) == 0
    print("ready", flush=True)
    sys.stdin.read()
""")


def test_nvml_reads_the_gpu_a_local_process_tree_uses() -> None:
    nvml = NvmlTelemetry()
    if not nvml.available() or not ctypes.util.find_library("cuda"):
        pytest.skip("no NVIDIA GPU and driver on this machine: the NVML reading is checked where there is one")
    # A parent (the "runner") whose child holds 512 MiB on GPU 0 through the CUDA driver API.
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", {CUDA_HOLDER!r}], stdin=sys.stdin, stdout=sys.stdout)
        child.wait()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        pids = process_tree(parent.pid)
        assert len(pids) == 2
        deadline = time.monotonic() + 10
        while not (readings := nvml.read({1: pids, 2: [parent.pid]})) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(readings) == {1}, f"NVML did not list the process (pid namespace?): {readings}"
        r = readings[1]
        assert r.gpus_seen == 1
        assert r.memory_used_mib is None or r.memory_used_mib >= 512
        assert r.util_percent is None or 0 <= r.util_percent <= 100
    finally:
        assert parent.stdin is not None
        parent.stdin.close()
        parent.wait(timeout=30)
        nvml.close()


class _FakeNvml:
    """NVML's Python surface with two GPUs, for the aggregation logic only (the real library needs a driver;
    the test above reads a real GPU where there is one)."""

    class NVMLError(Exception):
        pass

    class Proc:
        def __init__(self, pid: int, mib: int | None):
            self.pid, self.usedGpuMemory = pid, None if mib is None else mib * 2**20

    class Util:
        def __init__(self, gpu: int):
            self.gpu = gpu

    def __init__(self) -> None:
        self.compute = {0: [self.Proc(100, 1000), self.Proc(200, 300)], 1: [self.Proc(101, 2000)],
                        2: "error"}
        self.graphics = {0: [self.Proc(100, 1000)], 1: [], 2: []}
        self.util = {0: 80, 1: "error", 2: 50}

    def nvmlDeviceGetCount(self) -> int:
        return 3

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def _get(self, table: dict, i: int):
        if table[i] == "error":
            raise self.NVMLError("not supported")
        return table[i]

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list:
        return self._get(self.compute, h)

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list:
        return self._get(self.graphics, h)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Util:
        return self.Util(self._get(self.util, h))


def test_nvml_aggregation_over_a_process_tree() -> None:
    nvml = NvmlTelemetry()
    nvml._nvml, nvml._tried = _FakeNvml(), True
    readings = nvml.read({1: [100, 101, 102], 2: [200], 3: [300]})
    # Job 1: pid 100 on GPU 0 (listed as compute and graphics: counted once), pid 101 on GPU 1 whose
    # utilisation NVML cannot give; GPU 2 fails to list processes and is skipped.
    assert readings[1] == GpuReading(util_percent=80.0, memory_used_mib=3000.0, gpus_seen=2)
    assert readings[2] == GpuReading(util_percent=80.0, memory_used_mib=300.0, gpus_seen=1)
    assert 3 not in readings
    nvml._nvml, nvml._tried = None, False
