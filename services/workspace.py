"""The workspace (scripts users can pick), uploads, and files a job wrote: all paths confined.

With one user (single mode) the workspace is that person's folder, as on a laptop. With more (proxy, oidc) each
user has a private folder, users/<name>-<hash>/, for uploads and scripts cloned from others' jobs; what the admin
put at the top of the workspace (the examples) is shared read-only. Nobody lists, downloads or runs another
user's files; a job of someone else's is cloned with the script snapshot it ran, copied into the cloner's folder.
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from services.config import Settings
from services.models import User, ValidationProblem
from services.safe_files import has_file, read_bytes, split, walk_files

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
# Between an upload's name and its version number: a sanitized name never holds "--", so train--2.py can only be the
# second train.py, while an upload the user named train-2.py stays its own script (services/script_names.py finds
# a bare name's versions by it). A character outside _SAFE_NAME would do too, but not as a ConfigMap key.
VERSION_MARK = "--"
_DIGITS = re.compile(r"(\d+)")
MAX_LISTED_FILES = 1000


def seed_workspace(workspace: Path) -> None:
    """On first start the workspace holds the example scripts, so a new user has something to run."""
    workspace.mkdir(parents=True, exist_ok=True)
    marker = workspace / ".seeded"
    if marker.exists():
        return
    for src in sorted(EXAMPLES_DIR.glob("train_*.py")):  # training scripts; not the notebook client example
        dst = workspace / src.name
        if not dst.exists():
            shutil.copyfile(src, dst)
    marker.touch()


def list_scripts(workspace: Path) -> list[str]:
    if not workspace.is_dir():
        return []
    out = []
    for p in sorted(workspace.rglob("*.py")):
        if p.is_symlink() or any(part.startswith(".") for part in p.relative_to(workspace).parts):
            continue
        out.append(p.relative_to(workspace).as_posix())
    return out


def confined(root: Path, relative: str) -> Path:
    """Resolve a user-given relative path inside root; refuse anything that escapes it (.., /, symlinks)."""
    if not relative or relative.startswith(("/", "\\")) or "\x00" in relative:
        raise FileNotFoundError(relative)
    root_r = root.resolve()
    candidate = (root_r / relative).resolve()
    if not candidate.is_relative_to(root_r) or candidate == root_r:
        raise FileNotFoundError(relative)
    # A symlink anywhere on the way could point outside after the check above on a later swap;
    # refusing symlinks outright keeps the rule simple.
    probe = root_r
    for part in candidate.relative_to(root_r).parts:
        probe = probe / part
        try:
            link = probe.is_symlink()
        except OSError:  # a name no file can have (longer than the file system allows): there is no such file
            raise FileNotFoundError(relative) from None
        if link:
            raise FileNotFoundError(relative)
    return candidate


def sanitize_filename(name: str) -> str:
    base = Path(name.replace("\\", "/")).name
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = re.sub(r"-{2,}", "-", _SAFE_NAME.sub("-", stem)).strip(".-")[:80] or "script"
    return f"{stem}.{ext.lower()}" if ext else stem


def upload_problem(filename: str, data: bytes, max_bytes: int) -> str | None:
    """Why an upload cannot be a training script, or None: checked as the file is chosen and again as it is saved."""
    if not filename.lower().endswith(".py"):
        return f"'{filename}' is not a Python file: upload a .py script"
    if len(data) > max_bytes:
        return f"the file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:g} MB"
    if not data.strip():
        return "the file is empty"
    try:
        compile(data, filename, "exec")
    # Nesting the parser cannot take ends in RecursionError or MemoryError: also the uploader's mistake.
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        return f"the file is not valid Python{where}: {getattr(exc, 'msg', exc)}"
    return None


def save_upload(workspace: Path, filename: str, data: bytes, max_bytes: int) -> str:
    """Store an uploaded script in the workspace; returns its workspace path. Never overwrites another file."""
    problem = upload_problem(filename, data, max_bytes)
    if problem:
        raise ValidationProblem({"upload": problem})
    uploads = workspace / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    name = sanitize_filename(filename)
    digest = hashlib.sha256(data).hexdigest()
    target = uploads / name
    n = 1
    while target.exists():
        if hashlib.sha256(target.read_bytes()).hexdigest() == digest:
            return target.relative_to(workspace).as_posix()
        n += 1
        target = uploads / f"{Path(name).stem}{VERSION_MARK}{n}.py"
    target.write_bytes(data)
    return target.relative_to(workspace).as_posix()


@dataclass(frozen=True)
class OutputFile:
    path: str
    size: int
    modified: float = 0.0


def natural_key(path: str) -> list[str | int]:
    """Numbers in a name compare as numbers: epoch5 before epoch45, as a person counts."""
    return [int(part) if i % 2 else part.casefold() for i, part in enumerate(_DIGITS.split(path))]


def list_files(root: Path, hidden: bool = True) -> list[OutputFile]:
    """The plain files under root, links not followed (a job's folder is the job's to fill): the first
    MAX_LISTED_FILES in natural order (epoch5 is listed before epoch10000 is, whatever the walk met first).
    `hidden=False` leaves out dot-files and dot-folders before the cut (a .git folder takes no place)."""
    walked = walk_files(root, MAX_LISTED_FILES, key=natural_key, skip_hidden=not hidden)
    return [OutputFile(rel, size, mtime) for rel, size, mtime in walked]


def has_files(root: Path) -> bool:
    """Whether root holds at least one file `list_files` would list (stops at the first it meets)."""
    return has_file(root)


def _user_key(name: str) -> str:
    # Readable for an admin on disk, and distinct for names that sanitize alike (a.b@x and a-b@x).
    return f"{_SAFE_NAME.sub('-', name).strip('.-')[:40] or 'user'}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


class Workspace:
    """One user's view of the workspace: their own files first, then (with several users) the shared ones."""

    SHARED_HIDDEN = ("users", "uploads")  # never shared: the private folders, and uploads from before they existed

    def __init__(self, settings: Settings):
        self.settings = settings

    @property
    def root(self) -> Path:
        return self.settings.workspace_dir

    @property
    def multi_user(self) -> bool:
        return self.settings.auth_mode != "single"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 1e6)

    def own_dir(self, user: User) -> Path:
        return self.root / "users" / _user_key(user.name) if self.multi_user else self.root

    def _shared_entries(self) -> list[Path]:
        """The top of the shared part: the private folders (and old uploads) are not walked at all."""
        if not self.root.is_dir():
            return []
        return [e for e in sorted(self.root.iterdir()) if e.name not in self.SHARED_HIDDEN and not e.is_symlink()]

    def _shared(self) -> list[str]:
        out: list[str] = []
        for entry in self._shared_entries():
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                out += [f"{entry.name}/{s}" for s in list_scripts(entry)]
            elif entry.suffix == ".py" and entry.is_file():
                out.append(entry.name)
        return out

    def scripts(self, user: User) -> list[str]:
        own = list_scripts(self.own_dir(user))
        if not self.multi_user:
            return own
        return own + [s for s in self._shared() if s not in set(own)]

    def resolve(self, user: User, relative: str) -> Path:
        """The file a script name means for this user (FileNotFoundError when it is not theirs to use)."""
        try:
            path = confined(self.own_dir(user), relative)
            if path.is_file():
                return path
        except FileNotFoundError:
            pass
        if self.multi_user:
            path = confined(self.root, relative)
            # Judged on the path as resolved, not as typed: "./users/…" or "a/../uploads/…" name the same folders.
            if path.relative_to(self.root.resolve()).parts[0] not in self.SHARED_HIDDEN and path.is_file():
                return path
        raise FileNotFoundError(relative)

    def files(self, user: User) -> list[OutputFile]:
        own = list_files(self.own_dir(user), hidden=False)  # the portal's markers (.seeded), .git: not yours
        if not self.multi_user:
            return own
        names = {f.path for f in own}
        return own + [f for f in self._shared_files() if f.path not in names]

    def _shared_files(self) -> list[OutputFile]:
        """The shared part only: the private folders are not walked (nor count against the listing's limit)."""
        out: list[OutputFile] = []
        for entry in self._shared_entries():
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                out += [OutputFile(f"{entry.name}/{f.path}", f.size, f.modified)
                        for f in list_files(entry, hidden=False)]
            elif entry.is_file():
                st = entry.stat()
                out.append(OutputFile(entry.name, st.st_size, st.st_mtime))
        # Each folder's listing is its first files in natural order; so is the cut of them all together.
        return sorted(out, key=lambda f: natural_key(f.path))[:MAX_LISTED_FILES]

    @property
    def upload_widget_mb(self) -> int:
        """The limit for Streamlit's uploader, which counts whole MiB: the smallest that holds the portal's limit
        (files between the two are refused by `upload_problem` as soon as they are chosen)."""
        return max(1, math.ceil(self.max_upload_bytes / 2**20))

    def upload_problem(self, filename: str, data: bytes) -> str | None:
        return upload_problem(filename, data, self.max_upload_bytes)

    def save_upload(self, user: User, filename: str, data: bytes) -> str:
        return save_upload(self.own_dir(user), filename, data, self.max_upload_bytes)

    def adopt(self, user: User, snapshot: Path, job_id: int) -> str:
        """A copy of another user's job's script snapshot in this user's folder; returns its workspace path."""
        name = sanitize_filename(snapshot.name)
        # <jobs>/<id>/script/<name>: a pod may write in its job folder, so no link below <jobs> is followed.
        data = read_bytes(*split(snapshot, 3), limit=8 * 1024 * 1024)
        target_dir = self.own_dir(user) / "cloned"
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / f"job{job_id}-{name}"
        target.write_bytes(data)
        return target.relative_to(self.own_dir(user)).as_posix()
