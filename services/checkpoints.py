"""Checkpoints: "Save checkpoint" on any backend, with when it was asked for, delivered and written, the
checkpoints a job wrote (by folder convention), and "Retry from checkpoint".

The convention (docs/scripts.md): a checkpoint is a file or a folder directly under ``checkpoints/`` in the job's
output. Nothing a job writes is trusted: links are never listed nor followed, and a checkpoint holding one is not
offered to resume from (the new job would read wherever it points).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from services.auth import may_act
from services.backends.base import BackendError
from services.job_charts import Series
from services.models import ACTIVE_STATUSES, Conflict, JobStatus, JobView, NotFound, User
from services.safe_files import UnsafeFile, open_dir, open_read, split
from services.store.checkpoint_tables import CheckpointRequest
from services.store.orm import Job, JobEvent, utcnow
from services.workspace import list_files

if TYPE_CHECKING:
    from services.jobs import JobService

FOLDER = "checkpoints"
# A pod's clock and the portal's may differ a little (the file's time is the node's, on the shared volume).
CLOCK_SLACK = timedelta(seconds=2)


class Forbidden(Exception):
    """The user sees the job but may not act on it (only its owner and admins may)."""


@dataclass(frozen=True)
class Checkpoint:
    name: str  # a file or folder directly under checkpoints/
    size: int
    modified: datetime
    files: int


@dataclass(frozen=True)
class RequestView:
    id: int
    requested_by: str
    requested_at: datetime
    delivered_at: datetime | None
    written_at: datetime | None
    written_name: str | None
    error: str | None


def _view(r: CheckpointRequest) -> RequestView:
    return RequestView(r.id, r.requested_by, r.requested_at, r.delivered_at, r.written_at, r.written_name, r.error)


def list_checkpoints(output_dir: Path) -> list[Checkpoint]:
    """The job's checkpoints, newest last; only plain files count (list_files follows no link)."""
    grouped: dict[str, list[tuple[int, float]]] = {}
    for f in list_files(output_dir):
        parts = f.path.split("/")
        if len(parts) >= 2 and parts[0] == FOLDER:
            grouped.setdefault(parts[1], []).append((f.size, f.modified))
    out = [Checkpoint(name, sum(s for s, _ in files), datetime.fromtimestamp(max(m for _, m in files), UTC),
                      len(files)) for name, files in grouped.items()]
    return sorted(out, key=lambda c: (c.modified, c.name))


def _holds_links(root: Path, name: str) -> bool:
    """Whether checkpoints/<name> is, or holds, anything but plain files and folders (a link, a FIFO)."""
    try:
        fd = open_dir(root, FOLDER)
    except (UnsafeFile, FileNotFoundError, NotADirectoryError):
        return True
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return True
    finally:
        os.close(fd)
    if stat.S_ISREG(st.st_mode):
        return st.st_nlink != 1
    if not stat.S_ISDIR(st.st_mode):
        return True
    for folder, dirs, files in os.walk(root / FOLDER / name, followlinks=False):
        for entry in dirs + files:
            mode = os.lstat(os.path.join(folder, entry)).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                return True
    return False


