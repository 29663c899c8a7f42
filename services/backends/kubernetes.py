"""Jobs on a Kubernetes or OpenShift cluster: batch/v1 Jobs, watched by one cache per process.

The watch caches are in k8s_watch.py, the pod-log archive in k8s_logs.py (a mixin of the backend), the
manifests in k8s_manifests.py and the reading of a Job's state in k8s_status.py."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from services.backends.base import ActiveJob, BackendError, JobSubmission, Observation, SubmitResult
from services.backends.k8s_checkpoint import PodCheckpoints
from services.backends.k8s_gpu_types import GpuTypes
from services.backends.k8s_kueue import Kueue
from services.backends.k8s_logs import PodLogArchive
from services.backends.k8s_manifests import (
    ANN_SUBMISSION,
    CONFIGMAP_MAX_BYTES,
    build_configmap,
    build_headless_service,
    build_job,
    job_name,
)
from services.backends.k8s_status import by_job, job_ended
from services.backends.k8s_status import observe as observe_job
from services.backends.k8s_template import apply_template
from services.backends.k8s_watch import WatchCache
from services.backends.unreachable import BackendUnreachable
from services.config import Settings
from services.logs import failure_tail
from services.models import ACTIVE_STATUSES, JobStatus
from services.queue_model import QueueStatus, QueueSummary

log = logging.getLogger(__name__)
SCRIPTKIT = Path(__file__).resolve().parent.parent / "scriptkit" / "portal_metrics.py"
LAUNCHER = SCRIPTKIT.with_name("portal_launch.py")  # the pod's command runs the script under it (Save checkpoint)


def load_api_client(settings: Settings) -> tuple[client.ApiClient, str]:
    """The API client and namespace: in-cluster config first, else the kubeconfig."""
    ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        config.load_incluster_config()
        api = client.ApiClient()
        namespace = settings.namespace or (ns_file.read_text().strip() if ns_file.exists() else "default")
        return api, namespace
    except config.ConfigException:
        pass
    path = settings.kubeconfig_path()
    if path is None:
        raise BackendError("No Kubernetes configuration: not in a cluster and no kubeconfig found.")
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=cfg)
    # One retry, not three: a user waiting on "Submit" learns about an outage in seconds.
    cfg.retries = 1
    api = client.ApiClient(cfg)
    namespace = settings.namespace
    if not namespace:
        _, active = config.list_kube_config_contexts(config_file=str(path))
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
    return api, namespace


def describe_api_error(exc: Exception) -> str:
    """One sentence for a person, whatever the client raised."""
    if isinstance(exc, ApiException):
        if exc.status in (401, 403):
            return "The portal is not allowed to do this in the cluster (its service account lacks a permission)."
        if exc.status == 422:
            try:
                return f"The cluster refused the job: {json.loads(exc.body).get('message', '')}"
            except (TypeError, ValueError):
                return "The cluster refused the job."
        return f"The cluster answered {exc.status} {exc.reason}."
    return "The cluster cannot be reached right now."


UNREACHABLE = "The cluster cannot be reached"
TRANSIENT_STATUSES = {0, 429, 502, 503, 504}  # overloaded, restarting or behind a proxy that lost it


def backend_error(exc: Exception) -> BackendError:
    """The sentence for a person, as an error that says whether asking again later may succeed."""
    if isinstance(exc, BackendError):
        return exc
    if not isinstance(exc, ApiException):
        return BackendUnreachable(UNREACHABLE)
    if exc.status in TRANSIENT_STATUSES:
        return BackendUnreachable(describe_api_error(exc).rstrip("."))
    return BackendError(describe_api_error(exc))


class KubernetesBackend(PodLogArchive, PodCheckpoints):
    name = "kubernetes"
    # A Job is created under a fixed name carrying its submission id: asking twice never makes two.
    idempotent_submit = True

    def __init__(self, settings: Settings, api: client.ApiClient | None = None, namespace: str | None = None):
        self.settings = settings
        if api is None:
            api, ns = load_api_client(settings)
            namespace = namespace or ns
        self.api = api
        self.namespace = namespace or "default"
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.max_nodes = settings.max_nodes
        self.requests = 0  # API calls made by this process (LIST, WATCH, logs, writes)
        self.error: str | None = None
        self.outages = 0  # times the cluster stopped answering (logged with how long each lasted)
        self._outage_since = 0.0
        self._count_lock = threading.Lock()
        self.jobs = WatchCache(api, self.batch.list_namespaced_job, self.namespace, "jobs", self._on_error, self._inc)
        self.pods = WatchCache(api, self.core.list_namespaced_pod, self.namespace, "pods", self._on_error, self._inc)
        self._cursors: dict[str, dict[str, Any]] = {}
        self._last_pull: dict[int, float] = {}
        self._pull_lock = threading.Lock()  # Stop (a page's thread) and the sync loop both pull logs
        self._finishing: set[int] = set()  # jobs seen finished: their pods' logs are read to the end at once
        self.kueue = Kueue(api, self.namespace, settings, self._inc)
        self.gpu_types = GpuTypes(self.core, settings, self._inc)

    # Bookkeeping --------------------------------------------------------------------------------
    def _inc(self) -> None:
        with self._count_lock:
            self.requests += 1

    def _on_error(self, exc: Exception | None) -> None:
        sentence = None if exc is None else describe_api_error(exc)
        with self._count_lock:
            before, self.error = self.error, sentence
            if before is None and sentence is not None:
                self.outages += 1
                self._outage_since = time.monotonic()
                log.info("cluster outage %d began: %s", self.outages, sentence)
            elif before is not None and sentence is None:
                log.info("cluster outage %d ended after %.0f s (watch breaks: jobs %d, pods %d; lists: jobs %d, "
                         "pods %d)", self.outages, time.monotonic() - self._outage_since, self.jobs.breaks,
                         self.pods.breaks, self.jobs.relists, self.pods.relists)

    def health(self) -> str | None:
        return self.error

    def start(self) -> None:
        self.jobs.start()
        self.pods.start()

    def close(self) -> None:
        self.jobs.stop()
        self.pods.stop()

    def _timeout(self) -> float:
        return self.settings.kube_request_timeout_seconds

    # Paths --------------------------------------------------------------------------------------
    def job_dir(self, job_id: int) -> Path:
        return self.settings.jobs_dir / str(job_id)

    def log_path(self, job_id: int, rank: int = 0) -> Path:
        return self.job_dir(job_id) / ("job.log" if rank == 0 else f"job.rank-{rank}.log")

    def output_dir(self, job_id: int) -> Path:
        return self.job_dir(job_id) / "output"

    # Submit -------------------------------------------------------------------------------------
    def submit(self, job: JobSubmission) -> SubmitResult:
        req = job.request
        source = job.script_source.read_text(encoding="utf-8", errors="replace")
        on_volume = bool(self.settings.job_data_volume_claim)
        if not on_volume and len(source.encode()) > CONFIGMAP_MAX_BYTES:
            raise BackendError("Scripts larger than 900 KB cannot be sent to the cluster; ask your admin "
                               "to configure a workspace volume.")
        name = job_name(self.settings, job.job_id)
        submission_id = job.submission_id
        manifest = build_job(self.settings, job_id=job.job_id, owner=job.owner, submission_id=submission_id,
                             request=req, script_file=job.script_source.name, configmap=f"{name}-script")
        if self.settings.job_template:
            values = req.model_dump(mode="json") | {
                "experiment": req.name, "job_id": job.job_id, "owner": job.owner, "image": self.settings.job_image,
                "cpu": self.settings.default_cpu, "memory": self.settings.default_memory, "namespace": self.namespace,
            }
            manifest = apply_template(self.settings.job_template, manifest, values)
        try:
            queue = self.kueue.prepare(manifest, job.groups, req.priority, team_queue=job.queue)
        except Exception as exc:
            raise backend_error(exc) from exc
        self.job_dir(job.job_id).mkdir(parents=True, exist_ok=True)
        if on_volume:  # the pod reads its snapshot from the shared data volume
            script_dir = self.job_dir(job.job_id) / "script"
            script_dir.mkdir(parents=True, exist_ok=True)
            self.output_dir(job.job_id).mkdir(parents=True, exist_ok=True)
            if job.script_source != script_dir / job.script_source.name:  # usually kept there by the job service
                shutil.copyfile(job.script_source, script_dir / job.script_source.name)
            shutil.copyfile(SCRIPTKIT, script_dir / SCRIPTKIT.name)
            shutil.copyfile(LAUNCHER, script_dir / LAUNCHER.name)
        created = self._create_job_idempotent(manifest, submission_id)
        labels = manifest["metadata"]["labels"]
        files = {job.script_source.name: source, "portal_metrics.py": SCRIPTKIT.read_text(),
                 LAUNCHER.name: LAUNCHER.read_text()}
        try:
            if not on_volume:
                self._create_ignore_exists(self.core.create_namespaced_config_map,
                                           build_configmap(f"{name}-script", files, created, labels))
            if req.nodes > 1:
                self._create_ignore_exists(self.core.create_namespaced_service, build_headless_service(created))
        except Exception as exc:
            error = backend_error(exc)
            if isinstance(error, BackendUnreachable):
                raise error from exc  # submitted again later: the Job is adopted and its script created then
            # No half-job: without its script the Job could never run.
            self._delete_job(name)
            raise error from exc
        ref = {"job_name": name, "uid": created["metadata"]["uid"], "namespace": self.namespace,
               "nodes": req.nodes} | ({"queue": queue} if queue else {})
        return SubmitResult(spec=manifest, ref=ref, status=JobStatus.QUEUED)

    def _create_ignore_exists(self, fn: Callable[..., Any], body: dict[str, Any]) -> None:
        self._inc()
        try:
            fn(self.namespace, body, _request_timeout=self._timeout())
        except ApiException as exc:
            if exc.status != 409:
                raise

    def _read_job(self, name: str) -> dict[str, Any] | None:
        self._inc()
        try:
            resp = self.batch.read_namespaced_job(name, self.namespace, _preload_content=False,
                                                  _request_timeout=self._timeout())
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def _create_job_idempotent(self, manifest: dict[str, Any], submission_id: str) -> dict[str, Any]:
        """Create under a fixed name; on a timeout read back; on AlreadyExists compare the submission id."""
        name = manifest["metadata"]["name"]
        self._inc()
        try:
            resp = self.batch.create_namespaced_job(self.namespace, manifest, _preload_content=False,
                                                    _request_timeout=self._timeout())
            self._on_error(None)
            return json.loads(resp.data)
        except ApiException as exc:
            if exc.status != 409:
                raise backend_error(exc) from exc
        except Exception as exc:
            self._on_error(exc)
            # The request may or may not have reached the cluster. Either way asking again is safe: a create
            # that did land answers 409 with this submission id and is adopted then.
            raise backend_error(exc) from exc
        try:
            existing = self._read_job(name)
        except Exception as exc:
            raise backend_error(exc) from exc
        if existing and _submission_of(existing) == submission_id:
            return existing  # this very submission, asked again (after a timeout, an outage or a restart)
        raise BackendError(f"A different job named {name} already exists in the cluster.")

    # Observe ------------------------------------------------------------------------------------
    def pods_by_job(self) -> dict[str, list[dict[str, Any]]]:
        """Every cached pod grouped under its Job's name, oldest first (one pass over the cache)."""
        return by_job(self.pods.snapshot().values())

    def pods_of(self, name: str) -> list[dict[str, Any]]:
        return self.pods_by_job().get(name, [])

    def current(self) -> bool:
        """Both caches are known current (listed since their last watch break). Waits for the very first LIST
        only: during an outage a tick must not stall."""
        first = 10 if self.jobs.relists == 0 or self.pods.relists == 0 else 0
        return self.jobs.synced.wait(first) and self.pods.synced.wait(first)

    def observe(self, jobs: list[ActiveJob]) -> dict[int, Observation]:
        self.start()
        if not self.current():
            return {}  # a view that may have missed events: change nothing until it is listed again
        snapshot = self.jobs.snapshot()
        pods = self.pods_by_job()
        out: dict[int, Observation] = {}
        self._refresh_kueue(jobs)
        for job in jobs:
            name = job.ref.get("job_name") or job_name(self.settings, job.id)
            kjob = snapshot.get(name)
            if kjob is None and not self._confirmed_gone(name, job.ref.get("uid")):
                continue  # the cache has not caught up with it yet (or the cluster cannot say): no change
            if kjob is not None and job.ref.get("uid") and kjob["metadata"].get("uid") != job.ref["uid"]:
                kjob = None  # same name, another object: ours is gone
            path = self.log_path(job.id)
            held = self.kueue.observation(name, kjob) if kjob is not None and job.ref.get("queue") else None
            obs = held or observe_job(kjob, pods.get(name, []), stop_requested=bool(job.ref.get("stop_requested")),
                              nodes=int(job.ref.get("nodes", 1)), log_tail=lambda p=path: failure_tail(p))
            if obs is None:
                continue
            # What each pod is priced as (the row keeps what earlier ticks, or processes, found).
            self.gpu_types.label(obs, self.kueue.view.workloads.get(name), job.ref.get("pod_gpu_types"))
            if obs.status not in ACTIVE_STATUSES:
                self._finishing.add(job.id)  # its pods are read to their end before it leaves the active list
            out[job.id] = obs
        return out

    def _refresh_kueue(self, jobs: list[ActiveJob]) -> None:
        try:
            self.kueue.refresh(any(job.ref.get("queue") for job in jobs))
        except Exception as exc:  # positions and blockers are kept from the last read; states still go on
            log.info("could not read Kueue's workloads: %s", exc)

    def queue_statuses(self, jobs: list[ActiveJob]) -> dict[int, QueueStatus]:
        # From the last read only (pages call this; the ref may be left empty): a job Kueue does not hold is left out.
        return self.kueue.statuses({j.id: j.ref.get("job_name") or job_name(self.settings, j.id) for j in jobs})

    def queue_summaries(self) -> list[QueueSummary]:
        return self.kueue.summaries()

    def priorities(self, fresh: bool = False) -> list[tuple[str, str]]:
        return self.kueue.priorities(fresh)  # the admin's WorkloadPriorityClasses where jobs queue through Kueue

    def default_priority(self) -> str:
        return self.kueue.default_priority()

    def _confirmed_gone(self, name: str, uid: str | None) -> bool:
        """A job missing from the cache is lost only if a direct read agrees (404, or another object now)."""
        try:
            kjob = self._read_job(name)
        except Exception as exc:
            log.info("could not confirm that job %s is gone: %s", name, exc)
            return False
        return kjob is None or bool(uid and kjob["metadata"].get("uid") != uid)

    def remove_ghosts(self, failed: list[tuple[int, str]]) -> None:
        """A create that timed out may still have been carried out: delete the Job the user was told failed."""
        if not failed or not self.jobs.synced.is_set():
            return
        snapshot = self.jobs.snapshot()
        for job_id, submission_id in failed:
            kjob = snapshot.get(job_name(self.settings, job_id))
            if kjob and not kjob["metadata"].get("deletionTimestamp") and _submission_of(kjob) == submission_id:
                log.warning("removing job %s: its submission was reported as failed", job_id)
                self._delete_job(kjob["metadata"]["name"])

    # Stop / delete ------------------------------------------------------------------------------
    def _delete_job(self, name: str) -> None:
        self._inc()
        try:
            self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background",
                                             _request_timeout=self._timeout())
        except ApiException as exc:
            if exc.status != 404:
                raise backend_error(exc) from exc
        except Exception as exc:
            raise backend_error(exc) from exc

    def stop(self, job_id: int, ref: dict[str, Any]) -> None:
        """Delete the Job (pods go with it); the history stays in the store. A Job that has already ended is left
        as it is: a stop carried out late (asked for during an outage) must not turn its outcome into Stopped."""
        name = ref.get("job_name") or job_name(self.settings, job_id)
        try:
            kjob = self._read_job(name)
        except Exception as exc:
            raise backend_error(exc) from exc
        if kjob is not None and job_ended(kjob):
            return
        try:
            self.pull_logs(ActiveJob(job_id, ref, 0), force=True)  # what the pods printed last, before they go
        except Exception:
            log.warning("could not read the last logs of %s before stopping it", name)
        self._delete_job(name)

    def delete(self, job_id: int, ref: dict[str, Any]) -> None:
        name = ref.get("job_name") or job_name(self.settings, job_id)
        if ref:
            self._delete_job(name)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)


def _submission_of(kjob: dict[str, Any]) -> str | None:
    return (kjob["metadata"].get("annotations") or {}).get(ANN_SUBMISSION)
