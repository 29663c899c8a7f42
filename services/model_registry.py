"""The model registry: "Register model" on a finished job puts files or folders of its output into the team's MLflow
tracking server as a model version (with the job's parameters, final metrics, tags and a link back), in the
background; the job page and the API list each registration, pending, done or failed with a sentence.

A request is checked and recorded here (a `model_registrations` row, pending); services/registry_worker.py carries
it out, and again after a restart, tagging what it makes in MLflow with the registration's id so that a retry finds
it rather than making a second version. Nothing a job wrote is trusted: a chosen path with `..`, a link anywhere on
it or under it, or a special file is refused with a sentence, and the files are read without following links.
"""

from __future__ import annotations

import os
import re
import stat
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.auth import may_act
from services.models import Conflict, Forbidden, JobView, User, ValidationProblem
from services.safe_files import UnsafeFile, open_dir
from services.store.notification_tables import NotificationMember
from services.store.orm import utcnow
from services.store.registry_tables import DONE, FAILED, PENDING, ModelRegistration

if TYPE_CHECKING:
    from services.jobs import JobService

MAX_PATHS = 100
MAX_FILES = 10_000  # files one registration uploads (a checkpoint folder, not a whole dataset)
MAX_NAME = 250
MAX_ALIAS = 255
_ALIAS = re.compile(r"^[\w\-]+$", re.ASCII)
_VERSION_LIKE = re.compile(r"^[vV]\d+$")


@dataclass(frozen=True)
class RegistrationView:
    id: int
    job_id: int
    key: str
    requested_by: str
    requested_at: datetime
    name: str
    alias: str | None
    paths: list[str]
    status: str  # pending, done, failed
    version: str | None
    run_id: str | None
    model_url: str | None
    error: str | None
    finished_at: datetime | None

    def line(self) -> str:
        """The registration in words, for the job page."""
        alias = f" (alias {self.alias})" if self.alias else ""
        if self.status == DONE:
            return f"Registered as {self.name} version {self.version}{alias} by {self.requested_by}"
        if self.status == FAILED:
            return f"Registering {self.name}{alias} failed: {self.error}"
        retrying = f" (retrying: {self.error})" if self.error else ""
        return f"Registering {self.name}{alias}: uploading {len(self.paths)} path(s) to MLflow{retrying}"


def view(r: ModelRegistration) -> RegistrationView:
    return RegistrationView(r.id, r.job_id, r.key, r.requested_by, r.requested_at, r.model_name, r.alias,
                            list(r.paths), r.status, r.version, r.run_id, r.model_url, r.error, r.finished_at)


# What MLflow accepts (mlflow/utils/validation.py), said as sentences before anything is sent --------------------
def name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return "give the model a name"
    if len(name) > MAX_NAME:
        return f"a model name has at most {MAX_NAME} characters"
    if "/" in name or ":" in name:
        return "a model name may not contain '/' or ':'"
    if name != name.strip() or name in (".", "..") or any(ord(c) < 32 for c in name):
        return "a model name may not start or end with a space, be '.' or '..', or hold control characters"
    return None


def alias_problem(alias: object) -> str | None:
    if alias is None or alias == "":
        return None
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        return "an alias may only contain letters, digits, underscores (_) and dashes (-)"
    if len(alias) > MAX_ALIAS:
        return f"an alias has at most {MAX_ALIAS} characters"
    if alias.lower() == "latest":
        return "'latest' is reserved by MLflow; choose another alias"
    if _VERSION_LIKE.match(alias):
        return f"'{alias}' looks like a version (v1, v2, ...); choose another alias"
    return None


