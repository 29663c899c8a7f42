"""The log pane's lines: numbered, dated (received time, or the line's own), with a level, from the tail, around a
linked line, or merged over ranks. Reads the end of the file and of its received-time index only, never a whole
log (logs can be gigabytes); see services/log_times.py for the index."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from services.log_times import ReceivedIndex, Times
from services.logs import count_newlines
from services.safe_files import open_job_file

TAIL_BYTES = 256 * 1024
CHUNK = 1 << 20
MAX_CONTEXT = 200  # lines either side of a linked line
MAX_LINE_CHARS = 5000  # of one line drawn (a model summary or a dumped array can be megabytes on one line)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# A line that starts with a time of its own keeps it: ISO dates, logging's "2026-11-26 12:00:00,123", "[12:00:01]",
# glog's "I1126 12:00:00.1".
_OWN_TIME = re.compile(r"^\s*[\[(]?(?:\d{4}[-/]\d\d[-/]\d\d[T ]\d\d:\d\d|\d\d:\d\d:\d\d\b|[IWEF]\d{4} \d\d:\d\d:\d\d)")
_ERROR = re.compile(r"\b(?:ERROR|CRITICAL|FATAL|Fatal|Traceback \(most recent call last\)|Segmentation fault|"
                    r"CUDA out of memory|OutOfMemoryError|[A-Z]\w*(?:Error|Exception)\b:?)|\berror:", re.ASCII)
_WARNING = re.compile(r"\b(?:WARNING|WARN|Warning:|\w+Warning\b)", re.ASCII)
_TB_START = "Traceback (most recent call last)"
_TB_LINK = ("During handling of the above exception", "The above exception was the direct cause")
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning)?\b(?::|$)", re.ASCII)


@dataclass(frozen=True)
class LogLine:
    number: int  # 1-based, in its rank's file
    text: str
    received: float | None  # None: the line has a time of its own, or the log predates the index
    level: str = ""  # "error", "warning", "traceback" or ""
    rank: int = 0


@dataclass(frozen=True)
class LogPage:
    lines: list[LogLine]
    total: int  # lines in the file(s) now
    dated: bool  # the log has a received-time index


def display(raw: str) -> str:
    """A line as a terminal leaves it: tqdm's redraws (\\r) show their last state, colour codes are dropped."""
    text = raw.rstrip("\r")
    if "\r" in text:
        text = text.rsplit("\r", 1)[-1]
    return _ANSI.sub("", text) if "\x1b" in text else text


def _capped(text: str) -> str:
    if len(text) <= MAX_LINE_CHARS:
        return text
    return f"{text[:MAX_LINE_CHARS]} … ({len(text) - MAX_LINE_CHARS:,} more characters: the download has them)"


def own_time(text: str) -> bool:
    return bool(_OWN_TIME.match(text))


def levels(texts: list[str]) -> list[str]:
    """A level per line. A Python traceback is one block: its header, the indented frames, the chained-exception
    notes and the exception line that ends it."""
    out: list[str] = []
    in_tb = False
    for text in texts:
        if _TB_START in text:
            in_tb = True
            out.append("traceback")
            continue
        if in_tb:
            if text[:1] in (" ", "\t") or not text.strip() or text.startswith(_TB_LINK):
                out.append("traceback")
                continue
            in_tb = False
            if _EXC_LINE.match(text):
                out.append("error")
                continue
        out.append("error" if _ERROR.search(text) else "warning" if _WARNING.search(text) else "")
    return out


def _decode(data: bytes, base: int) -> tuple[list[str], list[int]]:
    """The lines in `data` (which starts at byte `base` on a line's start) and the byte offset of each."""
    texts: list[str] = []
    offsets: list[int] = []
    pos = 0
    n = len(data)
    while pos < n:
        end = data.find(b"\n", pos)
        stop = n if end < 0 else end
        offsets.append(base + pos)
        texts.append(data[pos:stop].decode("utf-8", errors="replace"))
        if end < 0:
            break
        pos = end + 1
    return texts, offsets


def _dated(texts: list[str], offsets: list[int], first: int, idx: ReceivedIndex, size: int,
           mtime: float, rank: int) -> list[LogLine]:
    times = Times(idx.span(offsets[0], size, offsets[-1]), mtime) if offsets and idx.exists else None
    shown = [_capped(display(t)) for t in texts]
    lvls = levels(shown)
    return [LogLine(first + i, text, None if times is None or own_time(text) else times.at(off), lvl, rank)
            for i, (text, off, lvl) in enumerate(zip(shown, offsets, lvls, strict=True))]


@contextmanager
def _opened(path: Path) -> Iterator[tuple[int, os.stat_result, ReceivedIndex] | None]:
    """The log's descriptor, its stat and its received-time index; None when there is no log (yet)."""
    try:
        fd = open_job_file(path)
    except FileNotFoundError:
        yield None
        return
    try:
        with ReceivedIndex(path) as idx:
            yield fd, os.fstat(fd), idx
    finally:
        os.close(fd)


