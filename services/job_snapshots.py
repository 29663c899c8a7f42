"""The script a job ran, as snapshotted at submit (<jobs>/<id>/script/<name>), and how it differs from the
workspace file of the same name or another job's snapshot.

A job may write in its own folder (a pod, its whole job folder on the data volume), so a snapshot is read only
through services/safe_files.py, no link followed, and at most MAX_SCRIPT_BYTES of it.
"""

from __future__ import annotations

import difflib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from services.models import JobView, NotFound, User
from services.safe_files import open_read, read_bytes, split
from services.script_names import current_path

if TYPE_CHECKING:
    from services.jobs import JobService

MAX_SCRIPT_BYTES = 1024 * 1024  # a training script is far smaller; a bigger file is shown cut, and not diffed
MAX_DIFF_LINES = 20_000  # difflib's matcher grows with the product of the two lengths


def write_snapshot(jdir: Path, source: Path, private: bool) -> Path:
    """The script as submitted, kept with the job on every backend: what a clone by someone else runs. `private`:
    a local job's, the portal's alone from the first byte (a running job must not catch another user's script in
    the moment before the sandbox set-up gives it to its own job); pods read theirs from the data volume."""
    folder = jdir / "script"
    jdir.mkdir(mode=0o711 if private else 0o755, parents=True, exist_ok=True)
    folder.mkdir(mode=0o700 if private else 0o755, exist_ok=True)
    target = folder / source.name
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    with open(source, "rb") as src, os.fdopen(os.open(target, flags, 0o600 if private else 0o644), "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


class NotComparable(Exception):
    """A script too large to diff here; the sentence says so."""


@dataclass(frozen=True)
class Script:
    job_id: int
    path: str  # the workspace path the job was submitted with
    text: str
    truncated: bool  # only the first MAX_SCRIPT_BYTES are in `text`

    @property
    def label(self) -> str:
        return f"job #{self.job_id}: {self.path}"


@dataclass(frozen=True)
class ScriptDiff:
    old: str  # what is compared (a label: "job #7: train.py")
    new: str
    diff: str  # unified diff; "" when identical

    @property
    def identical(self) -> bool:
        return not self.diff


def snapshot_file(jobs: JobService, job: JobView) -> Path:
    return jobs.settings.jobs_dir / str(job.id) / "script" / PurePosixPath(str(job.request.get("script", ""))).name


def _text(data: bytes) -> tuple[str, bool]:
    truncated = len(data) > MAX_SCRIPT_BYTES
    return data[:MAX_SCRIPT_BYTES].decode("utf-8", errors="replace"), truncated


def _read_snapshot(jobs: JobService, job: JobView) -> Script:
    path = str(job.request.get("script", ""))
    try:
        # <jobs>/<id>/script/<name>: the walk starts at the jobs folder, the job's own folder may be a link.
        data = read_bytes(*split(snapshot_file(jobs, job), 3), limit=MAX_SCRIPT_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError):
        raise NotFound(f"The script job {job.id} ran is not kept (it never started, or its files were removed)."
                       ) from None
    text, truncated = _text(data)
    return Script(job.id, path, text, truncated)


def script(jobs: JobService, user: User, job_id: int) -> Script:
    """The snapshot of a job `user` may see (NotFound otherwise, or when it is not kept)."""
    return _read_snapshot(jobs, jobs.get(user, job_id))


def open_script(jobs: JobService, user: User, job_id: int) -> tuple[int, str]:
    """A read descriptor of the whole snapshot, and its file name, for a download."""
    job = jobs.get(user, job_id)
    path = snapshot_file(jobs, job)
    try:
        return open_read(*split(path, 3)), path.name
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError):
        raise NotFound(f"The script job {job.id} ran is not kept (it never started, or its files were removed)."
                       ) from None


def workspace_script(jobs: JobService, user: User, path: str) -> Script | None:
    """The file `path` names in `user`'s workspace now (their own, or a shared example), or None."""
    try:
        file = jobs.workspace.resolve(user, path)
        data = read_bytes(file.parent, file.name, limit=MAX_SCRIPT_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError):
        return None
    text, truncated = _text(data)
    return Script(0, path, text, truncated)


def unified_diff(old: Script, new: Script, old_label: str, new_label: str) -> ScriptDiff:
    if old.truncated or new.truncated:
        raise NotComparable(f"A script over {MAX_SCRIPT_BYTES // 1024 // 1024} MiB is not compared here; download both "
                       "and diff them locally.")
    a, b = old.text.splitlines(keepends=True), new.text.splitlines(keepends=True)
    if len(a) > MAX_DIFF_LINES or len(b) > MAX_DIFF_LINES:
        raise NotComparable(f"A script over {MAX_DIFF_LINES:,} lines is not compared here; download both and diff them "
                       "locally.")
    lines = difflib.unified_diff(a, b, fromfile=old_label, tofile=new_label)
    # A last line without its newline would run into the next one.
    diff = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    return ScriptDiff(old_label, new_label, diff)


def diff_with_workspace(jobs: JobService, user: User, job_id: int) -> ScriptDiff:
    """The job's snapshot against the workspace file of its name as `user`'s workspace has it now (for an upload:
    the newest upload of that name)."""
    snap = script(jobs, user, job_id)
    path = current_path(jobs.workspace, user, snap.path)
    current = workspace_script(jobs, user, path)
    if current is None:
        raise NotFound(f"There is no '{path}' in your workspace now to compare with.")
    return unified_diff(snap, current, snap.label, f"workspace: {path}")


def diff_with_job(jobs: JobService, user: User, job_id: int, other_id: int) -> ScriptDiff:
    """The job's snapshot against another job's (both `user` may see)."""
    snap = script(jobs, user, job_id)
    other = script(jobs, user, other_id)
    return unified_diff(snap, other, snap.label, other.label)
