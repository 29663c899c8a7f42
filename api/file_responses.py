"""Sending a file the portal opened itself: a descriptor from services.safe_files, streamed, never re-opened by
name (a name a job controls could point elsewhere by the time a path-based response opened it)."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator
from urllib.parse import quote

from starlette.responses import StreamingResponse

CHUNK = 256 * 1024


# What a browser would run as the portal's own page if it ever rendered it: always sent as bytes.
ACTIVE_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/xml",
                "text/javascript", "application/javascript")


def _chunks(fd: int, size: int) -> Iterator[bytes]:
    """At most `size` bytes: a running job's log grows while it is sent, and Content-Length was `size`."""
    with os.fdopen(fd, "rb") as fh:
        left = size
        while left > 0 and (chunk := fh.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk


def disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=utf-8''{quote(filename)}"


def fd_response(fd: int, filename: str, media_type: str | None = None) -> StreamingResponse:
    """The open file as a download (Starlette iterates the sync generator in a worker thread)."""
    size = os.fstat(fd).st_size
    kind = media_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if kind in ACTIVE_TYPES:
        kind = "application/octet-stream"
    return StreamingResponse(_chunks(fd, size), media_type=kind, headers={
        "Content-Length": str(size), "Content-Disposition": disposition(filename),
        "X-Content-Type-Options": "nosniff"})