class CheckpointService:
    """Over the job service: its sessions, backend and visibility rules."""

    def __init__(self, jobs: JobService):
        self.jobs = jobs

    def _actable(self, user: User, job_id: int) -> JobView:
        job = self.jobs.get(user, job_id)  # NotFound for a job this user may not see
        if not may_act(user, job.owner):
            raise Forbidden(f"Only {job.owner} or an admin may save or resume checkpoints of job {job_id}.")
        return job

    def request(self, user: User, job_id: int) -> RequestView:
        """Ask the running job's script to save a checkpoint now; the row records what happened to the ask."""
        job = self._actable(user, job_id)
        if job.status is not JobStatus.RUNNING:
            raise Conflict(f"Job {job.name} is {job.status.value.lower()}, not running, so it cannot save a "
                           "checkpoint now.")
        with self.jobs.session() as s:
            row = CheckpointRequest(job_id=job_id, requested_by=user.name, requested_at=utcnow())
            s.add(row)
            s.add(JobEvent(job_id=job_id, ts=row.requested_at, status=job.status.value,
                           message=f"Checkpoint requested by {user.name}"))
            s.flush()
            request_id = row.id
            ref = dict(s.get_one(Job, job_id).backend_ref or {})
        try:
            self.jobs.backend.signal_checkpoint(job_id, ref)
        except BackendError as exc:
            with self.jobs.session() as s:
                s.get_one(CheckpointRequest, request_id).error = str(exc)
            raise
        with self.jobs.session() as s:
            row = s.get_one(CheckpointRequest, request_id)
            row.delivered_at = utcnow()
            return _view(row)

    def requests(self, user: User, job_id: int) -> list[RequestView]:
        """The job's requests, newest first, each matched to the first checkpoint that appeared after it."""
        self.jobs.get(user, job_id)
        checkpoints = list_checkpoints(self.jobs.backend.output_dir(job_id))
        with self.jobs.session() as s:
            rows = list(s.scalars(select(CheckpointRequest).where(CheckpointRequest.job_id == job_id)
                                  .order_by(CheckpointRequest.id)))
            # A name matched before matches again once written again since (a script saving to latest.pt).
            claimed: dict[str, datetime] = {}
            for r in rows:
                if r.written_name and r.written_at is not None:
                    claimed[r.written_name] = max(r.written_at, claimed.get(r.written_name, r.written_at))
            for row in rows:
                if row.written_at is not None or row.error:
                    continue
                since = row.requested_at - CLOCK_SLACK
                found = next((c for c in checkpoints if c.modified >= since
                              and (c.name not in claimed or c.modified > claimed[c.name])), None)
                if found is not None:
                    row.written_at, row.written_name = max(found.modified, row.requested_at), found.name
                    claimed[found.name] = row.written_at
            return [_view(r) for r in reversed(rows)]

    def checkpoints(self, user: User, job_id: int) -> list[Checkpoint]:
        self.jobs.get(user, job_id)
        return list_checkpoints(self.jobs.backend.output_dir(job_id))

    def resume_source(self, user: User, job_id: int, name: str) -> str:
        """The checkpoint `name` of job `job_id` checked as one to resume from: '<job id>/<name>'."""
        job = self._actable(user, job_id)
        if job.status in ACTIVE_STATUSES:
            # A running job could swap the checked checkpoint for a link before the new job reads it.
            raise Conflict(f"Job {job_id} is still {job.status.value.lower()}; a checkpoint can be resumed from once "
                           "its job has ended.")
        root = self.jobs.backend.output_dir(job_id)
        if not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
            raise NotFound(f"Job {job_id} has no checkpoint named {name!r}.")
        if name not in {c.name for c in list_checkpoints(root)}:
            raise NotFound(f"Job {job_id} has no checkpoint named {name!r}.")
        if _holds_links(root, name):
            raise Conflict(f"The checkpoint {name!r} holds a link or a special file; the portal resumes only from "
                           "plain files and folders.")
        return f"{job_id}/{name}"

    def retry_from(self, user: User, job_id: int, name: str) -> int:
        """A new job (a retry of this one) started from the checkpoint: `--resume-from` and PORTAL_RESUME_FROM."""
        job = self._actable(user, job_id)
        if job.status in ACTIVE_STATUSES:
            raise Conflict("The job is still running; stop it before retrying from a checkpoint.")
        source = self.resume_source(user, job_id, name)
        values = self.jobs.clone_values(user, job_id) | {"resume_from": source}
        return self.jobs.submit(user, values, parent_id=job_id, parent_kind="retry")


def resume_problem(jobs: JobService, user: User | None, value: object) -> str | None:
    """Why a submission may not resume from `value` ('<job id>/<name>'), or None: the user may act on that job,
    the checkpoint exists and holds only plain files, and the backend can show it to the new job."""
    if not isinstance(value, str) or "/" not in value or not value.split("/", 1)[0].isdigit():
        return None  # the request's own validation words it
    if user is None:
        return "a checkpoint is resumed from by a user, with Retry from checkpoint"
    if jobs.backend.name == "kubernetes" and not jobs.settings.job_data_volume_claim:
        return "resuming from a checkpoint needs the shared data volume (PORTAL_JOB_DATA_VOLUME_CLAIM) on a cluster"
    job_id, name = value.split("/", 1)
    try:
        CheckpointService(jobs).resume_source(user, int(job_id), name)
    except (NotFound, Forbidden, Conflict) as exc:
        return str(exc).rstrip(".")
    return None


