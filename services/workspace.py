"""The workspace (scripts users can pick), uploads, and files a job wrote: all paths confined."""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from services.models import ValidationProblem

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
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
        if probe.is_symlink():
            raise FileNotFoundError(relative)
    return candidate


def sanitize_filename(name: str) -> str:
    base = Path(name.replace("\\", "/")).name
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = _SAFE_NAME.sub("-", stem).strip(".-")[:80] or "script"
    return f"{stem}.{ext.lower()}" if ext else stem


def save_upload(workspace: Path, filename: str, data: bytes, max_bytes: int) -> str:
    """Store an uploaded script in the workspace; returns its workspace path. Never overwrites another file."""
    problems: dict[str, str] = {}
    if not filename.lower().endswith(".py"):
        problems["upload"] = f"'{filename}' is not a Python file: upload a .py script"
    elif len(data) > max_bytes:
        problems["upload"] = f"the file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:g} MB"
    elif not data.strip():
        problems["upload"] = "the file is empty"
    else:
        try:
            compile(data, filename, "exec")
        except (SyntaxError, ValueError) as exc:
            line = getattr(exc, "lineno", None)
            where = f" (line {line})" if line else ""
            problems["upload"] = f"the file is not valid Python{where}: {getattr(exc, 'msg', exc)}"
    if problems:
        raise ValidationProblem(problems)
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
        target = uploads / f"{Path(name).stem}-{n}.py"
    target.write_bytes(data)
    return target.relative_to(workspace).as_posix()


@dataclass(frozen=True)
class OutputFile:
    path: str
    size: int


def list_files(root: Path) -> list[OutputFile]:
    if not root.is_dir():
        return []
    out: list[OutputFile] = []
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or not p.is_file():
            continue
        out.append(OutputFile(p.relative_to(root).as_posix(), p.stat().st_size))
        if len(out) >= MAX_LISTED_FILES:
            break
    return out
