"""GPU utilisation and memory of running jobs.

Cluster jobs: the NVIDIA DCGM exporter's series in Prometheus (or OpenShift's Thanos Querier), read with a
constant number of instant queries per call however many jobs run. Local jobs: NVML (``nvidia-ml-py``) on
this machine, matched to the job's process tree. Never imports streamlit.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.config import Settings
from services.promql import job_for_pod, pod_regex, pod_selector, sample_value, sorted_names

ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"  # 0..1 ratio (profiling metric; not on every GPU)
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # 0..100 %
FB_USED = "DCGM_FI_DEV_FB_USED"  # MiB
MAX_RESPONSE_BYTES = 32 * 1024 * 1024


class TelemetryError(Exception):
    """Reading GPU (or CPU and memory) metrics failed; ``str(exc)`` is one sentence for a person."""


@dataclass(frozen=True)
class GpuReading:
    util_percent: float | None  # mean over the job's GPUs; None: no utilisation series
    memory_used_mib: float | None  # sum over the job's GPUs; None: no memory series
    gpus_seen: int  # GPUs (series) found for the job


# Prometheus --------------------------------------------------------------------------------------------------


def _gpu_identity(labels: dict[str, str]) -> tuple[str, ...]:
    """The GPU (or MIG instance) a series is about; without a UUID, the series' own labels."""
    if labels.get("UUID"):
        return (labels["UUID"], labels.get("GPU_I_ID", ""))
    return tuple(sorted(f"{k}={v}" for k, v in labels.items() if k not in ("job", "instance", "__name__")))



