"""How the form's values reach a job's script, the same on every backend: as flags (documented in
docs/scripts.md) and as PORTAL_* environment variables. Shared by the local backend and the Kubernetes
manifests, so neither backend imports from the other."""

from __future__ import annotations

from services.models import JobRequest

CHECKPOINT_SIGNAL = "SIGUSR1"


def script_argv(request: JobRequest, script: str, resume_path: str = "") -> list[str]:
    """How the form's values reach the script as flags (documented in docs/scripts.md); `resume_path` is where the
    job sees the checkpoint it resumes from (Retry from checkpoint)."""
    argv = [
        script,
        "--learning-rate", repr(request.learning_rate),
        "--epochs", str(request.epochs),
        "--batch-size", str(request.batch_size),
    ]
    if request.dataset_path:
        argv += ["--dataset-path", request.dataset_path]
    if request.mixed_precision:
        argv.append("--mixed-precision")
    if request.gradient_checkpointing:
        argv.append("--gradient-checkpointing")
    if request.checkpoint_every:
        argv += ["--checkpoint-every", str(request.checkpoint_every)]
    if resume_path:
        argv += ["--resume-from", resume_path]
    return argv + request.extra_argv()


def script_env(job_id: int, request: JobRequest, output_dir: str, resume_path: str = "") -> dict[str, str]:
    """The same values as environment variables, for scripts that prefer them."""
    return {
        "PORTAL_JOB_ID": str(job_id),
        "PORTAL_EXPERIMENT": request.name,
        "PORTAL_LEARNING_RATE": repr(request.learning_rate),
        "PORTAL_EPOCHS": str(request.epochs),
        "PORTAL_BATCH_SIZE": str(request.batch_size),
        "PORTAL_DATASET_PATH": request.dataset_path,
        "PORTAL_MIXED_PRECISION": "1" if request.mixed_precision else "0",
        "PORTAL_GRADIENT_CHECKPOINTING": "1" if request.gradient_checkpointing else "0",
        "PORTAL_CHECKPOINT_EVERY": str(request.checkpoint_every),
        "PORTAL_GPUS": str(request.gpus),
        "PORTAL_NODES": str(request.nodes),
        "PORTAL_OUTPUT_DIR": output_dir,
        "PORTAL_CHECKPOINT_SIGNAL": CHECKPOINT_SIGNAL,
    } | ({"PORTAL_RESUME_FROM": resume_path} if resume_path else {})
