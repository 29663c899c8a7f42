"""REST routes of a job's log: a page of lines (by offset or the tail), a search across ranks (`?search=`), and a
live Server-Sent Events stream that follows the archive until the job ends (resumable with Last-Event-ID)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from api.common import ApiError, endpoint, jobs, query_int, visible
from services.log_search import query_problem
from services.logs import complete_lines, count_lines, read_from, read_lines, read_tail, seek_line
from services.models import NotFound, User

MAX_LOG_LINES = 10_000
MAX_SEARCH_HITS = 1000
STREAM_POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


@endpoint()
def job_logs(request: Request, user: User) -> dict[str, Any]:
    job = visible(request, user)
    rank = query_int(request, "rank", 0, 0, 4096)
    if "search" in request.query_params:
        return _search(request, job.id, rank if "rank" in request.query_params else None)
    path = jobs().log_file(job.id, rank)
    final = not job.is_active
    if "offset" in request.query_params:
        offset = query_int(request, "offset", 0, 0, 10**12)
        limit = query_int(request, "limit", 1000, 1, MAX_LOG_LINES)
        lines = read_lines(path, offset, limit, final)
        total = None
    else:
        tail = query_int(request, "tail", 200, 1, MAX_LOG_LINES)
        total = count_lines(path)
        lines = read_tail(path, max_lines=tail)
        offset = max(0, total - len(lines))
    return {"lines": lines, "offset": offset, "next_offset": offset + len(lines),
            "total": total if total is not None else count_lines(path), "finished": final}


def _search(request: Request, job_id: int, rank: int | None) -> dict[str, Any]:
    """The lines that contain the text, every rank's (or rank R's), with rank and line number (1-based)."""
    query = request.query_params["search"]
    problem = query_problem(query)
    if problem:
        raise ApiError(400, problem.replace("Type the text", "Give 'search' the text"))
    limit = query_int(request, "limit", 200, 1, MAX_SEARCH_HITS)
    found = jobs().search_log(job_id, query, limit, rank)
    return {"query": query, "hits": [{"rank": h.rank, "line": h.line, "text": h.text} for h in found.hits],
            "total": found.total, "more": found.more, "per_rank": {str(r): n for r, n in found.per_rank.items()},
            "lines_searched": found.lines_searched, "complete": found.complete}


def _sse(event: str | None, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    head += f"event: {event}\n" if event else ""
    # SSE data cannot hold a bare CR; a progress bar's redraws show as their last state.
    payload = "\n".join(f"data: {part.rsplit(chr(13), 1)[-1]}" for part in data.split("\n"))
    return f"{head}{payload}\n\n"


@endpoint(raw=True)
async def stream_logs(request: Request, user: User) -> Response:
    job = await run_in_threadpool(visible, request, user)
    rank = query_int(request, "rank", 0, 0, 4096)
    path = await run_in_threadpool(jobs().log_file, job.id, rank)
    start = query_int(request, "offset", 0, 0, 10**12)
    last_id = request.headers.get("last-event-id", "")
    if last_id.isascii() and last_id.isdecimal() and len(last_id) < 16:
        start = int(last_id)

    async def events() -> AsyncIterator[str]:
        line_no = start
        pos = await run_in_threadpool(seek_line, path, start)
        quiet = 0.0
        while True:
            try:
                current = await run_in_threadpool(jobs().get, user, job.id)
            except NotFound:  # deleted while someone follows its log
                yield _sse("end", json.dumps({"status": "Deleted", "reason": "The job was deleted."}))
                return
            finished = not current.is_active
            data = await run_in_threadpool(read_from, path, pos, 1 << 20)
            lines, used = complete_lines(data, final=finished and len(data) < 1 << 20)
            pos += used
            for line in lines:
                line_no += 1
                yield _sse(None, line, line_no)
            if lines:
                quiet = 0.0
                continue
            if finished:
                yield _sse("end", json.dumps({"status": current.status.value, "reason": current.reason}))
                return
            if await request.is_disconnected():
                return
            quiet += STREAM_POLL_SECONDS
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(STREAM_POLL_SECONDS)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


ROUTES = [
    Route("/api/v1/jobs/{job_id}/logs", job_logs, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/logs/stream", stream_logs, methods=["GET"]),
]
