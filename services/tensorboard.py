"""TensorBoard for a job, or a set of compared jobs, started by the portal on demand and served behind it.

One TensorBoard process per set of jobs (its key: the sorted ids, "3-5-9"), on 127.0.0.1 and a free port, with
``--path_prefix /tensorboard/<key>`` so that the portal's proxy (api/tensorboard_proxy.py) passes paths through
unchanged. It is reused while requests come, stopped after ``tensorboard_idle_minutes`` without one, and at most
``tensorboard_max_sessions`` run at once (one more stops the one idle longest).

TensorBoard never reads a job's folder itself: it would follow the links a job can plant there (to another
user's event files, or any file the portal can read). It reads a mirror the portal keeps in its own data folder,
of the event files only, copied through the same no-link opening as the Files tab, and topped up with the bytes
appended since (at most every few seconds, when the proxy is asked). On Kubernetes the jobs' outputs are on the
shared data volume, the same paths the Files tab reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.auth import may_download
from services.config import Settings
from services.models import NotFound, User
from services.tb_scalars import is_event_file

log = logging.getLogger(__name__)

PREFIX = "/tensorboard"
MAX_JOBS = 10  # as many as Compare takes
MIRROR_DIR = "tensorboard"
COPY_CHUNK = 1 << 20
MIRROR_EVERY_SECONDS = 3.0
START_SECONDS = 60.0
_KEY = re.compile(r"^[0-9]{1,12}(?:-[0-9]{1,12}){0,9}$")
_LISTENING = re.compile(r"TensorBoard \S+ at http://127\.0\.0\.1:([0-9]{1,5})/")


class TensorBoardError(Exception):
    """A sentence for the user: why there is no TensorBoard (no event files, it would not start)."""


def key_of(job_ids: list[int]) -> str:
    return "-".join(str(i) for i in sorted(set(job_ids)))


def parse_key(key: str) -> list[int] | None:
    """The job ids of a session key from a URL, or None when it is not one."""
    if not _KEY.match(key):
        return None
    ids = [int(part) for part in key.split("-")]
    return ids if ids == sorted(set(ids)) else None


def url_for(job_ids: list[int]) -> str:
    return f"{PREFIX}/{key_of(job_ids)}/"


try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    # A TensorBoard must not outlive a portal that was killed (it would hold its port and memory). Loaded before
    # the fork: between fork and exec only this one call runs.
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Session:
    key: str
    job_ids: list[int]
    port: int
    mirror: Path
    proc: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.monotonic)
    used_at: float = field(default_factory=time.monotonic)
    mirrored_at: float = 0.0
    copied: dict[tuple[int, str], int] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None


class TensorBoards:
    """Start, find and stop the TensorBoards of this process (no Streamlit here: pages and the proxy call in)."""

    def __init__(self, settings: Settings, jobs: Any):
        self.settings = settings
        self.jobs = jobs
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._starting: dict[str, threading.Lock] = {}
        self._reaper: threading.Thread | None = None

    # What a user may open ---------------------------------------------------------------------------------
    def check(self, user: User, job_ids: list[int]) -> None:
        """NotFound unless the user may read every job's files (the Files tab's rule): TensorBoard shows them."""
        if not job_ids or len(set(job_ids)) > MAX_JOBS:
            raise NotFound(f"TensorBoard opens for 1 to {MAX_JOBS} jobs.")
        for job_id in job_ids:
            job = self.jobs.get(user, job_id)
            if not may_download(user, job.owner):
                raise NotFound(f"Job {job_id} was not found.")

    def event_files(self, job_id: int) -> list[str]:
        """The job's TensorBoard event files (relative paths), as the Files tab lists them (no link followed)."""
        return [f.path for f in self.jobs.output_files(job_id) if is_event_file(f.path)]

    def has_event_files(self, job_id: int) -> bool:
        return bool(self.event_files(job_id))

    # Sessions ---------------------------------------------------------------------------------------------
    def find(self, key: str) -> Session | None:
        with self._lock:
            session = self._sessions.get(key)
        if session is not None and not session.alive():
            self.stop(key)
            return None
        return session

    def open(self, user: User, job_ids: list[int]) -> Session:
        """The running TensorBoard of these jobs (started when there is none), after checking the user may see
        each; marked as used now, its mirror topped up."""
        self.check(user, job_ids)
        key = key_of(job_ids)
        with self._lock:
            starting = self._starting.setdefault(key, threading.Lock())
        with starting:  # two first requests at once start one TensorBoard
            session = self.find(key) or self._start(key, sorted(set(job_ids)))
        session.used_at = time.monotonic()
        if time.monotonic() - session.mirrored_at > MIRROR_EVERY_SECONDS:
            self._mirror(session)
        return session

    def _start(self, key: str, job_ids: list[int]) -> Session:
        mirror = self.settings.data_dir / MIRROR_DIR / key
        shutil.rmtree(mirror, ignore_errors=True)
        mirror.mkdir(parents=True, mode=0o700)
        for j in job_ids:
            (mirror / str(j)).mkdir(mode=0o700)
        probe = Session(key, job_ids, 0, mirror, proc=None)  # type: ignore[arg-type]
        if not self._mirror(probe):
            shutil.rmtree(mirror, ignore_errors=True)
            raise TensorBoardError("These jobs wrote no TensorBoard event files (events.out.tfevents.*).")
        self._make_room()
        # Run names: "<id>-<job name>", each pointing at its job's mirror (names kept to characters the spec
        # cannot misread: its separators are ':' and ',').
        names = {j: re.sub(r"[^A-Za-z0-9_.-]+", "_", self._name(j))[:40] for j in job_ids}
        spec = ",".join(f"{j}-{names[j]}:{mirror / str(j)}" for j in job_ids)
        cmd = [sys.executable, "-m", "tensorboard.main", "--logdir_spec", spec, "--host", "127.0.0.1",
               "--port", "0", "--path_prefix", f"{PREFIX}/{key}", "--reload_interval", "5",
               "--load_fast", "false", "--window_title", f"TensorBoard: jobs {key}"]
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}
        logfile = open(mirror.parent / f"{key}.log", "wb")  # noqa: SIM115 (the child keeps it)
        try:
            proc = subprocess.Popen(cmd, cwd=mirror, env=env, stdout=logfile, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        finally:
            logfile.close()
        session = Session(key, job_ids, 0, mirror, proc, copied=probe.copied, mirrored_at=time.monotonic())
        if not self._ready(session):
            self._kill(session)
            raise TensorBoardError("TensorBoard did not start (see the portal's data folder, "
                                   f"{MIRROR_DIR}/{key}.log).")
        with self._lock:
            self._sessions[key] = session
        self._ensure_reaper()
        log.info("started TensorBoard for jobs %s on port %s", key, session.port)
        return session

    def _name(self, job_id: int) -> str:
        from services.store.orm import Job

        with self.jobs.session() as s:
            job = s.get(Job, job_id)
            return job.name if job is not None else "job"

    def _ready(self, session: Session) -> bool:
        """Whether it came up: the port it bound (port 0: the kernel's choice, so no other process can take it
        between a probe and the bind), read from the line it prints, then its first answer."""
        deadline = time.monotonic() + START_SECONDS
        logfile = session.mirror.parent / f"{session.key}.log"
        while time.monotonic() < deadline and session.alive():
            if not session.port:
                with contextlib.suppress(OSError):
                    found = _LISTENING.search(logfile.read_text(errors="replace"))
                    session.port = int(found.group(1)) if found else 0
            if session.port:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{session.base}{PREFIX}/{session.key}/data/plugins_listing", timeout=2).is_success:
                        return True
            time.sleep(0.2)
        return False

    def _mirror(self, session: Session) -> bool:
        """Copy what is new in the jobs' event files into the session's mirror; whether there is any file."""
        session.mirrored_at = time.monotonic()
        any_file = False
        for job_id in session.job_ids:
            for rel in self.event_files(job_id):
                any_file = True
                with contextlib.suppress(OSError):
                    self._copy(session, job_id, rel)
        return any_file

    def _copy(self, session: Session, job_id: int, rel: str) -> None:
        try:
            fd = self.jobs.open_output(job_id, rel)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            return
        dst = session.mirror / str(job_id) / rel  # rel: plain names from the no-link walk, no ".."
        with os.fdopen(fd, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            done = session.copied.get((job_id, rel), 0)
            if size < done:  # rewritten: copied again from the start
                done = 0
            if size == done and dst.exists():
                return
            dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            src.seek(done)
            with open(dst, "r+b" if done and dst.exists() else "wb") as out:
                out.seek(done)
                out.truncate()
                while done < size and (chunk := src.read(min(COPY_CHUNK, size - done))):
                    out.write(chunk)
                    done += len(chunk)
        session.copied[(job_id, rel)] = done

    # Stopping ---------------------------------------------------------------------------------------------
    def _make_room(self) -> None:
        with self._lock:
            live = sorted(self._sessions.values(), key=lambda s: s.used_at)
        for session in live[: max(0, len(live) - self.settings.tensorboard_max_sessions + 1)]:
            log.info("stopping TensorBoard %s: %s at once at most", session.key,
                     self.settings.tensorboard_max_sessions)
            self.stop(session.key)

    def reap(self, now: float | None = None) -> list[str]:
        """Stop the sessions idle longer than the setting; the keys stopped."""
        now = time.monotonic() if now is None else now
        idle = self.settings.tensorboard_idle_minutes * 60
        with self._lock:
            stale = [k for k, s in self._sessions.items() if now - s.used_at > idle or not s.alive()]
        for key in stale:
            self.stop(key)
        return stale

    def _ensure_reaper(self) -> None:
        with self._lock:
            if self._reaper is not None and self._reaper.is_alive():
                return
            self._reaper = threading.Thread(target=self._reap_loop, name="portal-tensorboard-reaper", daemon=True)
            self._reaper.start()

    def _reap_loop(self) -> None:
        every = min(30.0, self.settings.tensorboard_idle_minutes * 60 / 4)
        while True:
            time.sleep(every)
            self.reap()
            with self._lock:
                if not self._sessions:
                    self._reaper = None
                    return

    def stop(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            self._kill(session)
            log.info("stopped TensorBoard for jobs %s", key)

    def stop_all(self) -> None:
        with self._lock:
            keys = list(self._sessions)
        for key in keys:
            self.stop(key)

    def running(self) -> list[str]:
        with self._lock:
            return [k for k, s in self._sessions.items() if s.alive()]

    @staticmethod
    def _kill(session: Session) -> None:
        if session.proc is not None and session.proc.poll() is None:
            session.proc.terminate()
            try:
                session.proc.wait(5)
            except subprocess.TimeoutExpired:
                session.proc.kill()
                session.proc.wait()
        shutil.rmtree(session.mirror, ignore_errors=True)
