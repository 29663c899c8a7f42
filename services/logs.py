"""Reading log archives: the tail for the log pane, byte ranges for the sync loop."""

from __future__ import annotations

import os
from pathlib import Path

TAIL_BYTES = 256 * 1024


def read_tail(path: Path, max_lines: int = 500, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The last lines of a log without reading the whole file (logs can be gigabytes)."""
    try:
        with open(path, "rb") as fh:
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
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(limit)
    except FileNotFoundError:
        return b""


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
