"""Kubernetes objects for a job, built as Python dicts (never YAML text with user strings in it)."""

from __future__ import annotations

import hashlib
from typing import Any

from services.backends.script_inputs import script_argv, script_env
from services.config import Settings
from services.models import JobRequest

MANAGED_BY = "ml-job-portal"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_JOB_ID = "ml-portal/job-id"
LABEL_OWNER = "ml-portal/owner-hash"
ANN_OWNER = "ml-portal/owner"
ANN_EXPERIMENT = "ml-portal/experiment"
ANN_SUBMISSION = "ml-portal/submission-id"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
SCRIPT_DIR = "/portal/script"
OUTPUT_DIR = "/portal/output"
DATA_DIR = "/portal/data"
PODINFO_DIR = "/portal/podinfo"  # the pod's own annotations, projected by the Downward API (Save checkpoint)
RESUME_DIR = "/portal/resume"  # the checkpoint a retry resumes from, read-only
LAUNCHER = "portal_launch.py"  # services/scriptkit/: turns a checkpoint request into SIGUSR1 for the script
CHECKPOINT_REQUEST = "portal.ml/checkpoint-request"  # the pod annotation the launcher watches
MASTER_PORT = 29500
CONFIGMAP_MAX_BYTES = 900 * 1024  # a ConfigMap holds at most 1 MiB in all


def job_name(settings: Settings, job_id: int) -> str:
    return f"{settings.job_name_prefix}-{job_id}"


def owner_hash(owner: str) -> str:
    """A label value for the owner (labels cannot hold every user name; the annotation has it verbatim)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:16]


def selector() -> str:
    return f"{LABEL_MANAGED}={MANAGED_BY}"


def k8s_literal(arg: str) -> str:
    """Kubernetes expands $(VAR) in command and args; a user's '$' must stay a '$'."""
    return arg.replace("$", "$$")


def _labels(job_id: int, owner: str) -> dict[str, str]:
    return {LABEL_MANAGED: MANAGED_BY, LABEL_JOB_ID: str(job_id), LABEL_OWNER: owner_hash(owner)}


def _annotations(owner: str, request: JobRequest, submission_id: str) -> dict[str, str]:
    return {ANN_OWNER: owner, ANN_EXPERIMENT: request.name, ANN_SUBMISSION: submission_id}