def tail(path: Path, max_lines: int = 500, known: tuple[int, int] | None = None, rank: int = 0,
         max_bytes: int = TAIL_BYTES) -> LogPage:
    """The last lines of a log, numbered. `known` is an (offset, lines before it) the caller already has (the
    sync loop's cursor); the index gives another; newlines are counted only from the nearer one."""
    with _opened(path) as opened:
        if opened is None:
            return LogPage([], 0, False)
        fd, st, idx = opened
        size = st.st_size
        start = max(0, size - max_bytes)
        data = os.pread(fd, size - start, start)
        partial = False
        if start > 0:  # the first line is cut in the middle
            cut = data.find(b"\n") + 1
            if 0 < cut < len(data):
                data, start = data[cut:], start + cut
            else:  # the last line alone is longer than the window: the part of it in the window, marked as cut
                partial = bool(data)
        texts, offsets = _decode(data, start)
        if partial:
            texts[0] = "…" + texts[0]
        texts, offsets = texts[-max_lines:], offsets[-max_lines:]
        begin = offsets[0] if offsets else size
        marks = idx.span(begin, size)
        anchors = [(0, 0)]
        if marks and marks[0].end <= begin:
            anchors.append((marks[0].end, marks[0].lines))
        if known and known[0] <= begin:
            anchors.append(known)
        at, lines_before = max(anchors)
        if at >= start:
            lines_before += data.count(b"\n", at - start, begin - start)
        elif known and begin <= known[0] <= size:
            # The cursor lies within the tail read (a finished log without an index, whose cursor is at its end):
            # count back from it rather than every newline of a gigabyte log before the tail.
            lines_before = known[1] - data.count(b"\n", begin - start, known[0] - start)
        else:
            lines_before += count_newlines(fd, at, begin)[0]
        page = _dated(texts, offsets, lines_before + 1, idx, size, st.st_mtime, rank)
    return LogPage(page, lines_before + len(page), bool(marks))


def around(path: Path, line: int, before: int = 20, after: int = 20, rank: int = 0) -> LogPage:
    """Lines line-before .. line+after of a log (1-based): a linked line with its context. Seeks from the index's
    nearest record, so line 900,000 costs what the lines after that record cost."""
    before, after = min(before, MAX_CONTEXT), min(after, MAX_CONTEXT)
    first = max(1, line - before)
    with _opened(path) as opened:
        if opened is None:
            return LogPage([], 0, False)
        fd, st, idx = opened
        pos, seen = idx.anchor(first - 1)
        if pos > st.st_size:
            pos, seen = 0, 0
        while seen < first - 1:  # to the start of line `first`
            chunk = os.pread(fd, CHUNK, pos)
            if not chunk:
                break
            n = chunk.count(b"\n")
            if seen + n < first - 1:
                seen, pos = seen + n, pos + len(chunk)
                continue
            idx_nl = -1
            for _ in range(first - 1 - seen):
                idx_nl = chunk.index(b"\n", idx_nl + 1)
            pos, seen = pos + idx_nl + 1, first - 1
        if seen < first - 1:  # the log ends before the line (its last line may have no newline yet)
            unterminated = st.st_size > 0 and os.pread(fd, 1, st.st_size - 1) != b"\n"
            return LogPage([], seen + unterminated, idx.exists)
        want = line + after - first + 1
        texts: list[str] = []
        offsets: list[int] = []
        cur = pos
        while len(texts) < want and cur < st.st_size:
            data = os.pread(fd, CHUNK, cur)
            end = data.rfind(b"\n") + 1 if len(data) == CHUNK else len(data)
            if end <= 0:
                end = len(data)  # one line longer than a chunk
            t, o = _decode(data[:end], cur)
            texts += t
            offsets += o
            cur += end
        page = _dated(texts[:want], offsets[:want], first, idx, st.st_size, st.st_mtime, rank)
    return LogPage(page, seen + len(page), idx.exists)


def merged(pages: dict[int, LogPage], max_lines: int) -> LogPage:
    """Every rank's lines in one view, ordered by when the portal received them (a rank's own order kept within
    one arrival). A line with a time of its own sorts where the line before it on its rank arrived."""
    dated = any(p.dated for p in pages.values())
    keyed: list[tuple[tuple[float, int, int], LogLine]] = []
    for rank, page in pages.items():
        if not dated:  # a log from before the index: no order across ranks, so each rank's share of the tail
            page = LogPage(page.lines[-max(1, max_lines // len(pages)):], page.total, False)
        last = 0.0
        for ln in page.lines:
            last = ln.received if ln.received is not None else last
            keyed.append(((last, rank, ln.number), ln if ln.rank == rank else replace(ln, rank=rank)))
    keyed.sort(key=lambda kv: kv[0])
    out = [ln for _, ln in keyed[-max_lines:]]
    return LogPage(out, sum(p.total for p in pages.values()), dated)
