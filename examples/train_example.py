"""Example training script for the ML Job Portal: no downloads, no dependencies beyond Python.

It fits a small logistic-regression model on synthetic data and prints its progress in the format
the portal reads (``Epoch 3/10``, ``Loss: 0.42``, ``Accuracy: 0.91``). It honours every form field:

  --learning-rate --epochs --batch-size --dataset-path --mixed-precision --gradient-checkpointing
  --checkpoint-every N        (the same values are in PORTAL_* environment variables)

Send it SIGUSR1 (the portal's "Save checkpoint" button) and it writes a checkpoint at the end of the
current batch. Results go to $PORTAL_OUTPUT_DIR (the job page's Files tab).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--learning-rate", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dataset-path", default="")
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--seconds-per-epoch", type=float, default=1.0, help="slow the run down to watch it live")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--fail-at-epoch", type=int, default=0, help="raise an error at this epoch (for demos)")
    args, unknown = p.parse_known_args()
    if unknown:
        print(f"Ignoring unknown arguments: {' '.join(unknown)}", flush=True)
    return args


def make_data(n: int, seed: int = 0) -> list[tuple[list[float], int]]:
    rng = random.Random(seed)
    true_w = [1.5, -2.0, 0.7]
    data = []
    for _ in range(n):
        x = [rng.gauss(0, 1) for _ in true_w]
        z = sum(w * xi for w, xi in zip(true_w, x, strict=True)) + rng.gauss(0, 0.5)
        data.append((x, 1 if z > 0 else 0))
    return data


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-max(-30.0, min(30.0, z))))


def predict(w: list[float], b: float, x: list[float]) -> float:
    return sigmoid(sum(wi * xi for wi, xi in zip(w, x, strict=True)) + b)


def main() -> int:
    args = parse_args()
    out = Path(os.environ.get("PORTAL_OUTPUT_DIR", "."))
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_requested = False

    def on_checkpoint(_sig: int, _frame: object) -> None:
        nonlocal checkpoint_requested
        checkpoint_requested = True

    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, on_checkpoint)

    data = make_data(args.samples)
    w = [0.0, 0.0, 0.0]
    b = 0.0

    def save_checkpoint(tag: str) -> None:
        path = out / "checkpoints" / f"{tag}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"w": w, "b": b}))
        print(f"Saved checkpoint {path.name}", flush=True)

    print(f"Training on {len(data)} samples from {args.dataset_path or 'a synthetic dataset'} "
          f"(learning rate {args.learning_rate}, batch size {args.batch_size})", flush=True)
    for epoch in range(1, args.epochs + 1):
        started = time.time()
        print(f"Epoch {epoch}/{args.epochs}", flush=True)
        if args.fail_at_epoch and epoch == args.fail_at_epoch:
            raise RuntimeError(f"demo failure at epoch {epoch}")
        random.Random(epoch).shuffle(data)
        total_loss = 0.0
        for i in range(0, len(data), args.batch_size):
            batch = data[i : i + args.batch_size]
            gw = [0.0, 0.0, 0.0]
            gb = 0.0
            for x, y in batch:
                p = predict(w, b, x)
                total_loss += -(y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12))
                for j in range(3):
                    gw[j] += (p - y) * x[j]
                gb += p - y
            w = [wi - args.learning_rate * g / len(batch) for wi, g in zip(w, gw, strict=True)]
            b -= args.learning_rate * gb / len(batch)
            if checkpoint_requested:
                save_checkpoint(f"manual-epoch{epoch}")
                checkpoint_requested = False
        correct = sum((predict(w, b, x) > 0.5) == bool(y) for x, y in data)
        print(f"Loss: {total_loss / len(data):.4f}", flush=True)
        print(f"Accuracy: {correct / len(data):.4f}", flush=True)
        if args.checkpoint_every and epoch % args.checkpoint_every == 0:
            save_checkpoint(f"epoch{epoch}")
        time.sleep(max(0.0, args.seconds_per_epoch - (time.time() - started)))

    (out / "model.json").write_text(json.dumps({"w": w, "b": b}, indent=2))
    final = {"loss": total_loss / len(data), "accuracy": correct / len(data)}
    (out / "metrics.json").write_text(json.dumps(final))
    print("Training finished; model written to model.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
