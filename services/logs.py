"""Reading log archives: the tail for the log pane, byte ranges for the sync loop.

A log lives in its job's directory (<jobs dir>/<id>/<name>), which the job can write to: every read opens it
through services.safe_files, so a link the job put in its place reads as "no log yet", never another file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from services.safe_files import open_job_file


def _open(path: Path) -> BinaryIO:
    return os.fdopen(open_job_file(path), "rb")

TAIL_BYTES = 256 * 1024


def read_tail(path: Path, max_lines: int = 500, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The last lines of a log without reading the whole file (logs can be gigabytes)."""
    try:
        with _open(path) as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            fh.seek(start)
            data = fh.read(size - start)
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    lines = text.split("\n")
    if start > 0:
        lines = lines[1:]  # first line is cut in the middle
    if lines and lines[-1] == "":
        lines.pop()
    # tqdm redraws a line with \r: show the last state of it, as a terminal would.
    lines = [ln.rsplit("\r", 1)[-1] if "\r" in ln else ln for ln in lines[-max_lines:]]
    return lines


def failure_tail(path: Path) -> str:
    """The last lines of a log, where a failed job's cause (CUDA OOM, traceback) is found."""
    return "\n".join(read_tail(path, max_lines=60, max_bytes=16 * 1024))


def read_from(path: Path, offset: int, limit: int) -> bytes:
    try:
        with _open(path) as fh:
            fh.seek(offset)
            return fh.read(limit)
    except FileNotFoundError:
        return b""


CHUNK = 1 << 20


def seek_line(path: Path, line: int) -> int:
    """The byte offset where line number `line` (0-based) starts; the file's end if it has fewer lines.
    Counting newlines in 1 MB chunks reads about a gigabyte a second, so even huge logs answer at once."""
    if line <= 0:
        return 0
    seen = 0
    pos = 0
    try:
        with _open(path) as fh:
            while chunk := fh.read(CHUNK):
                n = chunk.count(b"\n")
                if seen + n >= line:
                    idx = -1
                    for _ in range(line - seen):
                        idx = chunk.index(b"\n", idx + 1)
                    return pos + idx + 1
                seen += n
                pos += len(chunk)
    except FileNotFoundError:
        return 0
    return pos


def count_newlines(fd: int, start: int, end: int) -> tuple[int, int]:
    """The newlines in bytes [start, end) of an open file, read in 1 MB chunks, and where reading stopped (`end`,
    or the file's end if it is shorter)."""
    total = 0
    while start < end:
        chunk = os.pread(fd, min(CHUNK, end - start), start)
        if not chunk:
            break
        total += chunk.count(b"\n")
        start += len(chunk)
    return total, start


def count_lines(path: Path) -> int:
    try:
        fd = open_job_file(path)
    except FileNotFoundError:
        return 0
    try:
        return count_newlines(fd, 0, os.fstat(fd).st_size)[0]
    finally:
        os.close(fd)


def complete_lines(data: bytes, final: bool) -> tuple[list[str], int]:
    """The whole lines in `data` (the unterminated rest too when the log is final) and the bytes used."""
    end = len(data) if final else data.rfind(b"\n") + 1
    if end <= 0:
        return [], 0
    text = data[:end].decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines, end


def read_lines(path: Path, start: int, limit: int, final: bool) -> list[str]:
    """Lines start.. start+limit of a log (fewer at its end)."""
    pos = seek_line(path, start)
    out: list[str] = []
    while len(out) < limit:
        data = read_from(path, pos, CHUNK)
        if not data:
            break
        lines, used = complete_lines(data, final and len(data) < CHUNK)
        if not used:
            break
        out += lines
        pos += used
    return out[:limit]
