"""Metric extraction throughput on one core: log lines per second, against a naive per-line parser.

`--against REV` times the extractor of another git revision too, in this process on the same text, best of N
CPU-time runs taken in turn (the machine is shared and noisy), e.g. `--against 45e5456^`: the extractor before
issue 14 read real framework logs right."""

from __future__ import annotations

import argparse
import io
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from types import ModuleType

from _common import ROOT

from services.metrics import MetricExtractor

N = 300_000


def mixed_log(n: int) -> str:
    rng = random.Random(0)
    lines = []
    for i in range(n):
        r = i % 10
        if r == 0:
            lines.append(f"Epoch {i // 1000 + 1}/{n // 1000}")
        elif r == 1:
            lines.append(f"Loss: {rng.random():.4f}")
        elif r == 2:
            lines.append(f"{{'loss': {rng.random():.4f}, 'learning_rate': 5e-05, 'epoch': {i / 1000:.2f}}}")
        elif r == 3:
            lines.append(f"step={i} loss={rng.random():.4f} grad_norm={rng.random():.3f}")
        elif r == 4:
            lines.append(f" 45%|####5     | 450/1000 [00:10<00:12, 44.1it/s, loss=0.{i % 1000}]")
        else:
            lines.append("2026-11-26 12:00:00 INFO worker 3: prefetching shard 17 of the training set")
    return "\n".join(lines) + "\n"


NAIVE = [re.compile(p) for p in (r"Epoch (\d+)/(\d+)", r"([A-Za-z_][\w ]*?)\s*[:=]\s*([-+]?\d*\.?\d+)")]


def naive(text: str) -> int:
    n = 0
    for line in text.splitlines():
        for pat in NAIVE:
            n += len(pat.findall(line))
    return n


def framework_log(n: int) -> str:
    """The recorded output of real runs (tests/data/framework_logs: HF Trainer, Lightning, tqdm, torchrun,
    failures), repeated until it holds n lines ("lines" split at newlines and carriage returns, as a viewer
    and the extractor see them)."""
    logs = sorted((ROOT / "tests" / "data" / "framework_logs").glob("*.log"))
    one = "".join(p.read_text(errors="replace") for p in logs)
    per_copy = one.count("\n") + one.count("\r")
    return one * (n // per_copy + 1)


def measure(label: str, text: str) -> None:
    lines = text.count("\n") + text.count("\r")
    best = float("inf")
    for _ in range(5):  # CPU time of this process: one core, whatever else the machine runs
        ex = MetricExtractor()
        t = time.process_time()
        points = ex.feed(text, now=0.0)
        best = min(best, time.process_time() - t)
    t = time.process_time()
    naive(text.replace("\r", "\n"))
    naive_s = time.process_time() - t
    print(f"{label}: {lines:,} lines ({len(text) / 1e6:.1f} MB): {lines / best:,.0f} lines/s, {len(points):,} points "
          f"(naive per-line regexes: {lines / naive_s:,.0f} lines/s; ratio {naive_s / best:.1f}x)")


def metrics_at(rev: str) -> ModuleType:
    """services.metrics as it was at `rev`, imported beside this tree's (its own copy of the package)."""
    tree = subprocess.run(["git", "archive", rev, "services"], cwd=ROOT, capture_output=True, check=True).stdout
    folder = tempfile.mkdtemp(prefix="metrics-at-")
    with tarfile.open(fileobj=io.BytesIO(tree)) as archive:
        archive.extractall(folder, filter="data")
    ours = {k: v for k, v in sys.modules.items() if k == "services" or k.startswith("services.")}
    for k in ours:
        del sys.modules[k]
    sys.path.insert(0, folder)
    try:
        import services.metrics as theirs
    finally:
        sys.path.remove(folder)
        for k in [k for k in sys.modules if k == "services" or k.startswith("services.")]:
            del sys.modules[k]
        sys.modules.update(ours)
    return theirs


def against(rev: str, runs: int) -> None:
    import gc

    import services.metrics as ours

    theirs = metrics_at(rev)
    for label, text in (("mixed", mixed_log(N)), ("real framework output", framework_log(N))):
        data = text.encode()
        best = {"this tree": float("inf"), rev: float("inf")}
        for _ in range(runs):
            for name, module in (("this tree", ours), (rev, theirs)):
                gc.collect()
                t = time.process_time()
                module.MetricExtractor().feed(data, now=0.0)
                best[name] = min(best[name], time.process_time() - t)
        print(f"{label}: this tree {best['this tree'] * 1000:.0f} ms, {rev} {best[rev] * 1000:.0f} ms CPU "
              f"(best of {runs}): {100 * (best['this tree'] / best[rev] - 1):+.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", metavar="REV", help="also time the extractor of this git revision")
    parser.add_argument("--runs", type=int, default=7, help="runs of each, for --against")
    args = parser.parse_args()
    if args.against:
        against(args.against, args.runs)
        return
    measure("real framework output", framework_log(N))
    text = mixed_log(N)
    best = float("inf")
    for _ in range(3):
        ex = MetricExtractor()
        t = time.perf_counter()
        points = ex.feed(text, now=0.0)
        best = min(best, time.perf_counter() - t)
    t = time.perf_counter()
    naive(text)
    naive_s = time.perf_counter() - t
    print(f"{N:,} mixed lines ({len(text) / 1e6:.1f} MB): {N / best:,.0f} lines/s, {len(points):,} points "
          f"(naive per-line regexes: {N / naive_s:,.0f} lines/s; ratio {naive_s / best:.1f}x)")


if __name__ == "__main__":
    main()
