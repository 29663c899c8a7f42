"""Search within a job's log, across all its ranks: the matching lines with rank and line number.

Streams each rank's file in 1 MB chunks (memory stays flat at any size), finds the text case-insensitively (ASCII)
with one regex over each chunk, and counts every matching line while keeping only the first `limit` of them. A
deadline stops a search of a huge log early and says how far it got, so a page never hangs on it.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.log_view import display, levels
from services.safe_files import open_job_file

CHUNK = 1 << 20
MAX_QUERY = 200
HIT_CHARS = 400  # of a hit's line shown; the link opens the whole line


@dataclass(frozen=True)
class Hit:
    rank: int
    line: int  # 1-based, in its rank's file
    text: str
    level: str = ""


@dataclass
class SearchResult:
    query: str
    hits: list[Hit] = field(default_factory=list)
    total: int = 0  # matching lines found (all of them, not only those in hits)
    per_rank: dict[int, int] = field(default_factory=dict)
    lines_searched: int = 0
    complete: bool = True  # False: the deadline stopped it before the end of the last rank
    seconds: float = 0.0

    @property
    def more(self) -> int:
        return self.total - len(self.hits)


def query_problem(query: str) -> str | None:
    """A sentence for a search text that cannot be searched, else None."""
    if not query.strip():
        return "Type the text to find in the log."
    if len(query) > MAX_QUERY:
        return f"Search for at most {MAX_QUERY} characters."
    if "\n" in query or "\r" in query:
        return "Search for text within one line."
    return None


def search(paths: dict[int, Path], query: str, limit: int = 200, deadline_seconds: float = 20.0) -> SearchResult:
    """The lines of each rank's log (ranks in order) that contain `query`, ignoring ASCII case."""
    t0 = time.perf_counter()
    result = SearchResult(query)
    # The text, then the rest of its line: one match per line, found and counted by the regex engine.
    needle = re.compile(re.escape(query.encode("utf-8").lower()) + rb"[^\n]*")
    for rank in sorted(paths):
        if not _search_file(paths[rank], rank, needle, limit, t0 + deadline_seconds, result):
            result.complete = False
            break
    # Each hit on its own (a traceback's frames are not hits' neighbours here).
    result.hits = [Hit(h.rank, h.line, h.text, levels([h.text])[0]) for h in result.hits]
    result.seconds = time.perf_counter() - t0
    return result


def _search_file(path: Path, rank: int, needle: re.Pattern[bytes], limit: int, deadline: float,
                 result: SearchResult) -> bool:
    """Adds one file's hits to `result`; False when the deadline stopped it."""
    try:
        fd = open_job_file(path)
    except FileNotFoundError:
        return True
    found = 0
    lines_before = 0  # newlines before the start of buf
    pos = 0
    rest = b""
    try:
        while True:
            chunk = os.pread(fd, CHUNK, pos)
            pos += len(chunk)
            if chunk:
                cut = chunk.rfind(b"\n") + 1
                if cut == 0:  # no line ends in this chunk: keep collecting (bounded by the next newline)
                    rest += chunk
                    if len(rest) < 16 * CHUNK:
                        continue
                    cut = len(chunk)
                buf, rest = rest + chunk[:cut], chunk[cut:]
            else:
                buf, rest = rest, b""
            if buf:
                found += _scan(buf, needle, rank, lines_before, limit, result)
                lines_before += buf.count(b"\n")
            if not chunk:
                break
            if time.perf_counter() > deadline:
                result.lines_searched += lines_before
                result.per_rank[rank] = found
                return False
    finally:
        os.close(fd)
    result.lines_searched += lines_before + (1 if buf and not buf.endswith(b"\n") else 0)
    if found:
        result.per_rank[rank] = found
    return True


def _scan(buf: bytes, needle: re.Pattern[bytes], rank: int, lines_before: int, limit: int,
          result: SearchResult) -> int:
    """The matching lines of `buf` (whole lines); one match per line, as the pattern runs to the line's end."""
    low = buf.lower()
    counted_to, line_no, found = 0, lines_before, 0
    matches = needle.finditer(low)
    for m in matches:
        if len(result.hits) >= limit:
            found += 1 + sum(1 for _ in matches)  # only counted now: no line number, no text
            break
        start = buf.rfind(b"\n", 0, m.start()) + 1
        line_no += buf.count(b"\n", counted_to, start)
        counted_to = start
        found += 1
        text = display(buf[start:m.end()].decode("utf-8", errors="replace"))
        result.hits.append(Hit(rank, line_no + 1, text[:HIT_CHARS]))
    result.total += found
    return found
