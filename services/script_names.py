"""What a script's bare name means when a notebook gives it: `submit_job(script="train.py")` after
`client.upload("train.py")` runs that upload, although the workspace keeps it as uploads/train.py (or
uploads/train--2.py, uploads never overwrite one another, so that a clone runs what its job ran).

The rule: a name without a folder is the user's newest file of that name, the newest upload of it (an upload of
a file already there counts as new again) or the file of that name in their own folder, whichever changed last;
the shared examples only when they have none. A path with a folder means exactly that file.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from services.models import User, ValidationProblem
from services.workspace import VERSION_MARK, Workspace, sanitize_filename

UPLOADS = "uploads"  # the folder of the user's own workspace that services/workspace.py saves uploads in
_VERSION = rf"(?:{re.escape(VERSION_MARK)}[1-9][0-9]*)?"  # a later upload of the same name (train--2.py)


def save_upload(workspace: Workspace, user: User, filename: str, data: bytes) -> str:
    """Store an upload (refused as the Submit page refuses it); returns its workspace path. Made the newest of its
    name even when the same bytes were there already, so the bare name runs what was uploaded last."""
    script = workspace.save_upload(user, filename, data)
    os.utime(workspace.own_dir(user) / script)
    return script


def _newest(own: Path, name: str) -> str | None:
    """The workspace path of the user's newest own file for `name`, or None."""
    base = sanitize_filename(name)
    stem, dot, ext = base.rpartition(".")
    if not dot or ext != "py":
        return None
    upload = re.compile(rf"{re.escape(stem)}{_VERSION}\.py")
    found: list[tuple[int, str]] = []
    for folder, pattern in ((own, None), (own / UPLOADS, upload)):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            wanted = entry.name == name if pattern is None else pattern.fullmatch(entry.name)
            if not wanted:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                rel = entry.name if pattern is None else f"{UPLOADS}/{entry.name}"
                found.append((st.st_mtime_ns, rel))
    return max(found)[1] if found else None


def script_path(workspace: Workspace, user: User, name: str) -> str:
    """The workspace path `name` means for this user; `name` itself when nothing matches (validation says so)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return name
    return _newest(workspace.own_dir(user), name) or name


def current_path(workspace: Workspace, user: User, path: str) -> str:
    """The workspace file a job's script path stands for now: for an upload (uploads/train--2.py), the newest file of
    its name (what `script="train.py"` runs today; uploads themselves never change); for any other, that path."""
    upload = re.fullmatch(rf"{UPLOADS}/([^/]+?){_VERSION}\.py", path)
    return script_path(workspace, user, f"{upload.group(1)}.py") if upload else path


def missing_script(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1] or name
    if base == name:
        return f"'{name}' is not in your workspace: upload it first with client.upload('{name}') (POST /api/v1/files)"
    return (f"'{name}' is not in your workspace (client.workspace_files() lists what is); upload the file with "
            f"client.upload('{base}') (POST /api/v1/files)")


def with_upload_hint(workspace: Workspace, user: User, exc: ValidationProblem, name: object) -> ValidationProblem:
    """The submit's problems, a script that is not in the workspace said as what to do about it over the API."""
    if "script" not in exc.problems or not isinstance(name, str) or not name:
        return exc
    try:
        workspace.resolve(user, name)
        return exc  # there, so its problem is another one
    except FileNotFoundError:
        return ValidationProblem(exc.problems | {"script": missing_script(name)})
