"""Supervisor of one local job: ``python local_runner.py JOB_DIR``.

Standard library only, started in its own session so that it (and the job) outlive a portal restart.
It runs the training script with stdout+stderr merged into job.log, enforces the max runtime,
turns SIGTERM into a graceful stop (SIGTERM to the script, SIGKILL after the grace period),
forwards SIGUSR1 (save checkpoint), and records the outcome in state.json for the portal.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_CHILD_SUBREAPER = 36
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 - where a sandboxed job gets empty ones of its own
MAX_JOB_PROCESSES = 16384  # processes and threads of one sandboxed job (data-loader workers have many threads)


def _libc_call(name: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _loopback_up() -> None:
    """A new network namespace has only a loopback device, and it is down (torchrun rendezvous needs it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh22x", fcntl.ioctl(s, 0x8913, struct.pack("16sh22x", b"lo", 0)))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", flags | 0x1))  # SIOCSIFFLAGS, IFF_UP


def _hide_other_processes() -> None:
    """A procfs of the job's own with hidepid=invisible: other users' processes (the portal's, other jobs' with
    their command lines) are not even listed. Kernels before 5.8 share one set of procfs options across mounts,
    so there it would change the machine's own /proc: skipped, as where the kernel refuses the mount."""
    release = tuple(int(p) for p in os.uname().release.split("-")[0].split(".")[:2] if p.isdigit())
    if release >= (5, 8):
        with contextlib.suppress(OSError):
            _libc_call("mount", b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, b"hidepid=invisible")


def enter_sandbox(uid: int, gid: int, private_dirs: list[str] | tuple[str, ...] = SCRATCH_DIRS) -> None:
    """Run (as root, in the forked child, before exec) to make the job a stranger to the portal: its own
    network (loopback only: the portal's port, PostgreSQL and other jobs are out of reach), its own empty
    `private_dirs` (/tmp, /var/tmp, /dev/shm), a /proc without others' processes, then an unprivileged UID/GID
    with no supplementary groups that can never gain privileges again."""
    _libc_call("unshare", _CLONE_NEWNET | _CLONE_NEWNS)
    # Counted per real UID, and the UID is this job's: a fork bomb stops here, not at the machine's pid_max.
    resource.setrlimit(resource.RLIMIT_NPROC, (MAX_JOB_PROCESSES, MAX_JOB_PROCESSES))
    _libc_call("mount", None, b"/", None, _MS_REC | _MS_PRIVATE, None)  # our mounts stay ours
    for target in private_dirs:
        if os.path.isdir(target):
            _libc_call("mount", b"tmpfs", target.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=1777")
    _hide_other_processes()
    _loopback_up()
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    _libc_call("prctl", _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.umask(0o077)


def kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` (the job's alone). kill(-1) as that UID has the kernel signal all of them in
    one pass, under the lock that fork takes too, so a fork chain cannot outrun it as a /proc scan would."""
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)  # every process this UID may signal, except this one
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


def _reap_others(keep: int) -> None:
    """Reap the orphans that ended while the job runs (zombies count against its process limit), never the job's
    own process: its status is Popen's to collect."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == keep:
            return
        os.waitpid(info.si_pid, 0)


def _reap_orphans(seconds: float = 2.0) -> None:
    """The runner is the job's subreaper: what the job left behind is reaped here, not left as zombies of the
    portal (which is PID 1 in its container)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.02)
        except ChildProcessError:
            return


def _write_state(job_dir: Path, state: dict) -> None:
    tmp = job_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, job_dir / "state.json")


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def main(job_dir: Path) -> int:
    os.umask(0o077)  # state.json and the log are the portal's alone
    with contextlib.suppress(OSError):  # Linux: orphans of the job become the runner's children, not the portal's
        _libc_call("prctl", _PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    launch = json.loads((job_dir / "launch.json").read_text())
    sandbox = launch.get("sandbox")
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
    # The job writes its log through this descriptor only: in a sandbox it cannot open the file by name.
    with open(job_dir / "job.log", "ab", buffering=0) as log:
        try:
            proc = subprocess.Popen(
                launch["argv"],
                cwd=launch["cwd"],
                env=launch["env"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: signals reach data-loader workers too
                close_fds=True,
                preexec_fn=(lambda: enter_sandbox(sandbox["uid"], sandbox["gid"], sandbox["private_dirs"]))
                if sandbox else None,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.write(f"The portal could not start the job in its sandbox: {exc}\n".encode())
            state.update(returncode=127, started_at=time.time(), finished_at=time.time())
            _write_state(job_dir, state)
            return 0
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
            _reap_others(proc.pid)
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
    if sandbox:  # and whatever left the group (setsid, a double fork): the UID is this job's alone
        kill_uid(int(sandbox["uid"]))
        # Its output becomes the portal's: job id + UID count, which gets the same UID, cannot open it. (The job
        # cannot have swapped the folder for a link: the folder above is the portal's.)
        with contextlib.suppress(OSError):
            os.chown(launch["cwd"], 0, 0, follow_symlinks=False)
    _reap_orphans(2.0 if sandbox else 0.1)
    state.update(returncode=rc, finished_at=time.time())
    _write_state(job_dir, state)
    return 0


def probe(uid: int) -> int:
    """``local_runner.py --probe UID``: can this machine give a job its sandbox? Prints "ok" or the refusal."""
    try:
        enter_sandbox(uid, uid)
    except OSError as exc:
        print(exc)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--probe":
        sys.exit(probe(int(sys.argv[2])))
    if sys.argv[1] == "--kill-uid":  # the portal deleting a job whose runner it killed first
        kill_uid(int(sys.argv[2]))
        sys.exit(0)
    sys.exit(main(Path(sys.argv[1])))