def _display_url(url: str) -> str:
    """The URL without credentials or query, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect (typically to a login page) is reported, not followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


class PrometheusTelemetry:
    """Reads DCGM exporter series for Kubernetes Jobs from Prometheus's HTTP API (``/api/v1/query``)."""

    def __init__(self, settings: Settings, timeout: float = 5.0) -> None:
        url = settings.prometheus_url.strip()
        # Reported by read(), where a caller handles TelemetryError anyway.
        self._config_error = ""
        if not url:
            self._config_error = "No Prometheus URL is set (PORTAL_PROMETHEUS_URL)."
        elif urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            self._config_error = f"The Prometheus URL must start with http:// or https://, not {url!r}."
        self.url = url.rstrip("/")
        self.display_url = _display_url(self.url)
        self.token = settings.prometheus_token
        self.token_file = settings.prometheus_token_file
        self.ca_file = settings.prometheus_ca_file
        self.pod_label = settings.prometheus_pod_label
        self.namespace_label = settings.prometheus_namespace_label
        self.timeout = timeout
        self._opener: urllib.request.OpenerDirector | None = None

    # HTTP ------------------------------------------------------------------------------------------------------
    def _build_opener(self) -> urllib.request.OpenerDirector:
        if self._opener is None:
            context = None
            if self.url.startswith("https://"):
                try:
                    context = ssl.create_default_context(cafile=self.ca_file or None)
                except (OSError, ssl.SSLError) as exc:
                    raise TelemetryError(
                        f"The CA file {self.ca_file} for Prometheus cannot be read ({_reason(exc)})."
                    ) from None
            self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect())
        return self._opener

    def _bearer_token(self) -> str:
        if self.token:
            return self.token.strip()
        if self.token_file:
            # Re-read each time: projected service-account tokens are rotated by the kubelet.
            try:
                return Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise TelemetryError(
                    f"The Prometheus token file {self.token_file} cannot be read ({_reason(exc)})."
                ) from None
        return ""

    def query(self, promql: str) -> list[dict[str, Any]]:
        """One instant query; the result vector. Raises TelemetryError with a sentence."""
        if self._config_error:
            raise TelemetryError(self._config_error)
        opener = self._build_opener()
        token = self._bearer_token()
        body = urllib.parse.urlencode({"query": promql}).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/query", data=body, method="POST")  # noqa: S310
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        request.add_header("Accept", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        where = f"Prometheus at {self.display_url}"
        try:
            with opener.open(request, timeout=self.timeout) as response:
                raw = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise TelemetryError(self._http_error_sentence(exc, bool(token))) from None
        except urllib.error.URLError as exc:
            raise TelemetryError(_connection_sentence(where, exc.reason, self.timeout)) from None
        except (TimeoutError, OSError) as exc:
            raise TelemetryError(_connection_sentence(where, exc, self.timeout)) from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise TelemetryError(f"{where} sent more than {MAX_RESPONSE_BYTES // 2**20} MiB for one query.")
        payload = _json_or_none(raw)
        if not isinstance(payload, dict) or "status" not in payload:
            raise TelemetryError(
                f"{where} did not answer like Prometheus (no JSON status): is that the Prometheus API's address?"
            )
        if payload["status"] != "success":
            raise TelemetryError(f"{where} could not run the query: {payload.get('error') or 'unknown error'}.")
        data = payload.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
            raise TelemetryError(f"{where} answered an instant query without a vector of series.")
        return [s for s in data["result"] if isinstance(s, dict)]

    def _http_error_sentence(self, exc: urllib.error.HTTPError, sent_token: bool) -> str:
        where = f"Prometheus at {self.display_url}"
        code = exc.code
        with contextlib.suppress(Exception):
            payload = _json_or_none(exc.read(64 * 1024))
            if isinstance(payload, dict) and payload.get("status") == "error" and payload.get("error"):
                return f"{where} could not run the query ({code}): {payload['error']}."
        if code in (401, 403):
            if not sent_token:
                return (f"{where} asks for credentials ({code}) and no token is set "
                        "(PORTAL_PROMETHEUS_TOKEN or PORTAL_PROMETHEUS_TOKEN_FILE).")
            if code == 401:
                return f"{where} refused the token ({code}): it is not valid there."
            return (f"{where} refused the token ({code}): its account may not read metrics "
                    "(on OpenShift it needs the cluster-monitoring-view cluster role).")
        if 300 <= code < 400:
            return (f"{where} redirected the query ({code}), typically to a login page: "
                    "the token is missing or the URL is not the API's.")
        if code == 404:
            return f"{where} has no /api/v1/query (404): is that the Prometheus API's address?"
        return f"{where} answered HTTP {code} ({exc.reason})."

    # Reading -------------------------------------------------------------------------------------------------
    def _selector(self, metric: str, namespace: str, regex: str) -> str:
        return pod_selector(metric, namespace, regex, self.namespace_label, self.pod_label)

    def read(self, namespace: str, jobs: dict[int, str]) -> dict[int, GpuReading]:
        """GPU readings of running Jobs: ``jobs`` maps job id → Kubernetes Job name. Three queries per call
        (none when ``jobs`` is empty); a job without any series is absent from the result."""
        if not jobs:
            return {}
        regex = pod_regex(list(jobs.values()))
        names = sorted_names(jobs)
        per_metric: dict[str, dict[int, list[float]]] = {}
        for metric in (ENGINE_ACTIVE, GPU_UTIL, FB_USED):
            grouped: dict[int, dict[tuple[str, ...], float]] = defaultdict(dict)
            for series in self.query(self._selector(metric, namespace, regex)):
                labels = series.get("metric") or {}
                job_id = job_for_pod(str(labels.get(self.pod_label, "")), names)
                value = sample_value(series)
                if job_id is not None and value is not None:
                    # One value per GPU even when two scrape jobs (or unmerged replicas) carry the same one.
                    grouped[job_id].setdefault(_gpu_identity(labels), value)
            per_metric[metric] = {job_id: list(values.values()) for job_id, values in grouped.items()}
        readings: dict[int, GpuReading] = {}
        for job_id in jobs:
            engine = per_metric[ENGINE_ACTIVE].get(job_id)
            util_series = [v * 100.0 for v in engine] if engine else per_metric[GPU_UTIL].get(job_id, [])
            memory = per_metric[FB_USED].get(job_id, [])
            if not util_series and not memory:
                continue
            readings[job_id] = GpuReading(
                util_percent=sum(util_series) / len(util_series) if util_series else None,
                memory_used_mib=float(sum(memory)) if memory else None,
                gpus_seen=max(len(util_series), len(memory)),
            )
        return readings


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _connection_sentence(where: str, reason: object, timeout: float) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (f"{where} presented a certificate that could not be verified ({reason.verify_message}); "
                "set PORTAL_PROMETHEUS_CA_FILE to the CA that signed it.")
    if isinstance(reason, ssl.SSLError):
        return f"{where} could not be reached over TLS ({reason.reason or reason})."
    if isinstance(reason, ConnectionRefusedError):
        return f"{where} refused the connection: nothing listens there."
    if isinstance(reason, TimeoutError):
        return f"{where} did not answer within {timeout:g} s."
    if isinstance(reason, OSError) and reason.__class__.__name__ == "gaierror":
        return f"{where} cannot be reached: its host name does not resolve."
    if isinstance(reason, BaseException):
        return f"{where} cannot be reached ({_reason(reason)})."
    return f"{where} cannot be reached ({reason})."


# NVML (local backend) ---------------------------------------------------------------------------------------


class NvmlTelemetry:
    """GPUs used by local jobs' processes, through NVML. ``available()`` is False without the library or
    driver. NVML is initialised once, on first use, and stays initialised until ``close()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._tried = False

    def _init(self) -> Any:
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    import pynvml  # optional at run time: a laptop may have no NVIDIA driver

                    pynvml.nvmlInit()
                except Exception:  # ImportError, NVMLError (no library, no driver), OSError
                    self._nvml = None
                else:
                    self._nvml = pynvml
            return self._nvml

    def available(self) -> bool:
        nvml = self._init()
        if nvml is None:
            return False
        try:
            return nvml.nvmlDeviceGetCount() > 0
        except nvml.NVMLError:
            return False

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                with contextlib.suppress(Exception):
                    self._nvml.nvmlShutdown()
            self._nvml, self._tried = None, False

    def read(self, jobs: dict[int, list[int]]) -> dict[int, GpuReading]:
        """GPU readings of local jobs: ``jobs`` maps job id → pids of its process tree. Utilisation is the
        device's (NVML has no per-process figure that every GPU supports), averaged over the GPUs the job's
        processes use; memory is what those processes hold. A job on no GPU is absent."""
        nvml = self._init()
        if nvml is None or not jobs:
            return {}
        owner = {pid: job_id for job_id, pids in jobs.items() for pid in pids}
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError:
            return {}
        devices: dict[int, set[int]] = defaultdict(set)  # job → device indices
        memory: dict[int, dict[tuple[int, int], int | None]] = defaultdict(dict)  # job → (device, pid) → bytes
        handles: dict[int, Any] = {}
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            except nvml.NVMLError:
                continue
            handles[index] = handle
            for lister in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
                try:
                    processes = lister(handle)
                except nvml.NVMLError:
                    continue
                for proc in processes:
                    job_id = owner.get(proc.pid)
                    if job_id is None:
                        continue
                    devices[job_id].add(index)
                    used = getattr(proc, "usedGpuMemory", None)
                    key = (index, proc.pid)
                    if memory[job_id].get(key) is None:
                        memory[job_id][key] = used if isinstance(used, int) else None
        utilisation: dict[int, float | None] = {}
        for index in {i for used in devices.values() for i in used}:
            try:
                utilisation[index] = float(nvml.nvmlDeviceGetUtilizationRates(handles[index]).gpu)
            except nvml.NVMLError:
                utilisation[index] = None
        readings: dict[int, GpuReading] = {}
        for job_id, used_devices in devices.items():
            utils = [u for i in used_devices if (u := utilisation.get(i)) is not None]
            known = [b for b in memory[job_id].values() if b is not None]
            readings[job_id] = GpuReading(
                util_percent=sum(utils) / len(utils) if utils else None,
                memory_used_mib=sum(known) / 2**20 if known else None,
                gpus_seen=len(used_devices),
            )
        return readings


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and its live descendants (a local job: the runner and the script's processes)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        return [root_pid, *(child.pid for child in root.children(recursive=True))]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


# Choice -----------------------------------------------------------------------------------------------------


def make_telemetry(settings: Settings, backend_name: str) -> PrometheusTelemetry | NvmlTelemetry | None:
    """Prometheus for the kubernetes backend when PORTAL_PROMETHEUS_URL is set; NVML for the local backend
    when a driver and GPU are there; otherwise None (GPU metrics not configured)."""
    if backend_name == "kubernetes" and settings.prometheus_url.strip():
        return PrometheusTelemetry(settings)
    if backend_name == "local":
        nvml = NvmlTelemetry()
        if nvml.available():
            return nvml
        nvml.close()
    return None
