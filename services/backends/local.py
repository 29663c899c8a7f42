"""The embedded default: each job is a supervised child process on this machine."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import psutil

from services import safe_files
from services.backends.base import ActiveJob, BackendError, JobSubmission, Observation, SubmitResult
from services.backends.local_sandbox import (
    isolated,
    job_env,
    job_ids,
    prepare_job_dir,
    private_dirs,
    sandbox_problem,
)
from services.backends.script_inputs import CHECKPOINT_SIGNAL, script_argv, script_env
from services.checkpoints import copy_checkpoint
from services.config import Settings
from services.logs import failure_tail
from services.models import JobStatus
from services.reasons import failure_reason

RUNNER = Path(__file__).with_name("local_runner.py")
SCRIPTKIT = Path(__file__).resolve().parent.parent / "scriptkit"


def machine_gpu_count() -> int:
    """The NVIDIA GPUs a local job can use: NVML's count, narrowed by the portal's own CUDA_VISIBLE_DEVICES
    (which its jobs inherit). 0 without the library or the driver: a laptop's jobs run on its CPU."""
    try:
        import pynvml  # optional at run time, as for the GPU telemetry

        pynvml.nvmlInit()
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()  # NVML counts its initialisations: the telemetry's own stays open
    except Exception:  # ImportError, NVMLError (no library, no driver), OSError
        count = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip()]))
    return count


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class LocalBackend:
    name = "local"
    max_nodes = 1
    # Its queue is the store's (services/local_queue.py): submit prepares a job, the queue launches it.
    store_queue = True

    def __init__(self, settings: Settings):
        self.settings = settings
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    @cached_property
    def machine_gpus(self) -> int:
        """How many GPUs a job may ask for here, and the queue shares: the configured count, else the machine's."""
        return self.settings.local_gpus if self.settings.local_gpus >= 0 else machine_gpu_count()

    # Paths --------------------------------------------------------------------------------------
    def job_dir(self, job_id: int) -> Path:
        return self.settings.jobs_dir / str(job_id)

    def log_path(self, job_id: int, rank: int = 0) -> Path:
        return self.job_dir(job_id) / "job.log"

    def log_ranks(self, job_id: int) -> list[int]:
        return [0]

    def start(self) -> None:
        """Nothing to watch: the runner writes state.json and the log file itself."""

    def health(self) -> str | None:
        return None

    def remove_ghosts(self, failed: list[tuple[int, str]]) -> None:
        """A local start either happened or raised: there is nothing half-made to remove."""

    def pull_logs(self, job: ActiveJob) -> None:
        """The job writes its log straight into the archive file."""

    def output_dir(self, job_id: int) -> Path:
        return self.job_dir(job_id) / "output"

    # Use cases ----------------------------------------------------------------------------------
    def submit(self, job: JobSubmission) -> SubmitResult:
        req = job.request
        jdir = self.job_dir(job.job_id)
        script_dir = jdir / "script"
        out_dir = self.output_dir(job.job_id)
        script_dir.mkdir(parents=True, exist_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        # A snapshot, so that editing the workspace file later does not change what this job ran.
        snapshot = script_dir / job.script_source.name
        if job.script_source != snapshot:  # the job service usually keeps it there already
            shutil.copyfile(job.script_source, snapshot)
        os.close(safe_files.open_append(*safe_files.split(jdir / "job.log", 2)))

        python = self.settings.python_executable or sys.executable
        # A retry from a checkpoint reads it where the parent wrote it (checked by services/checkpoints.py); a
        # sandboxed job, whose UID cannot read the parent's output, a copy in its own folder.
        resume = ""
        if req.resume_from:
            parent, name = req.resume_from.split("/", 1)
            source = self.output_dir(int(parent)) / "checkpoints" / name
            isolated_gid = job_ids(self.settings, job.job_id)[1] if isolated(self.settings) else None
            resume = str(source if isolated_gid is None else copy_checkpoint(source, jdir / "resume" / name,
                                                                             isolated_gid))
        argv = [python, "-u", *script_argv(req, str(snapshot), resume)]
        portal_env = script_env(job.job_id, req, str(out_dir), resume)
        sandbox: dict[str, Any] | None = None
        helpers = SCRIPTKIT  # portal_metrics, for scripts that report exact metrics
        if isolated(self.settings):
            problem = sandbox_problem(self.settings)
            if problem:
                raise BackendError(problem)
            uid, gid = job_ids(self.settings, job.job_id)
            sandbox = {"uid": uid, "gid": gid, "private_dirs": private_dirs(self.settings)}
            # A copy beside the snapshot: the job account need not reach the portal's install.
            helpers = script_dir
            for module in SCRIPTKIT.glob("*.py"):
                shutil.copyfile(module, script_dir / module.name)
            prepare_job_dir(jdir, script_dir, out_dir, uid, gid)
            env = job_env(dict(os.environ), out_dir, uid)
        else:  # the laptop: the job is the user's own, with the user's environment (conda, tokens, ...)
            env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
        env.update(portal_env)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(helpers), env.get("PYTHONPATH", "")]))
        env["CUDA_VISIBLE_DEVICES"] = ""  # until the queue gives it its GPUs (launch)
        launch = {
            "argv": argv,
            "cwd": str(out_dir),
            "env": env,
            "max_runtime_seconds": req.max_runtime_hours * 3600,
            "grace_seconds": self.settings.stop_grace_seconds,
            "sandbox": sandbox,
        }
        # The job's environment: the portal's alone (0600), written by rename so no link is followed.
        safe_files.write_replace(*safe_files.split(jdir / "launch.json", 2), json.dumps(launch).encode())
        # The exact spec that runs: argv and the portal's own variables (not the inherited environment).
        spec = {
            "backend": "local",
            "argv": argv,
            "cwd": str(out_dir),
            "env": portal_env | {"CUDA_VISIBLE_DEVICES": ""},
            "max_runtime_seconds": launch["max_runtime_seconds"],
            "checkpoint_signal": CHECKPOINT_SIGNAL,
        }
        return SubmitResult(spec=spec, ref={"waiting": True}, status=JobStatus.QUEUED)

    def launch(self, job_id: int, gpu_indices: list[int]) -> dict[str, Any]:
        """Start a prepared job on these of the queue's GPUs; returns its new ref (the runner's pid)."""
        jdir = self.job_dir(job_id)
        started = self._read_json(job_id, "runner.json")
        if started:  # a portal that died between starting it and recording that: the same run, never a second
            return started
        launch = self._read_json(job_id, "launch.json")
        if not launch:
            raise BackendError("The job's prepared files are gone, so it cannot start.")
        # The portal's own CUDA_VISIBLE_DEVICES names the devices the queue's indices count.
        visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        devices = [visible[i] if i < len(visible) else str(i) for i in gpu_indices]
        launch["env"]["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        safe_files.write_replace(*safe_files.split(jdir / "launch.json", 2), json.dumps(launch).encode())
        err_fd = safe_files.open_append(*safe_files.split(jdir / "runner.err", 2))
        try:
            proc = subprocess.Popen(
                [sys.executable, str(RUNNER), str(jdir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err_fd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise BackendError(f"Could not start the job's process: {exc.strerror or exc}") from exc
        finally:
            os.close(err_fd)
        self._procs[job_id] = proc
        ref = {"runner_pid": proc.pid, "runner_started": psutil.Process(proc.pid).create_time(),
               "gpu_indices": list(gpu_indices)}
        safe_files.write_replace(*safe_files.split(jdir / "runner.json", 2), json.dumps(ref).encode())
        return ref

    def _read_json(self, job_id: int, name: str) -> dict[str, Any]:
        """state.json or launch.json of a job, or {} (missing, half-written, or a link in its place)."""
        try:
            return json.loads(safe_files.read_bytes(*safe_files.split(self.job_dir(job_id) / name, 2)))
        except (FileNotFoundError, ValueError):
            return {}

    def _state(self, job_id: int) -> dict[str, Any]:
        return self._read_json(job_id, "state.json")

    def _runner_alive(self, job_id: int, ref: dict[str, Any]) -> bool:
        proc = self._procs.get(job_id)
        if proc is not None and proc.poll() is not None:  # reaps our own child
            self._procs.pop(job_id, None)
            return False
        pid = ref.get("runner_pid")
        if not pid:
            return False
        try:
            p = psutil.Process(pid)
            # A recycled pid belongs to another process: compare start times.
            return abs(p.create_time() - float(ref.get("runner_started", 0))) < 1.0 and p.status() != "zombie"
        except psutil.Error:
            return False

    def _reap(self) -> None:
        """Collect the exit status of every runner of ours that ended: a finished job leaves no zombie."""
        for job_id, proc in list(self._procs.items()):
            if proc.poll() is not None:
                self._procs.pop(job_id, None)

    def observe(self, jobs: list[ActiveJob]) -> dict[int, Observation]:
        self._reap()
        out: dict[int, Observation] = {}
        for job in jobs:
            if job.ref.get("waiting"):  # not started yet: only a Stop changes it
                if job.ref.get("stop_requested"):
                    out[job.id] = Observation(JobStatus.STOPPED, "Stopped by user before it started",
                                              finished_at=datetime.now(UTC))
                continue
            state = self._state(job.id)
            started = _ts(state.get("started_at"))
            if "returncode" in state:
                out[job.id] = self._finished(job, state)
            elif self._runner_alive(job.id, job.ref):
                if state.get("child_pid"):
                    out[job.id] = Observation(JobStatus.RUNNING, started_at=started)
            else:
                # Re-read: the runner may have written its final state between the two reads.
                state = self._state(job.id)
                if "returncode" in state:
                    out[job.id] = self._finished(job, state)
                else:
                    out[job.id] = Observation(
                        JobStatus.FAILED,
                        reason="Lost: the job's process is gone and left no exit status "
                        "(the machine or the portal's container was restarted)",
                        started_at=started,
                        finished_at=datetime.now(UTC),
                    )
        return out

    def _finished(self, job: ActiveJob, state: dict[str, Any]) -> Observation:
        rc = int(state["returncode"])
        started, finished = _ts(state.get("started_at")), _ts(state.get("finished_at"))
        if state.get("stopped"):
            return Observation(JobStatus.STOPPED, "Stopped by user", rc, started, finished)
        if state.get("timed_out"):
            reason = failure_reason(rc, None, "", timed_out_hours=job.max_runtime_hours)
            return Observation(JobStatus.FAILED, reason, rc, started, finished)
        if rc == 0:
            return Observation(JobStatus.SUCCEEDED, None, 0, started, finished)
        reason = failure_reason(rc if rc > 0 else None, -rc if rc < 0 else None, failure_tail(self.log_path(job.id)))
        return Observation(JobStatus.FAILED, reason, rc, started, finished)

    def _signal(self, job_id: int, ref: dict[str, Any], sig: signal.Signals) -> bool:
        if not self._runner_alive(job_id, ref):
            return False
        try:
            os.kill(int(ref["runner_pid"]), sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, job_id: int, ref: dict[str, Any]) -> None:
        self._signal(job_id, ref, signal.SIGTERM)

    def signal_checkpoint(self, job_id: int, ref: dict[str, Any]) -> None:
        if not self._signal(job_id, ref, signal.SIGUSR1):
            raise BackendError("The job is not running any more, so it cannot save a checkpoint.")

    def delete(self, job_id: int, ref: dict[str, Any]) -> None:
        if self._runner_alive(job_id, ref):
            self._signal(job_id, ref, signal.SIGKILL)
            state = self._state(job_id)
            if state.get("child_pid"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(state["child_pid"]), signal.SIGKILL)
        sandbox = self._read_json(job_id, "launch.json").get("sandbox")
        if sandbox:  # the runner was killed before it could end the job's strays, or a stray outlived it
            subprocess.run([sys.executable, str(RUNNER), "--kill-uid", str(int(sandbox["uid"]))], timeout=30,
                           check=False, stdin=subprocess.DEVNULL, capture_output=True)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)


    def close(self) -> None:
        # Jobs keep running across a portal restart on purpose; only reap what already ended.
        self._reap()
