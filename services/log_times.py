"""When the portal received each part of a log: an index beside the log file, never a rewrite of the log.

The sync loop appends one fixed-size record per log file and tick in which it grew (at most one a second):
(end byte offset, lines before that offset, time). A line that starts at byte b arrived with the first record
whose end lies beyond b, and its number is that record's predecessor's line count plus the newlines between.
So the log pane numbers and dates its tail by reading the end of the index only, and a link to line N seeks
close to it instead of counting every newline before it.

The index lives in the job's folder, which the job may write to: it is opened through services.safe_files like
the log, and a record that does not fit (offsets or counts going backwards, beyond the log) ends what is trusted.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from services import safe_files
from services.logs import count_newlines

RECORD = struct.Struct("<QQd")  # end offset, lines before end, received (epoch seconds)
MIN_GAP_SECONDS = 1.0  # one record a second is as fine as a time shown to the second needs
COUNT_LIMIT = 64 << 20  # bytes counted per log and tick: a huge burst is indexed over a few ticks
MAX_RECORDS_READ = 200_000  # a tail or a line lookup never reads more of the index than this


@dataclass(frozen=True)
class Mark:
    end: int
    lines: int
    at: float


def index_path(log: Path) -> Path:
    return log.with_name(log.name + ".times")


def _open_read(path: Path) -> int:
    return safe_files.open_job_file(path)


class ReceivedIndex:
    """The records of one log's index, read on demand (pread of whole records)."""

    def __init__(self, log: Path):
        self.count = 0
        try:
            self._fd = _open_read(index_path(log))
        except FileNotFoundError:
            return
        self.count = os.fstat(self._fd).st_size // RECORD.size

    def __enter__(self) -> ReceivedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "_fd"):
            os.close(self._fd)
            del self._fd

    @property
    def exists(self) -> bool:
        return self.count > 0

    def _read(self, first: int, n: int) -> list[Mark]:
        data = os.pread(self._fd, n * RECORD.size, first * RECORD.size)
        return [Mark(*RECORD.unpack_from(data, i)) for i in range(0, len(data) - RECORD.size + 1, RECORD.size)]

    def _end_at(self, i: int) -> int:
        return self._read(i, 1)[0].end

    def first_after(self, offset: int) -> int:
        """The index of the first record whose end lies beyond `offset` (binary search with a read per probe)."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self._end_at(mid) <= offset:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def span(self, start: int, size: int, last: int | None = None) -> list[Mark]:
        """The records that cover bytes start..last (default: to the log's size), and the one before (the line
        count at `start`'s record), validated: a record that goes backwards or past the log's size ends the list.
        Read in batches from the binary-searched first one, so a linked line deep in a long job's log reads a
        few records, not the whole index."""
        if not self.exists:
            return []
        last = size if last is None else last
        i = max(0, self.first_after(start) - 1)
        out: list[Mark] = []
        while i < self.count and len(out) < MAX_RECORDS_READ:
            batch = self._read(i, min(self.count - i, 256))
            if not batch:
                break
            i += len(batch)
            for m in batch:
                if m.end > size or (out and (m.end < out[-1].end or m.lines < out[-1].lines)):
                    return out
                out.append(m)
                if m.end > last or m.end >= size:
                    return out
        return out

    def anchor(self, line: int) -> tuple[int, int]:
        """(byte offset, line number there) of the last record at or before `line` lines: where to start counting
        to reach that line. (0, 0) without an index."""
        if not self.exists:
            return 0, 0
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self._read(mid, 1)[0].lines <= line:
                lo = mid + 1
            else:
                hi = mid
        if lo == 0:
            return 0, 0
        m = self._read(lo - 1, 1)[0]
        return m.end, m.lines


class Times:
    """Received times for byte offsets within one span of records (the bytes past the last record: the log's
    modification time, as they arrived after the last tick)."""

    def __init__(self, marks: list[Mark], mtime: float | None):
        self.ends = [m.end for m in marks]
        self.marks = marks
        self.mtime = mtime if marks else None

    def at(self, offset: int) -> float | None:
        i = bisect_right(self.ends, offset)
        return self.marks[i].at if i < len(self.marks) else self.mtime


class Recorder:
    """What the sync loop calls per log and tick; remembers each log's last record so a tick costs one fstat."""

    def __init__(self) -> None:
        self._last: dict[Path, Mark] = {}
        self._lock = threading.Lock()

    def _last_mark(self, log: Path) -> Mark:
        mark = self._last.get(log)
        if mark is not None:
            return mark
        try:
            with ReceivedIndex(log) as idx:
                found = idx._read(idx.count - 1, 1) if idx.exists else []
        except FileNotFoundError:
            found = []
        return found[0] if found else Mark(0, 0, 0.0)

    def record(self, log: Path, now: float | None = None, force: bool = False) -> bool:
        """Append a record if `log` grew since the last one (and that one is at least a second old, unless
        `force`: the job's last tick)."""
        now = time.time() if now is None else now
        with self._lock:
            last = self._last_mark(log)
            self._last[log] = last
            if not force and now - last.at < MIN_GAP_SECONDS:
                return False
            try:
                fd = _open_read(log)
            except FileNotFoundError:
                return False
            try:
                size = os.fstat(fd).st_size
                if size < last.end:  # truncated or replaced: start a new index
                    last = Mark(0, 0, 0.0)
                    safe_files.write_replace(*safe_files.split(index_path(log), 2), b"")
                if size == last.end:
                    return False
                end = min(size, last.end + COUNT_LIMIT)
                counted, pos = count_newlines(fd, last.end, end)
                lines = last.lines + counted
            finally:
                os.close(fd)
            mark = Mark(pos, lines, now)
            out = safe_files.open_append(*safe_files.split(index_path(log), 2))
            try:
                os.write(out, RECORD.pack(mark.end, mark.lines, mark.at))
            finally:
                os.close(out)
            self._last[log] = mark
            return True

    def forget(self, log: Path) -> None:
        with self._lock:
            self._last.pop(log, None)


RECORDER = Recorder()  # one per process, as the sync loop is
