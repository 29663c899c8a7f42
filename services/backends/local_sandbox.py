"""Isolation of local jobs when several people share one portal (``proxy`` or ``oidc`` mode).

In the single-user laptop mode a job runs as the person who started the portal, as before. With more than one
user a job would otherwise run as the portal itself and could read its database, its signing key, its
environment and the other users' jobs. So each job gets its own unprivileged UID/GID (base + id mod count, no
passwd entry needed), a network namespace of its own (loopback only), a private /tmp and /dev/shm, and a folder
layout where it can write only its output (and its log through the descriptor the runner hands it):

    <data>/            0711 portal      jobs/ 0711 portal      workspace/ 0700 portal      portal.db, secret.key 0600
    jobs/<id>/         0711 portal      launch.json, state.json, job.log 0600 portal
    jobs/<id>/script/  0750 portal:G    the snapshot 0640 portal:G (readable by this job only, not writable)
    jobs/<id>/output/  0700 U:G         the job's cwd and $HOME

That needs root (CAP_SETUID, CAP_SETGID, CAP_SYS_ADMIN, CAP_CHOWN); where it cannot be set up the portal refuses
to start in a multi-user mode with the local backend, with a sentence saying why (see docs/identity.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from services.backends.local_runner import SCRATCH_DIRS
from services.config import Settings

log = logging.getLogger(__name__)
# What a sandboxed job inherits from the portal's environment: how to find programs and GPUs, nothing secret.
PASS_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM", "LD_LIBRARY_PATH", "CUDA_HOME")
PASS_ENV_PREFIXES = ("LC_", "NVIDIA_")


def isolated(settings: Settings) -> bool:
    return settings.auth_mode != "single"


def job_ids(settings: Settings, job_id: int) -> tuple[int, int]:
    uid = settings.local_job_uid_base + job_id % settings.local_job_uid_count
    return uid, uid


def job_env(environ: dict[str, str], out_dir: Path, uid: int) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if k in PASS_ENV or k.startswith(PASS_ENV_PREFIXES)}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    name = f"mljob{uid}"
    return env | {"HOME": str(out_dir), "USER": name, "LOGNAME": name}


def private_dirs(settings: Settings) -> list[str]:
    """The scratch folders a job gets empty ones of its own: each of /tmp, /var/tmp and /dev/shm unless the
    portal's data or the jobs' Python lives in it (a private one would hide them from the job)."""
    python = Path(settings.python_executable or sys.executable).absolute()
    # A venv's python links to the base interpreter: the venv itself (its site-packages) must stay in view too.
    places = (settings.data_dir.resolve(), python.parent.resolve(), python.resolve())
    return [d for d in SCRATCH_DIRS if not any(p.is_relative_to(d) for p in places)]


def _chmod(path: Path, mode: int) -> None:
    with contextlib.suppress(PermissionError, FileNotFoundError):  # a mount the portal does not own
        os.chmod(path, mode)


def protect_data_dir(settings: Settings) -> None:
    """The portal's own files, readable by the portal alone; job folders reachable only through their names
    (the same in every mode, so a tool that opens the store in another mode does not lock the jobs out)."""
    _chmod(settings.data_dir, 0o711)
    _chmod(settings.jobs_dir, 0o711)
    _chmod(settings.workspace_dir, 0o700)
    for name in ("portal.db", "portal.db-wal", "portal.db-shm", "secret.key"):
        _chmod(settings.data_dir / name, 0o600)
    if isolated(settings) and settings.resolved_backend() == "local":
        lock_old_job_folders(settings)
        shared = [d for d in SCRATCH_DIRS if d not in private_dirs(settings)]
        if shared:  # said once at start: an admin should know the jobs share these with each other
            log.warning("jobs share %s with each other and the portal: the portal's data or the jobs' Python lives "
                        "there; install them elsewhere for a private one per job", ", ".join(shared))


LOCKED_MARK = ".sandboxed"  # in the jobs folder: the folders of jobs from before the sandbox were locked once
PORTAL_FILES = ("launch.json", "state.json", "job.log", "runner.err", "log-cursors.json")


def lock_old_job_folders(settings: Settings) -> None:
    """Once, when a portal first runs with sandboxed jobs: folders that jobs made before (single mode, or a
    portal from before the sandbox) are 755 with 644 files, so every sandboxed job could read their launch.json
    (the laptop user's environment), scripts and outputs. They become the portal's alone."""
    jobs = settings.jobs_dir
    if (jobs / LOCKED_MARK).exists() or not jobs.is_dir():
        return
    for jdir in jobs.iterdir():
        if jdir.is_symlink() or not jdir.is_dir():
            continue
        _chmod(jdir, 0o711)
        for entry in jdir.iterdir():
            if entry.is_symlink():
                continue
            if entry.name in ("script", "output") and entry.is_dir():
                _chmod(entry, 0o700)  # its owner keeps it: the portal, or the sandboxed job that made it
            elif entry.name in PORTAL_FILES or entry.name.startswith("job.rank-"):
                _chmod(entry, 0o600)
    (jobs / LOCKED_MARK).touch(mode=0o600)


def prepare_job_dir(jdir: Path, script_dir: Path, out_dir: Path, uid: int, gid: int) -> None:
    os.chmod(jdir, 0o711)  # noqa: S103 - passing through to its own folders, not listing
    os.chown(script_dir, 0, gid)
    os.chmod(script_dir, 0o750)  # noqa: S103 - this job's group only
    for f in script_dir.iterdir():
        os.chown(f, 0, gid, follow_symlinks=False)
        os.chmod(f, 0o640)
    os.chown(out_dir, uid, gid)
    os.chmod(out_dir, 0o700)


def _unreachable(path: Path) -> Path | None:
    """The first folder above `path` that a stranger cannot pass through (no o+x)."""
    for folder in [path, *path.parents]:
        try:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return folder
        except OSError:
            return folder
    return None


def secret_files(settings: Settings) -> list[Path]:
    """Files outside the data directory that hold the portal's secrets (login cookie and OIDC client secrets, the
    settings file, the link key, a Prometheus token, a SQLite store elsewhere): a sandboxed job can read anything
    the world may read."""
    candidates = [Path.cwd() / ".streamlit" / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml"]
    candidates += [Path(p) for p in (os.environ.get("PORTAL_CONFIG_FILE", ""), settings.secret_key_file,
                                     settings.prometheus_token_file) if p]
    url = settings.sqlalchemy_url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        candidates.append(Path(url.removeprefix("sqlite:///")))
    data = settings.data_dir.resolve()
    return [p for p in candidates if p.exists() and not p.resolve().is_relative_to(data)]  # those it locks itself


def _world_readable(path: Path) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False


@lru_cache(maxsize=8)
def _probe(uid: int) -> str | None:
    """Enter the sandbox once in a throwaway process: what the kernel refuses is found at start, not per job."""
    runner = Path(__file__).with_name("local_runner.py")
    try:
        done = subprocess.run([sys.executable, str(runner), "--probe", str(uid)], capture_output=True, timeout=30,
                              check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    answer = (done.stdout or done.stderr).decode(errors="replace").strip()
    return None if done.returncode == 0 and answer == "ok" else answer[-300:] or f"exit status {done.returncode}"


def sandbox_problem(settings: Settings) -> str | None:
    """Why local jobs of a multi-user portal cannot be isolated here, as a sentence; None when they can."""
    if not isolated(settings) or settings.resolved_backend() != "local":
        return None
    fix = ("Run the portal as root on this machine (it starts each job under its own unprivileged UID), or use "
           "the Kubernetes backend (PORTAL_BACKEND=kubernetes), or PORTAL_AUTH_MODE=single for one person.")
    head = (f"Refusing to start in {settings.auth_mode} mode with the local backend: jobs would run as the portal "
            "itself and could read its database, signing key and environment and other users' jobs")
    if not sys.platform.startswith("linux"):
        return f"{head}, and job isolation needs Linux. {fix}"
    if os.geteuid() != 0:
        return f"{head}, and isolating them needs root (this portal runs as UID {os.geteuid()}). {fix}"
    given = Path(settings.python_executable or sys.executable).absolute()
    python = given.resolve()  # a venv's python links elsewhere: both the venv and what it links to must be reached
    for what, folder, setting in (("their folders", settings.data_dir.parent, "PORTAL_DATA_DIR"),
                                  (f"the jobs' Python {python}", python.parent, "PORTAL_PYTHON_EXECUTABLE"),
                                  (f"the jobs' Python {given}", given.parent.resolve(), "PORTAL_PYTHON_EXECUTABLE")):
        blocked = _unreachable(folder)
        if blocked is not None:
            return (f"{head}: the job accounts cannot pass through {blocked} (it lacks o+x) to reach {what}. "
                    f"Allow it (chmod o+x {blocked}) or move {setting}.")
    readable = [p for p in secret_files(settings) if _world_readable(p)]
    if readable:
        return (f"{head}: {readable[0]} holds secrets and other users can read it. "
                f"Make it the portal's alone (chmod o-rwx {readable[0]}).")
    failed = _probe(job_ids(settings, 0)[0])
    if failed:
        return f"{head}, and this machine refused the job sandbox ({failed}). {fix}"
    return None
