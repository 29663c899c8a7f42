"""Tiny helper for training scripts: report metrics to the ML Job Portal exactly.

Standard library only; copy it next to your script or import it (the portal puts it on PYTHONPATH).

    from portal_metrics import log_metrics
    log_metrics(step=100, epoch=3, loss=0.42, accuracy=0.91)

Each call prints one line ``##portal {json}`` that the portal turns into chart points.
"""

from __future__ import annotations

import json
import sys

PREFIX = "##portal "


def log_metrics(*, step: int | None = None, epoch: float | None = None, total_epochs: int | None = None,
                total_steps: int | None = None, **metrics: float) -> None:
    record: dict[str, float | int] = {}
    for key, value in (("step", step), ("epoch", epoch), ("total_epochs", total_epochs),
                       ("total_steps", total_steps)):
        if value is not None:
            record[key] = value
    for key, value in metrics.items():
        record[key] = float(value)  # NaN/inf are written as NaN/Infinity, which the portal reads
    sys.stdout.write(PREFIX + json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()
