"""Supervisor of one local job: ``python local_runner.py JOB_DIR``.

Standard library only, started in its own session so that it (and the job) outlive a portal restart.
It runs the training script with stdout+stderr merged into job.log, enforces the max runtime,
turns SIGTERM into a graceful stop (SIGTERM to the script, SIGKILL after the grace period),
forwards SIGUSR1 (save checkpoint), and records the outcome in state.json for the portal.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _write_state(job_dir: Path, state: dict) -> None:
    tmp = job_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, job_dir / "state.json")


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def main(job_dir: Path) -> int:
    launch = json.loads((job_dir / "launch.json").read_text())
    grace = float(launch["grace_seconds"])
    deadline = time.time() + float(launch["max_runtime_seconds"])
    state: dict = {"runner_pid": os.getpid(), "stopped": False, "timed_out": False}

    kill_at: list[float] = []
    child: list[subprocess.Popen[bytes]] = []

    # Handlers go in before the script starts: a Stop that arrives first must not kill the runner alone.
    def on_term(_sig: int, _frm: object) -> None:
        if not state["stopped"]:
            state["stopped"] = True
            _write_state(job_dir, state)
            if child:
                _killpg(child[0].pid, signal.SIGTERM)
                kill_at.append(time.time() + grace)

    def on_usr1(_sig: int, _frm: object) -> None:
        if child:
            _killpg(child[0].pid, signal.SIGUSR1)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)

    if state["stopped"]:  # stopped before it started: record that and run nothing
        state.update(returncode=-signal.SIGTERM, started_at=time.time(), finished_at=time.time())
        _write_state(job_dir, state)
        return 0
    with open(job_dir / "job.log", "ab", buffering=0) as log:
        proc = subprocess.Popen(
            launch["argv"],
            cwd=launch["cwd"],
            env=launch["env"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: signals reach data-loader workers too
            close_fds=True,
        )
    child.append(proc)
    state.update(child_pid=proc.pid, started_at=time.time())
    _write_state(job_dir, state)
    if state["stopped"]:  # the Stop came while the script was being started
        _killpg(proc.pid, signal.SIGTERM)
        kill_at.append(time.time() + grace)

    while True:
        try:
            rc = proc.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.time()
        if not state["timed_out"] and not state["stopped"] and now >= deadline:
            state["timed_out"] = True
            _write_state(job_dir, state)
            _killpg(proc.pid, signal.SIGTERM)
            kill_at.append(now + grace)
        if kill_at and now >= kill_at[0]:
            state["escalated"] = True
            _killpg(proc.pid, signal.SIGKILL)
            kill_at.clear()
    _killpg(proc.pid, signal.SIGKILL)  # leftovers of the group (workers the script forgot)
    state.update(returncode=rc, finished_at=time.time())
    _write_state(job_dir, state)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
