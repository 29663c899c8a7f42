"""Largest-Triangle-Three-Buckets: at most N points per series, peaks and shape kept."""

from __future__ import annotations

import numpy as np


def lttb(x: np.ndarray, y: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    if n_out >= n or n_out < 3:
        return x, y
    xf = x.astype(np.float64, copy=False)
    yf = y.astype(np.float64, copy=False)
    # Bucket edges over the points between the fixed first and last.
    edges = np.linspace(1, n - 1, n_out - 1).astype(np.int64)
    keep = np.empty(n_out, dtype=np.int64)
    keep[0] = 0
    keep[-1] = n - 1
    a = 0
    for i in range(n_out - 2):
        lo, hi = edges[i], edges[i + 1]
        nxt_lo, nxt_hi = edges[i + 1], (edges[i + 2] if i + 2 < len(edges) else n)
        avg_x = xf[nxt_lo:nxt_hi].mean() if nxt_hi > nxt_lo else xf[n - 1]
        avg_y = yf[nxt_lo:nxt_hi].mean() if nxt_hi > nxt_lo else yf[n - 1]
        bx = xf[lo:hi]
        by = yf[lo:hi]
        area = np.abs((xf[a] - avg_x) * (by - yf[a]) - (xf[a] - bx) * (avg_y - yf[a]))
        # NaN/inf values must not win the bucket silently; nanargmax falls back to the first point.
        a = lo + (int(np.nanargmax(area)) if np.isfinite(area).any() else 0)
        keep[i + 1] = a
    return x[keep], y[keep]
