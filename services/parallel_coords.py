"""Parallel coordinates for Compare, as plain lines: each parameter (and the chosen result) an axis from its lowest
to its highest value, each run a line across them. Plotly's own Parcoords draws with WebGL through generated code,
which the portal's Content-Security-Policy (no 'unsafe-eval') refuses: it showed "WebGL is not supported"."""

from __future__ import annotations

import math
from dataclasses import dataclass

# An axis whose values span at least this ratio (all above 0) is drawn in powers of ten: learning rates.
LOG_RATIO = 100.0


@dataclass(frozen=True)
class ParallelAxis:
    label: str
    values: list[float]  # per run, NaN where a run has none
    scaled: list[float]  # per run, 0 (the axis' lowest value) to 1 (its highest), NaN where none
    low: str  # the values written at the axis' ends
    high: str
    log: bool


def _text(value: float) -> str:
    return f"{value:.4g}"


def parallel_axes(columns: dict[str, list[float | None]]) -> list[ParallelAxis]:
    """The axes for these columns (label -> one value per run, in the same run order each)."""
    out: list[ParallelAxis] = []
    for label, raw in columns.items():
        values = [math.nan if v is None else float(v) for v in raw]
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            out.append(ParallelAxis(label, values, [math.nan] * len(values), "–", "–", False))
            continue
        lo, hi = min(finite), max(finite)
        log = lo > 0 and hi / lo >= LOG_RATIO

        def at(v: float, lo: float = lo, hi: float = hi, log: bool = log) -> float:
            if not math.isfinite(v):
                return math.nan
            if hi == lo:
                return 0.5  # one value for every run: the middle of its axis
            if log:
                return (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
            return (v - lo) / (hi - lo)

        out.append(ParallelAxis(label, values, [at(v) for v in values], _text(lo), _text(hi), log))
    return out
