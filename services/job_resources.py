"""A job's CPU and memory over time: the samples the sync loop stores (services/resource_telemetry.py) and their
downsampled series for the job page. A mixin of `JobService`."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from services.downsample import lttb
from services.job_charts import MAX_CHART_POINTS, Series
from services.resource_telemetry import ResourceReading
from services.store.orm import Job, ResourceSample

CPU_SERIES = "CPU (cores)"
# Memory is drawn in GiB once a job holds this much: 23,552 MiB reads worse than 23 GiB.
GIB_FROM_MIB = 2048.0


class JobResources:
    """CPU and memory samples of jobs."""

    # Provided by JobService.
    session: Callable[[], AbstractContextManager[Session]]

    def record_resources(self, readings: dict[int, ResourceReading], now: float) -> None:
        """Store one sample per job."""
        if readings:
            with self.session() as s:
                s.execute(insert(ResourceSample), [{"job_id": j, "ts": now, "cpu_cores": r.cpu_cores,
                                                    "memory_mib": r.memory_mib} for j, r in readings.items()])

    def resource_series(self, job_id: int, max_points: int = MAX_CHART_POINTS) -> dict[str, Series]:
        """The job's CPU (cores) and memory (MiB, or GiB when large) over seconds since its start."""
        with self.session() as s:
            job = s.get(Job, job_id)
            result = s.connection().execute(
                select(ResourceSample.ts, ResourceSample.cpu_cores, ResourceSample.memory_mib)
                .where(ResourceSample.job_id == job_id).order_by(ResourceSample.ts))
            rows = result.all()
            start = (job.started_at or job.created_at).timestamp() if job else 0.0
        if not rows:
            return {}
        arr = np.array([tuple(np.nan if v is None else v for v in r) for r in rows], dtype=np.float64)
        x = arr[:, 0] - start
        memory = arr[:, 2]
        name = "Memory (MiB)"
        if np.nanmax(memory, initial=0.0) >= GIB_FROM_MIB:
            memory, name = memory / 1024, "Memory (GiB)"
        out: dict[str, Series] = {}
        for label, y in ((CPU_SERIES, arr[:, 1]), (name, memory)):
            known = ~np.isnan(y)  # the first local sample may lack CPU: no gap drawn for it
            if known.any():
                dx, dy = lttb(x[known], y[known], max_points)
                out[label] = Series(dx, dy, "seconds")
        return out
