"""Sending a file the portal opened itself: a descriptor from services.safe_files, streamed, never re-opened by
name (a name a job controls could point elsewhere by the time a path-based response opened it)."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator
from urllib.parse import quote

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

CHUNK = 256 * 1024


# What a browser would run as the portal's own page if it ever rendered it: always sent as bytes.
ACTIVE_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/xml",
                "text/javascript", "application/javascript")


def disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=utf-8''{quote(filename)}"


class FdResponse(StreamingResponse):
    """The open file as a download. The descriptor is closed when the response ends however it ends: a client
    that hangs up before the first chunk never starts the body, and a generator-owned file would stay open."""

    def __init__(self, fd: int, filename: str, media_type: str | None = None):
        self._file = os.fdopen(fd, "rb")
        size = os.fstat(fd).st_size
        kind = media_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if kind in ACTIVE_TYPES:
            kind = "application/octet-stream"
        # nosniff comes with every response, from api/guard.py.
        super().__init__(self._chunks(size), media_type=kind, headers={
            "Content-Length": str(size), "Content-Disposition": disposition(filename)})

    def _chunks(self, size: int) -> Iterator[bytes]:
        """At most `size` bytes: a running job's log grows while it is sent, and Content-Length was `size`.
        Starlette reads a sync generator in a worker thread."""
        left = size
        while left > 0 and (chunk := self._file.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._file.close()

