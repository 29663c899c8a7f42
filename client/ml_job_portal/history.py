"""The experiment history for notebooks: pages, every row, the summary and the export of a History view."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ml_job_portal.jobs import Job


def _history_params(view: Mapping[str, Any]) -> dict[str, Any]:
    """Query parameters of a history view: lists comma-joined, dates as ISO, booleans as true/false."""
    out: dict[str, Any] = {}
    for key, value in view.items():
        if isinstance(value, list | tuple | set):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out[key] = value
    return out


class HistoryMixin:
    """JobClient's history calls (the History page's view: filters, metric filter, sort, paging)."""

    _json: Any
    _download: Any

    def history(self, *, page: int = 1, page_size: int = 50, **view: Any) -> list[Job]:
        """One page of the experiment history: every job you may see, as on the History page.

        ``view``: ``search`` (every word must match; ``"lr=0.001 lora"``), ``status`` (``"Completed"`` or a
        list of them), ``owner``, ``tag``, ``template``, ``date_from`` / ``date_to`` (dates), ``gpus_min``,
        ``gpus_max``, ``sweep`` (a sweep's id: only its trials), ``metric_filter`` (final metric values,
        conditions joined by ``and``: ``"accuracy > 0.9 and eval_loss < 0.3"``; operators > >= < <= = !=),
        ``sort`` (``"final_loss"``, ``"cost"``, ``"learning_rate"``,
        ... or ``"final_metric"`` with ``metric="accuracy"``) and ``descending``. A filter the portal cannot
        read raises ``ValidationError`` naming the field."""
        data = self._json("GET", "history", params={**_history_params(view), "page": page, "page_size": page_size})
        return [Job(self, item) for item in data["jobs"]]

    def iter_history(self, page_size: int = 200, **view: Any) -> Iterator[Job]:
        """Every job of a history view, in its order, fetched a page at a time. For tens of thousands of jobs,
        ``export_history`` is the faster way: one streamed file instead of ever deeper pages."""
        page = 1
        while True:
            data = self._json("GET", "history", params={**_history_params(view), "page": page,
                                                         "page_size": page_size})
            yield from (Job(self, item) for item in data["jobs"])
            if not data.get("has_more") or not data["jobs"]:
                return
            page += 1

    def history_summary(self, **view: Any) -> dict[str, Any]:
        """Jobs, successes, success rate, GPU-hours and cost of a whole history view (same filters)."""
        return self._json("GET", "history/summary", params=_history_params(view))

    def final_metric_names(self) -> list[str]:
        """The final metrics your visible jobs reported: what ``sort="final_metric", metric=...`` can take."""
        return list(self._json("GET", "history/metrics")["metrics"])

    def export_history(self, dest: str | os.PathLike[str] = ".", format: str = "parquet", **view: Any) -> Path:
        """Download every page of a history view as one Parquet (``pandas.read_parquet``) or CSV file, with
        every parameter and final metric as a column. ``dest``: a file name or a folder."""
        if format not in ("csv", "parquet"):
            raise ValueError("format is 'csv' or 'parquet'")
        return self._download("history/export", f"history.{format}", dest,
                              params={**_history_params(view), "format": format})
