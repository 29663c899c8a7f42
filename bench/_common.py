"""Helpers for the benchmark scripts: a throwaway portal, AppTest timing, percentiles."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
APP = str(ROOT / "portal_app.py")


def fresh_portal():
    os.environ["PORTAL_DATA_DIR"] = tempfile.mkdtemp(prefix="portal-bench-")
    from services.portal import get_portal, reset_portal

    reset_portal()
    return get_portal()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def time_runs(run, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        run()
        out.append((time.perf_counter() - t) * 1000)
    return out


def summary(ms: list[float]) -> str:
    return (f"p50 {statistics.median(ms):7.1f} ms   p95 {percentile(ms, 95):7.1f} ms   "
            f"max {max(ms):7.1f} ms   (n={len(ms)})")
