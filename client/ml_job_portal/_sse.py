"""Server-sent events as the HTML standard reads them: the transport of a job's live log."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


def _sse_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Split an event stream into lines at CRLF, LF or CR only.

    Not ``str.splitlines``/``iter_lines``: those also split at form feeds and U+2028, which a log line
    may contain. A line left without its end when the stream stops is incomplete and dropped.
    """
    buf = b""
    first = True
    for chunk in chunks:
        if not chunk:
            continue
        buf += chunk
        if first:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                continue
            buf = buf.removeprefix(_BOM)
            first = False
        start = 0
        for match in _EOL.finditer(buf):
            if match.group() == b"\r" and match.end() == len(buf):
                break  # perhaps the first half of a CRLF split across chunks: wait for the next one
            yield buf[start : match.start()].decode("utf-8", "replace")
            start = match.end()
        buf = buf[start:]
    if buf.endswith(b"\r"):
        yield buf[:-1].decode("utf-8", "replace")


class _SSEEvent:
    __slots__ = ("data", "id", "type")

    def __init__(self, type_: str, data: str, id_: str | None):
        self.type = type_
        self.data = data
        self.id = id_


class _SSEParser:
    """The event-stream interpretation rules of the HTML standard, one line at a time."""

    def __init__(self, last_id: str | None = None):
        self.last_id = last_id  # persists across events (and reconnects), as in a browser
        self.retry_seconds: float | None = None
        self._data: list[str] = []
        self._type = ""

    def feed(self, line: str) -> _SSEEvent | None:
        if not line:  # a blank line dispatches the event
            data, type_ = self._data, self._type
            self._data, self._type = [], ""
            if not data:
                return None
            return _SSEEvent(type_ or "message", "\n".join(data), self.last_id)
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\x00" not in value:
                self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_seconds = int(value) / 1000
        return None


def _seen(event_id: str | None, last_id: str | None) -> bool:
    """Whether a replayed line was yielded already (ids are line numbers, so they compare)."""
    if event_id is None or last_id is None:
        return False
    try:
        return int(event_id) <= int(last_id)
    except ValueError:
        return False
