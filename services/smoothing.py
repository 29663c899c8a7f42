"""Chart smoothing as TensorBoard draws it: a debiased exponential moving average over the points shown."""

from __future__ import annotations

import numpy as np

# A series with at least this many points counts as noisy: its charts open smoothed (DEFAULT_SMOOTHING).
NOISY_POINTS = 50
DEFAULT_SMOOTHING = 0.6
MAX_SMOOTHING = 0.99


def ema(y: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: last = last * weight + (1 - weight) * value, divided by 1 - weight ** n (the n-th
    finite value) so that the start is not pulled towards 0. A NaN or infinite value stays as it is and leaves the
    average untouched; a constant series is returned as it is (the division would add rounding noise)."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing must be from 0 to below 1, not {weight}")
    values = np.asarray(y, dtype=np.float64)
    out = values.copy()
    finite = np.isfinite(values)
    if weight == 0.0 or not finite.any() or np.ptp(values[finite]) == 0.0:
        return out
    last = 0.0
    # A plain loop: at the chart's 2,000 points it takes well under a millisecond, and it keeps NaN handling exact.
    for n, i in enumerate(np.flatnonzero(finite).tolist(), start=1):
        last = last * weight + (1.0 - weight) * float(values[i])
        out[i] = last / (1.0 - weight**n)
    return out


def default_smoothing(lengths: list[int]) -> float:
    """What the smoothing slider starts at: on for noisy series, off for a few points (one per epoch), where an
    average would only make the line lag behind the values."""
    return DEFAULT_SMOOTHING if any(n >= NOISY_POINTS for n in lengths) else 0.0


def log_scale_problem(ys: list[np.ndarray]) -> str | None:
    """Why a chart of these values cannot have a log y axis (a sentence), or None when it can."""
    finite = [v[np.isfinite(v)] for v in ys]
    lowest = min((float(v.min()) for v in finite if len(v)), default=None)
    if lowest is None or lowest > 0:
        return None
    return f"Drawn on a linear scale: a log scale needs values above 0, and this chart goes down to {lowest:.4g}."


def bucket_means(y: np.ndarray, n_out: int) -> np.ndarray | None:
    """The mean of each of LTTB's buckets (services.downsample.lttb: the first point, n_out - 2 buckets, the last),
    one value per point of the downsampled series; None when the series is not downsampled.

    What smoothing averages: LTTB keeps each bucket's most extreme point, so an average of the kept points sits
    far off the raw points' (bench/smoothing_downsampled.py), while the buckets' means carry every raw point."""
    n = len(y)
    if n_out >= n or n_out < 3:
        return None
    values = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    edges = np.linspace(1, n - 1, n_out - 1).astype(np.int64)
    lo, hi = edges[:-1], edges[1:]
    inner = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(inner > 0, (sums[hi] - sums[lo]) / np.maximum(inner, 1), np.nan)
    return np.concatenate([[values[0]], means, [values[-1]]])
