"""The History view as a file: the exported columns, a CSV streamed in chunks, and a Parquet file with typed
columns, one row group at a time (an export never holds every row)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from services.job_text import PARAMS
from services.store.orm import Job

EXPORT_COLUMNS = ["id", "name", "owner", "status", "reason", "created_at", "started_at", "finished_at",
                  "runtime_seconds", "gpus", "nodes", "gpu_hours", "cost", "final_loss", "tags", "note", "template",
                  "script", *PARAMS]


EXPORT_FIELDS = (Job.id, Job.name, Job.owner, Job.status, Job.reason, Job.created_at, Job.started_at,
                 Job.finished_at, Job.runtime_seconds, Job.gpus, Job.nodes, Job.gpu_hours, Job.cost, Job.final_loss,
                 Job.tags, Job.note, Job.template, Job.request, Job.final_metrics)


def export_row(job: Any) -> dict[str, Any]:
    """One CSV row from a job (or a row of EXPORT_FIELDS)."""
    request = job.request or {}
    row: dict[str, Any] = {
        "id": job.id, "name": job.name, "owner": job.owner, "status": job.status, "reason": job.reason or "",
        "created_at": job.created_at.isoformat() if job.created_at else "",
        "started_at": job.started_at.isoformat() if job.started_at else "",
        "finished_at": job.finished_at.isoformat() if job.finished_at else "",
        "runtime_seconds": job.runtime_seconds, "gpus": job.gpus, "nodes": job.nodes, "gpu_hours": job.gpu_hours,
        "cost": job.cost, "final_loss": job.final_loss, "tags": " ".join(job.tags or []), "note": job.note or "",
        "template": job.template or "",
        "script": request.get("script", ""),
    }
    row |= {p: request.get(p) for p in PARAMS}
    row |= {f"final_{k}": v for k, v in (job.final_metrics or {}).items()}
    return row


def _metric_columns(first: dict[str, Any] | None, metrics: Iterable[str]) -> list[str]:
    """The export's final-metric columns: every metric the view's jobs may have reported (`metrics`, from the
    store's index of names), and any other on the first row."""
    found = {f"final_{m}" for m in metrics} | {k for k in first or {} if k.startswith("final_")}
    return sorted(found - set(EXPORT_COLUMNS))


def csv_chunks(rows: Iterator[dict[str, Any]], metrics: Iterable[str] = ()) -> Iterator[str]:
    """CSV text in chunks of about 1,000 rows, with a final_<name> column per name in `metrics`."""
    buf = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    for i, row in enumerate(rows):
        if writer is None:
            writer = csv.DictWriter(buf, [*EXPORT_COLUMNS, *_metric_columns(row, metrics)], extrasaction="ignore")
            writer.writeheader()
        # A cell starting with = + - @ would be a formula in a spreadsheet: quote it as text.
        writer.writerow({k: ("'" + v if isinstance(v, str) and v and v[0] in "=+-@\t\r" else v)
                         for k, v in row.items()})
        if i % 1000 == 999:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    if writer is None:
        csv.DictWriter(buf, [*EXPORT_COLUMNS, *_metric_columns(None, metrics)]).writeheader()
    yield buf.getvalue()


PARQUET_ROW_GROUP = 10_000
_PARQUET_INTS = frozenset({"id", "gpus", "nodes"})
_PARQUET_TIMES = frozenset({"created_at", "started_at", "finished_at"})
_PARQUET_BOOLS = frozenset({"mixed_precision", "gradient_checkpointing"})
_PARQUET_FLOATS = frozenset({"runtime_seconds", "gpu_hours", "cost", "final_loss", "learning_rate", "epochs",
                             "batch_size", "checkpoint_every", "max_runtime_hours"})


def _parquet_value(column: str, value: Any) -> Any:
    """A CSV row's value in its Parquet column's type; "" (the CSV's empty cell) is null in a typed column."""
    if value is None:
        return None
    try:
        if column in _PARQUET_TIMES:
            return datetime.fromisoformat(value) if value else None
        if column in _PARQUET_INTS:
            return int(value)
        if column in _PARQUET_BOOLS:
            return bool(value)
        if column in _PARQUET_FLOATS or column.startswith("final_"):
            return float(value)
    except (TypeError, ValueError):  # "" or a value of another type than the column's (an odd parameter)
        return None
    return str(value)


def parquet_chunks(rows: Iterator[dict[str, Any]], metrics: Iterable[str] = ()) -> Iterator[bytes]:
    """The same rows as csv_chunks as a Parquet file with typed columns (timestamps, numbers, booleans), one
    row group per PARQUET_ROW_GROUP rows, each sent as soon as it is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    writer: pq.ParquetWriter | None = None
    batch: list[dict[str, Any]] = []

    def write() -> bytes:
        nonlocal writer
        if writer is None:
            fields = []
            for c in [*EXPORT_COLUMNS, *_metric_columns(batch[0] if batch else None, metrics)]:
                kind = (pa.timestamp("us", tz="UTC") if c in _PARQUET_TIMES else pa.int64() if c in _PARQUET_INTS
                        else pa.bool_() if c in _PARQUET_BOOLS
                        else pa.float64() if c in _PARQUET_FLOATS or c.startswith("final_") else pa.string())
                fields.append(pa.field(c, kind))
            writer = pq.ParquetWriter(sink, pa.schema(fields), compression="zstd")
        names = writer.schema.names
        writer.write_table(pa.Table.from_pylist([{c: _parquet_value(c, r.get(c)) for c in names} for r in batch],
                                                schema=writer.schema))
        batch.clear()
        out = sink.getvalue()
        sink.seek(0)
        sink.truncate()
        return out

    for row in rows:
        batch.append(row)
        if len(batch) >= PARQUET_ROW_GROUP:
            yield write()
    if batch or writer is None:
        yield write()
    assert writer is not None
    writer.close()
    yield sink.getvalue()
