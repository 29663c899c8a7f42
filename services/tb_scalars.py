"""TensorBoard event files' scalars into the portal's own charts: a script that logs only to TensorBoard gets its
curves without code changes.

A worker of the sync loop (it runs where the loop runs: on the leader) looks at the running jobs' outputs every
few seconds, and once more at a job that just ended. Each event file is read from where the last pass stopped (a
byte offset per file, kept on the data volume beside the jobs), through the same no-link opening as the Files
tab, and only whole records are taken: a record the script is still writing is read again next time. Records are
decoded by TensorBoard's own code (its Event proto, its CRC and its compat layers, which turn a TF1
``simple_value`` and a TF2 tensor summary alike into a scalar); the points land in the same store as those parsed
from the log.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from services.models import ACTIVE_STATUSES, JobStatus
from services.notifications_alerts import scan as scan_alerts
from services.safe_files import read_bytes, write_replace
from services.store.orm import Job, MetricPoint, SeriesCache, utcnow
from services.worker_thread import PeriodicWorker

EVENT_MARK = "events.out.tfevents."
MAX_TAG = 64  # the store's series names
READ_LIMIT = 8 * 1024 * 1024  # per file and pass: a huge histogram log does not hold up the others
MAX_RECORD = 64 * 1024 * 1024  # a length past this is a damaged file, not a record
SCAN_SECONDS = 5.0
OFFSETS_DIR = "tensorboard-scan"

# (tag, step, wall time, value)
Scalar = tuple[str, int, float, float]


def is_event_file(relative: str) -> bool:
    return EVENT_MARK in PurePosixPath(relative).name


def records(data: bytes) -> Iterator[tuple[int, bytes | None]]:
    """(end offset, record) of each whole TFRecord frame in data; record None: a frame whose checksum failed
    (skipped, as TensorBoard's own reader would stop there for good). Stops before an unfinished frame."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    at = 0
    while len(data) - at >= 12:
        header = data[at: at + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[at + 8: at + 12])
        if header_crc != masked_crc32c(header) or length > MAX_RECORD:
            return  # not a frame boundary: nothing after it can be trusted
        end = at + 12 + length + 4
        if end > len(data):
            return
        body = data[at + 12: at + 12 + length]
        (body_crc,) = struct.unpack("<I", data[end - 4: end])
        yield end, body if body_crc == masked_crc32c(body) else None
        at = end


def scalars(record: bytes, initial_metadata: dict[str, Any]) -> list[Scalar]:
    """The scalar values of one event record, by TensorBoard's own decoding."""
    from tensorboard import data_compat, dataclass_compat
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.util import tensor_util

    found: list[Scalar] = []
    try:
        event = event_pb2.Event.FromString(record)
    except Exception:  # a record that is no Event (DecodeError): skipped
        return found
    for ev in dataclass_compat.migrate_event(data_compat.migrate_event(event), initial_metadata):
        for value in ev.summary.value:
            meta = initial_metadata.get(value.tag)
            plugin = meta.plugin_data.plugin_name if meta is not None else value.metadata.plugin_data.plugin_name
            if plugin != scalar_metadata.PLUGIN_NAME or not value.HasField("tensor") or len(value.tag) > MAX_TAG:
                continue
            array = tensor_util.make_ndarray(value.tensor)
            if array.size != 1:
                continue
            number = float(array.reshape(()).item())
            found.append((value.tag, int(ev.step), float(ev.wall_time), number))
    return found


class EventScalarScanner(PeriodicWorker):
    """The sync loop's worker that feeds event files' scalars into the metric store (see the module's doc)."""

    thread_name = "portal-tb-scalars"

    def __init__(self, service: Any, interval: float = SCAN_SECONDS):
        super().__init__(interval)
        self.service = service
        self._running: set[int] = set()
        self._since = utcnow() - timedelta(minutes=10)  # after a restart: the jobs that ended just before
        self._metadata: dict[int, dict[str, Any]] = {}  # per job: a tag's first SummaryMetadata (compat layer)

    def tick(self) -> int:
        """One pass: the running jobs, and those that ended since the last pass (their last records). Returns the
        number of points stored."""
        since, self._since = self._since, utcnow()
        with self.service.session() as s:
            running = set(s.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING.value)))
            # Also a job that ran between two passes, or ended while this replica did not lead.
            running_or_ended = running | set(s.scalars(select(Job.id).where(Job.finished_at >= since)))
        ended, self._running = (self._running | running_or_ended) - running, running
        stored = sum(self.scan(job_id) for job_id in sorted(running | ended))
        for job_id in ended:
            self._metadata.pop(job_id, None)
        return stored

    def scan(self, job_id: int) -> int:
        """Read one job's event files from their offsets; store the scalars found. Returns points stored."""
        svc = self.service
        files = [f.path for f in svc.output_files(job_id) if is_event_file(f.path)]
        if not files:
            return 0
        offsets = self._offsets(job_id)
        meta = self._metadata.setdefault(job_id, {})
        points: list[Scalar] = []
        for rel in files:
            start = offsets.get(rel, 0)
            try:
                fd = svc.open_output(job_id, rel)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
                continue
            with os.fdopen(fd, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < start:  # rewritten from the start: read again
                    start = 0
                fh.seek(start)
                data = fh.read(READ_LIMIT)
                if len(data) >= 12:  # a first frame longer than a pass (up to MAX_RECORD) is read whole
                    need = 12 + min(struct.unpack("<Q", data[:8])[0], MAX_RECORD) + 4
                    if len(data) < need <= size - start:
                        data += fh.read(need - len(data))
            used = 0
            for end, record in records(data):
                used = end
                if record is not None:
                    points += scalars(record, meta)
            offsets[rel] = start + used
        self._store(job_id, points)
        self._save_offsets(job_id, offsets)
        return len(points)

    def _store(self, job_id: int, points: list[Scalar]) -> None:
        points = [p for p in points if math.isfinite(p[2])]  # a NaN loss is kept: its chart says it diverged
        if not points:
            return
        with self.service.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                return
            self._latest(s, job, points)
            s.execute(insert(MetricPoint), [
                {"job_id": job_id, "name": tag, "step": step, "epoch": None, "value": value, "ts": wall, "rank": None}
                for tag, step, wall, value in points])
            names = {p[0] for p in points}
            s.execute(update(SeriesCache).where(SeriesCache.job_id == job_id, SeriesCache.name.in_(names))
                      .values(dirty=True))
            known = set(s.scalars(select(SeriesCache.name).where(SeriesCache.job_id == job_id)))
            # An empty, dirty chart entry: the sync loop's refresh_series draws it in the background.
            s.add_all(SeriesCache(job_id=job_id, name=n, points=0, axis="step", x=[], y=[], dirty=True,
                                  updated_at=0.0) for n in names - known)

    @staticmethod
    def _latest(s: Session, job: Job, points: list[Scalar]) -> None:
        """The tags' last values into the job's latest metrics (its card's latest loss, the dashboard), its final
        ones once it ended (History: the scanner reads a job's last records after the end froze them), and the
        owner's metric alert rules, as the log's values do."""
        from services.jobs import to_view  # services.jobs builds the sync loop that holds this worker

        last = {tag: value for tag, _step, _wall, value in points}  # in the order written: the last one wins
        job.latest_metrics = dict(job.latest_metrics or {}) | last
        if job.status not in {st.value for st in ACTIVE_STATUSES}:
            job.final_metrics = dict(job.final_metrics or {}) | last
            loss = to_view(job).loss
            job.final_loss = loss if loss is not None and math.isfinite(loss) else None
        scan_alerts(s, job, b"", [(tag, step, None, value, None) for tag, step, _wall, value in points])

    # The per-file offsets: a small JSON file a job, in the portal's own folder (no job writes there).
    def _offsets(self, job_id: int) -> dict[str, int]:
        try:
            raw = json.loads(read_bytes(self.service.settings.data_dir, f"{OFFSETS_DIR}/{job_id}.json"))
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def _save_offsets(self, job_id: int, offsets: dict[str, int]) -> None:
        root = self.service.settings.data_dir
        (root / OFFSETS_DIR).mkdir(mode=0o700, exist_ok=True)
        write_replace(root, f"{OFFSETS_DIR}/{job_id}.json", json.dumps(offsets).encode())