def _relative(path: object) -> PurePosixPath:
    if not isinstance(path, str) or not path.strip() or "\x00" in path or "\\" in path or path.startswith("/"):
        raise UnsafeFile(str(path))
    parts = [p for p in PurePosixPath(path).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafeFile(path)
    return PurePosixPath(*parts)


def selected_files(root: Path, prefix: PurePosixPath, path: object) -> list[str]:
    """The plain files that the chosen `path` (a file or folder of the output at root/prefix) stands for, relative
    to the output. UnsafeFile (with a sentence) for a path with '..', one that is or goes through a link, or a folder
    that holds a link or a special file: the upload would read wherever it points."""
    try:
        rel = _relative(path)
    except UnsafeFile:
        raise UnsafeFile(f"{path!r} is not a path inside the job's output (no '..', not absolute)") from None
    try:
        fd = open_dir(root, prefix / rel.parent if str(rel.parent) != "." else prefix)
    except (UnsafeFile, FileNotFoundError, NotADirectoryError):
        raise UnsafeFile(f"'{rel}' is not in the job's output, or goes through a link") from None
    found: list[str] = []
    try:
        try:
            st = os.stat(rel.name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            raise UnsafeFile(f"'{rel}' is not in the job's output") from None
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeFile(f"'{rel}' is a link; the portal registers only the job's own files")
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            return [str(rel)]
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeFile(f"'{rel}' is not a plain file or folder")
        for folder, dirs, files, dfd in os.fwalk(rel.name, dir_fd=fd, follow_symlinks=False):
            for entry in sorted(dirs + files):
                mode = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(mode.st_mode):
                    continue
                inner = PurePosixPath(rel.parent, folder, entry)
                if not stat.S_ISREG(mode.st_mode) or mode.st_nlink != 1:
                    raise UnsafeFile(f"'{inner}' is a link or a special file; the portal registers only the job's "
                                     "own plain files")
                found.append(str(inner))
                if len(found) > MAX_FILES:
                    raise UnsafeFile(f"'{rel}' holds more than {MAX_FILES:,} files")
    finally:
        os.close(fd)
    if not found:
        raise UnsafeFile(f"the folder '{rel}' holds no files")
    return found


def output_root(jobs: JobService, job_id: int) -> tuple[Path, PurePosixPath]:
    """The job's output as (trusted root, relative part): from the jobs folder, since on the local backend the job
    could even replace its own job folder with a link (as services/job_files.py opens it)."""
    out = jobs.backend.output_dir(job_id)
    return out.parent.parent, PurePosixPath(out.parent.name, out.name)


def tracking_uri_for(settings: Any, groups: tuple[str, ...] | list[str]) -> str:
    """The owner's team server: the first group listed in mlflow_group_uris they are in, else the default."""
    for group, uri in settings.mlflow_group_uris.items():
        if group in groups:
            return uri
    return settings.mlflow_tracking_uri


def remembered_groups(s: Session, owner: str) -> tuple[str, ...]:
    """The owner's groups as of their last submit (what chose the server, and chooses the team's login)."""
    return tuple(s.scalars(select(NotificationMember.group).where(NotificationMember.owner == owner)))


class ModelRegistry:
    """Over the job service: its sessions, backend, settings and visibility rules."""

    def __init__(self, jobs: JobService):
        self.jobs = jobs

    def _owner_groups(self, user: User, owner: str) -> tuple[str, ...]:
        if user.name == owner:
            return user.groups
        with self.jobs.session() as s:  # an admin registering another's job
            return remembered_groups(s, owner)

    def configured(self, user: User, owner: str) -> bool:
        return bool(tracking_uri_for(self.jobs.settings, self._owner_groups(user, owner)))

    def register(self, user: User, job_id: int, paths: object, name: object, alias: object = None) -> RegistrationView:
        """Check and record a registration (pending); the worker uploads and registers it."""
        job = self.jobs.get(user, job_id)  # NotFound for a job this user may not see
        if not may_act(user, job.owner):
            raise Forbidden(f"Only {job.owner} or an admin may register models from job {job_id}.")
        if job.is_active:
            raise Conflict(f"Job {job.name} is {job.status.value.lower()}; register a model once it has finished.")
        uri = tracking_uri_for(self.jobs.settings, self._owner_groups(user, job.owner))
        if not uri:
            raise Conflict("No MLflow tracking server is configured for this job's owner (PORTAL_MLFLOW_TRACKING_URI "
                           "or PORTAL_MLFLOW_GROUP_URIS); ask an admin.")
        problems: dict[str, str] = {}
        if (why := name_problem(name)) is not None:
            problems["name"] = why
        if (why := alias_problem(alias)) is not None:
            problems["alias"] = why
        chosen = self._checked_paths(job, paths, problems)
        if problems:
            raise ValidationProblem(problems)
        now = utcnow()
        with self.jobs.session() as s:
            row = ModelRegistration(job_id=job.id, key=uuid.uuid4().hex, requested_by=user.name, requested_at=now,
                                    model_name=str(name), alias=str(alias) if alias else None, paths=chosen,
                                    tracking_uri=uri, status=PENDING, attempts=0, next_attempt_at=now)
            s.add(row)
            s.flush()
            return view(row)

    def _checked_paths(self, job: JobView, paths: object, problems: dict[str, str]) -> list[str]:
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not paths or len(paths) > MAX_PATHS:
            problems["paths"] = f"choose between 1 and {MAX_PATHS} files or folders of the job's output"
            return []
        root, prefix = output_root(self.jobs, job.id)
        chosen: list[str] = []
        for path in paths:
            try:
                selected_files(root, prefix, path)
            except UnsafeFile as exc:
                problems["paths"] = str(exc)
                return []
            chosen.append(str(_relative(path)))
        return list(dict.fromkeys(chosen))

    def registrations(self, user: User, job_id: int) -> list[RegistrationView]:
        """The job's registrations, newest first."""
        self.jobs.get(user, job_id)
        with self.jobs.session() as s:
            rows = s.scalars(select(ModelRegistration).where(ModelRegistration.job_id == job_id)
                             .order_by(ModelRegistration.id.desc()))
            return [view(r) for r in rows]

    def choices(self, job_id: int) -> list[str]:
        """What the Register form offers: every folder of the output (what a model usually is), then each file."""
        files = [f.path for f in self.jobs.output_files(job_id)]
        folders = sorted({str(PurePosixPath(f).parents[i]) for f in files
                          for i in range(len(PurePosixPath(f).parts) - 1)})
        return [f"{d}/" for d in folders] + files