def continued_series(jobs: JobService, user: User, job: JobView, series: dict[str, Series]) -> dict[str, Series]:
    """A resumed job's curves continue its parent's: each series is the parent's points before the resumed
    job's first x, then its own (a script that counts its steps on from the checkpoint's joins them seamlessly;
    one that starts again at 0 shows its own curve only). A parent this user may not see adds nothing."""
    source = str(job.request.get("resume_from") or "")
    if not source.split("/", 1)[0].isdigit() or not series:
        return series
    try:
        jobs.get(user, int(source.split("/", 1)[0]))
    except NotFound:
        return series
    parent = jobs.metric_series(int(source.split("/", 1)[0]))
    out = dict(series)
    for name, own in series.items():
        before = parent.get(name)
        if before is None or before.axis != own.axis or not len(own.x):
            continue
        keep = before.x < own.x[0]
        if not keep.any():
            continue
        mean = None
        if own.mean is not None or before.mean is not None:  # what smoothing averages: y where not downsampled
            mean = np.concatenate([(before.y if before.mean is None else before.mean)[keep],
                                   own.y if own.mean is None else own.mean])
        out[name] = Series(np.concatenate([before.x[keep], own.x]), np.concatenate([before.y[keep], own.y]),
                           own.axis, mean)
    return out


def continued_compare(jobs: JobService, user: User, picked: list[JobView],
                      series: dict[str, dict[int, Series]]) -> dict[str, dict[int, Series]]:
    """Compare's curves by step, each resumed run's continuing its parent's as on its job page (continued_series)."""
    out = {name: dict(by_job) for name, by_job in series.items()}
    for job in picked:
        if not job.request.get("resume_from"):
            continue
        own = {name: by_job[job.id] for name, by_job in series.items() if job.id in by_job}
        for name, joined in continued_series(jobs, user, job, own).items():
            out[name][job.id] = joined
    return out


def copy_checkpoint(source: Path, dest: Path, gid: int) -> Path:
    """A copy of a checkpoint for a sandboxed job (its own UID cannot read the parent's 0700 output): the portal's,
    readable by the job's group only; only plain files and folders. `source` is <jobs dir>/<id>/output/checkpoints/
    <name>: every component below the jobs folder is opened without following a link (the parent job owns them all,
    one switched in since the check is left out, never read through)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.chown(dest.parent, -1, gid)
    os.chmod(dest.parent, 0o750)  # noqa: S103 - this job's group only
    root, relative = split(source, 4)

    def copy_file(fd: int, to: Path) -> None:
        with os.fdopen(fd, "rb") as f, open(to, "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
        os.chown(to, -1, gid)
        os.chmod(to, 0o640)

    def copy_dir(rel: PurePosixPath, target: Path) -> None:
        try:
            fd = open_dir(root, rel)
        except OSError:  # gone or swapped for a link since the check
            return
        try:
            kinds = {n: os.stat(n, dir_fd=fd, follow_symlinks=False).st_mode for n in os.listdir(fd)}
        finally:
            os.close(fd)
        target.mkdir(parents=True, exist_ok=True)
        os.chown(target, -1, gid)
        os.chmod(target, 0o750)  # noqa: S103 - this job's group only
        for name, mode in sorted(kinds.items()):
            if stat.S_ISDIR(mode):
                copy_dir(rel / name, target / name)
            elif stat.S_ISREG(mode):
                with contextlib.suppress(OSError):
                    copy_file(open_read(root, rel / name), target / name)

    try:
        copy_file(open_read(root, relative), dest)
    except UnsafeFile:  # a folder (or a link, a FIFO: then copy_dir finds nothing to open)
        copy_dir(relative, dest)
    except OSError:
        pass
    return dest
