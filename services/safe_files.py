"""Opening files that a job can write to, without following its links.

A job owns its directory (the local job's output, a pod's whole job directory on the data volume), so anything
below that directory may be a symlink, a hard link or a FIFO switched in at any moment. Every read and write of
such a file goes through here: the trusted root is opened as given, each component below it with O_NOFOLLOW
relative to the one before, and what was opened is checked (a plain file with one link) rather than the name.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open: it is refused after fstat


class UnsafeFile(FileNotFoundError):
    """A name that is a link, a hard link, a device or a FIFO: treated as absent, never opened."""


def _parts(relative: str | PurePosixPath) -> list[str]:
    text = str(relative)
    if not text or "\x00" in text or text.startswith(("/", "\\")):
        raise UnsafeFile(text)
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafeFile(text)
    return parts


def open_dir(root: Path, relative: str | PurePosixPath = "") -> int:
    """A descriptor of root/relative, every component below root refused if it is a link."""
    fd = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for part in _parts(relative) if str(relative) not in ("", ".") else []:  # "" or ".": root itself
            try:
                nxt = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
            except OSError as exc:  # ELOOP / ENOTDIR: a link or a file where a folder was expected
                raise UnsafeFile(str(relative)) from exc
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _checked(fd: int, name: str) -> int:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise UnsafeFile(name)
    if _NONBLOCK:
        os.set_blocking(fd, True)
    return fd


def open_read(root: Path, relative: str | PurePosixPath) -> int:
    """A read descriptor of the plain file root/relative (FileNotFoundError if absent or unsafe)."""
    parts = _parts(relative)
    dir_fd = open_dir(root, PurePosixPath(*parts[:-1]))
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            raise
        except OSError as exc:  # ELOOP: a link
            raise UnsafeFile(str(relative)) from exc
    finally:
        os.close(dir_fd)
    return _checked(fd, str(relative))


def open_append(root: Path, relative: str | PurePosixPath, mode: int = 0o600) -> int:
    """An append descriptor of root/relative, made if missing. Whatever else stands at the name (a link, a hard
    link, a FIFO) is unlinked first: only that name goes, the file it pointed at is never written."""
    parts = _parts(relative)
    dir_fd = open_dir(root, PurePosixPath(*parts[:-1]))
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC | _NONBLOCK
    try:
        for _ in range(3):
            try:
                return _checked(os.open(parts[-1], flags, mode, dir_fd=dir_fd), str(relative))
            except OSError:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                    os.unlink(parts[-1], dir_fd=dir_fd)
        raise UnsafeFile(str(relative))
    finally:
        os.close(dir_fd)


def write_replace(root: Path, relative: str | PurePosixPath, data: bytes, mode: int = 0o600) -> None:
    """Write a whole file by rename: whatever link stood at the name is replaced, never written through."""
    parts = _parts(relative)
    dir_fd = open_dir(root, PurePosixPath(*parts[:-1]))
    tmp = f".{parts[-1]}.{os.getpid()}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def read_bytes(root: Path, relative: str | PurePosixPath, limit: int | None = None) -> bytes:
    with os.fdopen(open_read(root, relative), "rb") as fh:
        return fh.read() if limit is None else fh.read(limit)


def split(path: Path, depth: int) -> tuple[Path, PurePosixPath]:
    """`path` as (trusted root, the last `depth` components), e.g. a log jobs/7/job.log with depth 2."""
    parts = path.parts
    return Path(*parts[:-depth]), PurePosixPath(*parts[-depth:])


def open_job_file(path: Path) -> int:
    """A file directly in a job's directory (<jobs dir>/<id>/<name>): the job directory itself may have been
    replaced by the job on the local backend, so the walk starts at the jobs folder."""
    root, rel = split(path, 2)
    return open_read(root, rel)


def walk_files(root: Path, limit: int, max_entries: int = 20_000, key: Callable[[str], Any] | None = None,
               skip_hidden: bool = False) -> Iterator[tuple[str, int, float]]:
    """(relative path, size, mtime) of the plain single-link files under root, links not followed: the first
    `limit` in `key`'s order (of the paths; bytes by default) of all that were walked, so that what is cut is the
    end of that order, not whatever the walk met last. `skip_hidden` leaves out dot-names, and what is below them.

    One descriptor at a time (a folder is reopened from root when its turn comes, not kept open while waiting:
    a job's 25,000 folders must not take the portal's descriptors), and at most `max_entries` names looked at,
    each folder's in `key`'s order."""
    found: list[tuple[str, int, float]] = []
    pending = [""]
    seen = 0
    while pending and seen < max_entries:
        rel = pending.pop()
        try:
            fd = open_dir(root, rel)
        except OSError:  # gone, swapped for a link, or not readable: nothing to list there
            continue
        try:
            names = [n for n in os.listdir(fd) if not (skip_hidden and n.startswith("."))]
            names = sorted(names, key=key)[: max_entries - seen]
            seen += len(names)
            for name in names:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                path = f"{rel}/{name}" if rel else name
                if stat.S_ISDIR(st.st_mode):
                    pending.append(path)
                elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                    found.append((path, st.st_size, st.st_mtime))
        except OSError:
            pass
        finally:
            os.close(fd)
    found.sort(key=None if key is None else lambda f: key(f[0]))
    yield from found[:limit]


def has_file(root: Path, max_entries: int = 20_000) -> bool:
    """Whether root holds a file `walk_files` would list, looking no further than the first one: a folder's
    names are read (unsorted) only until it, and only a name that is a regular file by its directory entry is
    stat-ed for its link count. Links are not followed; at most `max_entries` names are looked at."""
    pending = [""]
    seen = 0
    while pending and seen < max_entries:
        rel = pending.pop()
        try:
            fd = open_dir(root, rel)
        except OSError:
            continue
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    seen += 1
                    if seen > max_entries:
                        break
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(f"{rel}/{entry.name}" if rel else entry.name)
                    elif entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            st = os.stat(entry.name, dir_fd=fd, follow_symlinks=False)
                            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                                return True
        except OSError:
            pass
        finally:
            os.close(fd)
    return False