def build_job(
    settings: Settings, *, job_id: int, owner: str, submission_id: str, request: JobRequest,
    script_file: str, configmap: str,
) -> dict[str, Any]:
    name = job_name(settings, job_id)
    labels = _labels(job_id, owner)
    if settings.job_data_volume_claim:
        # The portal's own data volume: the script snapshot and the job's files live in its job directory.
        script_dir = f"{DATA_DIR}/jobs/{job_id}/script"
        output_dir = f"{DATA_DIR}/jobs/{job_id}/output"
        volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": settings.job_data_volume_claim}}]
        # Only this job's own script (read-only) and output (subPaths): the volume also holds the database, the
        # signing key and everyone else's jobs, and the job folder the portal's log archive of this very job,
        # none of which a training script may read or change.
        mounts = [{"name": "data", "mountPath": script_dir, "subPath": f"jobs/{job_id}/script", "readOnly": True},
                  {"name": "data", "mountPath": output_dir, "subPath": f"jobs/{job_id}/output"}]
    else:
        script_dir, output_dir = SCRIPT_DIR, OUTPUT_DIR
        volumes = [{"name": "script", "configMap": {"name": configmap}}, {"name": "output", "emptyDir": {}}]
        mounts = [{"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True},
                  {"name": "output", "mountPath": OUTPUT_DIR}]
    # The kubelet rewrites this file when the portal annotates the pod: no pods/exec needed to ask for a checkpoint.
    volumes.append({"name": "podinfo", "downwardAPI": {"items": [
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}})
    mounts.append({"name": "podinfo", "mountPath": PODINFO_DIR, "readOnly": True})
    resume_path = ""
    if request.resume_from and settings.job_data_volume_claim:
        # Only the one checkpoint, read-only: the parent's other files are not the new job's to read or change.
        parent_id, name = request.resume_from.split("/", 1)
        resume_path = f"{RESUME_DIR}/{name}"
        mounts.append({"name": "data", "mountPath": resume_path, "readOnly": True,
                       "subPath": f"jobs/{int(parent_id)}/output/checkpoints/{name}"})
    script_path = f"{script_dir}/{script_file}"
    user_args = [k8s_literal(a) for a in script_argv(request, script_path, resume_path)[1:]]
    env = script_env(job_id, request, output_dir, resume_path)
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONPATH": script_dir, "HOME": output_dir})
    env_list: list[dict[str, Any]] = [{"name": k, "value": k8s_literal(v)} for k, v in sorted(env.items())]
    if request.nodes > 1:
        # torchrun rendezvous: index 0 is the master; each pod learns its rank from its completion index.
        env_list += [
            {"name": "MASTER_ADDR", "value": f"{name}-0.{name}"},
            {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
            {"name": "WORLD_SIZE", "value": str(request.nodes)},
            {"name": "NPROC_PER_NODE", "value": str(max(1, request.gpus))},
            {"name": "NODE_RANK",
             "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}},
        ]
        command = ["torchrun"]
        args = ["--nnodes=$(WORLD_SIZE)", "--nproc-per-node=$(NPROC_PER_NODE)", "--node-rank=$(NODE_RANK)",
                "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)", script_path, *user_args]
    else:
        command = ["python", "-u"]
        args = [script_path, *user_args]
    # torchrun dies of SIGUSR1: its workers get the signal, not it.
    command = ["python", "-u", f"{script_dir}/{LAUNCHER}", "--watch", f"{PODINFO_DIR}/annotations",
               *(["--spare-leader"] if request.nodes > 1 else []), "--", *command]

    limits: dict[str, str] = {"memory": settings.default_memory}
    if request.gpus:
        limits["nvidia.com/gpu"] = str(request.gpus)
    container = {
        "name": "main",
        "image": settings.job_image,
        "command": command,
        "args": args,
        "env": env_list,
        "workingDir": output_dir,
        "resources": {"requests": {"cpu": settings.default_cpu, "memory": settings.default_memory},
                      "limits": limits},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "runAsNonRoot": True, "readOnlyRootFilesystem": False},
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if settings.job_run_as_user:
        # Left out with PORTAL_JOB_RUN_AS_USER=0: OpenShift's restricted policy then assigns the project's UID.
        uid = settings.job_run_as_user
        pod_spec["securityContext"] |= {"runAsUser": uid, "runAsGroup": uid, "fsGroup": uid}
    if settings.job_service_account:
        pod_spec["serviceAccountName"] = settings.job_service_account
    spec: dict[str, Any] = {
        "backoffLimit": 3,  # only disruptions are retried: the script's own failure fails the Job at once
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "NotIn", "values": [0]}},
        ]},
        "activeDeadlineSeconds": max(1, round(request.max_runtime_hours * 3600)),
        "ttlSecondsAfterFinished": round(settings.job_ttl_hours * 3600),
        "template": {
            "metadata": {"labels": dict(labels), "annotations": dict(settings.pod_annotations)},
            "spec": pod_spec,
        },
    }
    if request.nodes > 1:
        spec.update(completionMode="Indexed", completions=request.nodes, parallelism=request.nodes,
                    podReplacementPolicy="Failed")
        pod_spec["subdomain"] = name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels,
                     "annotations": _annotations(owner, request, submission_id)},
        "spec": spec,
    }


def owner_reference(job: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
            "uid": job["metadata"]["uid"], "controller": False, "blockOwnerDeletion": False}


def build_configmap(name: str, files: dict[str, str], owner_job: dict[str, Any], labels: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels, "ownerReferences": [owner_reference(owner_job)]},
            "data": files}


def build_headless_service(owner_job: dict[str, Any]) -> dict[str, Any]:
    """Stable DNS names <job>-<index>.<job> for the pods of a multi-node job."""
    name = owner_job["metadata"]["name"]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": dict(owner_job["metadata"]["labels"]),
                         "ownerReferences": [owner_reference(owner_job)]},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": {"batch.kubernetes.io/job-name": name},
                     "ports": [{"name": "rendezvous", "port": MASTER_PORT}]}}
