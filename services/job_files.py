"""What a job left behind, read for pages and the API: its event timeline, log archives (per rank), log
retention, and the files it wrote. A mixin of `JobService` (uses its session, backend and get)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.auth import may_download
from services.backends.base import Backend
from services.log_search import SearchResult, search
from services.log_times import RECORDER, index_path
from services.log_view import LogPage, around, merged, tail
from services.logs import read_tail
from services.models import JobView, NotFound, User
from services.safe_files import open_job_file, open_read
from services.store.orm import Job, JobEvent, JobLog, utcnow
from services.workspace import OutputFile, has_files, list_files


class JobFiles:
    """Events, logs and output files of a job."""

    # Provided by JobService.
    backend: Backend
    session: Callable[[], AbstractContextManager[Session]]
    get: Callable[[User, int], JobView]

    def events(self, job_id: int) -> list[tuple[Any, str, str]]:
        with self.session() as s:
            rows = s.execute(
                select(JobEvent.ts, JobEvent.status, JobEvent.message)
                .where(JobEvent.job_id == job_id)
                .order_by(JobEvent.id)
            ).all()
        return [tuple(r) for r in rows]

    # Logs ----------------------------------------------------------------------------------------
    def log_info(self, job_id: int) -> tuple[Path, int]:
        with self.session() as s:
            log = s.get(JobLog, job_id)
            if log is None:
                raise NotFound(f"Job {job_id} has no log.")
            return Path(log.path), log.lines

    def log_tail(self, job_id: int, max_lines: int = 500, rank: int = 0) -> list[str]:
        return self.log_view(job_id, max_lines, rank)[0]

    def log_view(self, job_id: int, max_lines: int = 500, rank: int = 0) -> tuple[list[str], int]:
        """The tail of one rank's log and the log's line count (kept for rank 0 only; 0 otherwise)."""
        path, lines = self.log_info(job_id)
        if rank:
            path, lines = self._rank_log(job_id, rank), 0
        return read_tail(path, max_lines=max_lines), lines

    def log_ranks(self, job_id: int) -> list[int]:
        return self.backend.log_ranks(job_id)

    def log_page(self, job_id: int, max_lines: int = 500, rank: int | None = 0) -> LogPage:
        """The numbered, dated tail of one rank's log; rank None: all ranks merged by received time."""
        if rank is None:
            ranks = self.log_ranks(job_id)
            return merged({r: self._rank_tail(job_id, r, max_lines) for r in ranks}, max_lines)
        return self._rank_tail(job_id, rank, max_lines)

    def _rank_tail(self, job_id: int, rank: int, max_lines: int) -> LogPage:
        known = None
        if rank == 0:
            with self.session() as s:
                jl = s.get(JobLog, job_id)
                known = (jl.offset, jl.lines) if jl is not None else None
        return tail(self.log_file(job_id, rank), max_lines, known, rank)

    def log_context(self, job_id: int, line: int, rank: int = 0, radius: int = 20) -> LogPage:
        """A linked line of one rank's log with `radius` lines either side."""
        return around(self.log_file(job_id, rank), line, radius, radius, rank)

    def search_log(self, job_id: int, query: str, limit: int = 200, rank: int | None = None) -> SearchResult:
        """Every rank's (or one rank's) lines that contain `query`: the first `limit` of them, and how many."""
        ranks = self.log_ranks(job_id) if rank is None else [rank]
        return search({r: self.log_file(job_id, r) for r in ranks}, query, limit)

    def note_log_growth(self, job_id: int, final: bool = False) -> None:
        """The sync loop's tick: when each rank's log grew (see services/log_times.py)."""
        for rank in self.log_ranks(job_id):
            path = self.backend.log_path(job_id, rank)
            RECORDER.record(path, force=final)
            if final:
                RECORDER.forget(path)

    def log_file(self, job_id: int, rank: int = 0) -> Path:
        """The archive of one rank's log (rank 0 is the job's main log)."""
        path, _ = self.log_info(job_id)
        return path if rank == 0 else self._rank_log(job_id, rank)

    def _rank_log(self, job_id: int, rank: int) -> Path:
        if rank not in self.backend.log_ranks(job_id):
            raise NotFound(f"Job {job_id} has no log for node {rank}.")
        return self.backend.log_path(job_id, rank)

    def open_log(self, job_id: int, rank: int = 0) -> int:
        """A read descriptor of one rank's log archive (FileNotFoundError if there is none, or a link)."""
        return open_job_file(self.log_file(job_id, rank))

    # Retention -----------------------------------------------------------------------------------
    def prune_logs(self, days: float, limit: int = 200) -> int:
        """Delete the archived logs of jobs that ended more than `days` ago; rows, metrics and charts stay."""
        cutoff = utcnow() - timedelta(days=days)
        with self.session() as s:
            rows = s.execute(
                select(JobLog).join(Job, Job.id == JobLog.job_id)
                .where(Job.finished_at < cutoff, JobLog.pruned_at.is_(None)).limit(limit)
            ).scalars().all()
            for jl in rows:
                for rank in self.backend.log_ranks(jl.job_id) or [0]:
                    self.backend.log_path(jl.job_id, rank).unlink(missing_ok=True)
                    index_path(self.backend.log_path(jl.job_id, rank)).unlink(missing_ok=True)
                Path(jl.path).unlink(missing_ok=True)
                jl.pruned_at = utcnow()
        return len(rows)

    def log_pruned(self, job_id: int) -> bool:
        with self.session() as s:
            jl = s.get(JobLog, job_id)
            return jl is not None and jl.pruned_at is not None

    # Output files --------------------------------------------------------------------------------
    def output_files(self, job_id: int) -> list[OutputFile]:
        return list_files(self.backend.output_dir(job_id))

    def has_output_files(self, job_id: int) -> bool:
        """Cheap enough for every card: only a job that wrote something has results to download."""
        return has_files(self.backend.output_dir(job_id))

    def open_output_file(self, user: User, job_id: int, relative: str) -> tuple[int, str]:
        """A read descriptor of one file the job wrote, and its name; opened without following any link the
        job made (a link, hard link or FIFO is "no such file")."""
        job = self.get(user, job_id)
        if not may_download(user, job.owner):
            raise NotFound(f"No file '{relative}' in job {job_id}.")
        try:
            fd = self.open_output(job_id, relative)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            raise NotFound(f"No file '{relative}' in job {job_id}.") from None
        return fd, Path(relative).name

    def open_output(self, job_id: int, relative: str) -> int:
        """A read descriptor of root/relative below the job's output (no access check: callers check)."""
        out = self.backend.output_dir(job_id)
        # From the jobs folder: on the local backend the job could even replace its own job folder.
        return open_read(out.parent.parent, f"{out.parent.name}/{out.name}/{relative}")
