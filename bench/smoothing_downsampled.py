"""Issue 15 figure: is smoothing the chart's LTTB-downsampled points (2,000 of a 100,000-step series, what the page
has at draw time) faithful to smoothing the raw points?

For a noisy loss (a decaying curve, Gaussian noise, rare spikes) it prints, per slider weight w, the error against
the clean curve (RMSE, as a share of the noise's sigma) of:
  lttb     EMA(w) over the 2,000 LTTB points (the chart's points);
  means    EMA(w) over the means of LTTB's 2,000 buckets (services.smoothing.bucket_means: what the chart draws);
  stride   EMA(w) over 2,000 evenly strided raw points (what TensorBoard's sampling would give);
  raw-eq   EMA over all raw points with the same span in steps (w ** (1 / 50)), read at the LTTB points' steps;
  raw-w    EMA(w) over all raw points (the same slider value per raw step), read there too;
and how far the lttb and means lines lie from raw-eq (RMSE and mean offset: LTTB keeps extremes)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.downsample import lttb
from services.smoothing import bucket_means, ema

N, SHOWN, SIGMA = 100_000, 2_000, 0.3


def main() -> None:
    rng = np.random.default_rng(15)
    x = np.arange(N, dtype=np.float64)
    clean = 2.0 * np.exp(-x / 20_000) + 0.1
    y = clean + rng.normal(0, SIGMA, N)
    spikes = rng.choice(N, 40, replace=False)
    y[spikes] += rng.uniform(2, 5, len(spikes))
    dx, dy = lttb(x, y, SHOWN)
    at = dx.astype(np.int64)
    stride = np.linspace(0, N - 1, SHOWN).astype(np.int64)
    per_point = N / SHOWN

    def rmse(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(np.mean((a - b) ** 2)))

    print(f"{N:,} steps, noise sigma {SIGMA}, {len(spikes)} spikes, {SHOWN:,} points shown (LTTB)")
    print("error against the clean curve, as a share of sigma (raw points: 1.00)")
    means = bucket_means(y, SHOWN)
    print(f"{'w':>5} {'lttb':>7} {'means':>7} {'stride':>7} {'raw-eq':>7} {'raw-w':>7}   vs raw-eq: lttb, means "
          "(rmse / mean offset)")
    for w in (0.0, 0.6, 0.8, 0.9, 0.95, 0.99):
        page, meant = ema(dy, w), ema(means, w)
        strided = ema(y[stride], w)
        raw_eq = ema(y, w ** (1 / per_point))[at]
        raw_w = ema(y, w)[at]
        print(f"{w:>5} {rmse(page, clean[at]) / SIGMA:>7.2f} {rmse(meant, clean[at]) / SIGMA:>7.2f} "
              f"{rmse(strided, clean[stride]) / SIGMA:>7.2f} {rmse(raw_eq, clean[at]) / SIGMA:>7.2f} "
              f"{rmse(raw_w, clean[at]) / SIGMA:>7.2f}   {rmse(page, raw_eq) / SIGMA:.2f} / "
              f"{float(np.mean(page - raw_eq)) / SIGMA:+.2f}, {rmse(meant, raw_eq) / SIGMA:.2f} / "
              f"{float(np.mean(meant - raw_eq)) / SIGMA:+.2f} sigma")


if __name__ == "__main__":
    main()
