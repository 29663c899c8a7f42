"""The local queue's estimated start against the actual start: a burst of real jobs on a 2-GPU queue.

Jobs of 1 or 2 GPUs (the example script, 3 to 8 epochs of 0.3 to 1 s, a few urgent) arrive a second or two apart,
some of them names that ran before. For every waiting job the estimate is read each half second while it waits;
the figures compare the first estimate that was known, and every estimate seen, with when the job really started:
how often the start fell inside the range, the error of the range's middle (median and 90th percentile), and how
often the answer was "unknown".

    .venv/bin/python bench/local_queue_estimate.py [jobs]
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from _common import fresh_portal, percentile

from services import queues
from services.auth import local_user
from services.models import JobStatus


def main(n_jobs: int = 14) -> None:
    import os

    os.environ["PORTAL_LOCAL_GPUS"] = "2"
    os.environ["PORTAL_BACKEND"] = "local"
    portal = fresh_portal()
    user = local_user(portal.settings)
    rng = random.Random(17)
    plan = [(f"run-{rng.randint(1, 4)}", rng.choice([1, 1, 2]), rng.randint(3, 8), rng.choice([0.3, 0.6, 1.0]),
             "urgent" if rng.random() < 0.15 else "normal", rng.uniform(0.5, 2.0)) for _ in range(n_jobs)]
    # Each name keeps its epochs and speed, so its earlier runs say how long the next one takes.
    shapes: dict[str, tuple[int, float]] = {}
    seen: dict[int, list[tuple[float, float, float]]] = {}  # job id -> (read at, earliest, latest) as unix times
    asked: dict[int, int] = {}
    unknown: dict[int, int] = {}
    pending = list(plan)
    next_at = time.time()
    ids: list[int] = []
    while pending or any(portal.jobs.get(user, j).is_active for j in ids):
        now = time.time()
        if pending and now >= next_at:
            name, gpus, epochs, speed, priority, gap = pending.pop(0)
            epochs, speed = shapes.setdefault(name, (epochs, speed))
            ids.append(portal.jobs.submit(user, {"name": name, "script": "train_example.py", "gpus": gpus,
                                                 "epochs": epochs, "priority": priority,
                                                 "extra_args": f"--seconds-per-epoch {speed}"}))
            next_at = now + gap
        portal.sync.tick()
        for j in ids:
            view = portal.jobs.get(user, j)
            if view.status is not JobStatus.QUEUED:
                continue
            status = queues.waiting_status(portal.jobs, view)
            if status is None:
                continue
            asked[j] = asked.get(j, 0) + 1
            if status.estimate is None:
                unknown[j] = unknown.get(j, 0) + 1
            else:
                seen.setdefault(j, []).append((now, status.estimate.earliest.timestamp(),
                                               status.estimate.latest.timestamp()))
        time.sleep(0.5)

    first_err, all_err, first_in, all_in, widths = [], [], [], [], []
    misses: list[float] = []  # first estimates missed: seconds after the range (+) or before it (-)
    for j, reads in seen.items():
        started = portal.jobs.get(user, j).started_at
        if started is None:
            continue
        actual = started.timestamp()
        for k, (_, lo, hi) in enumerate(reads):
            err = abs(actual - (lo + hi) / 2)
            inside = lo - 0.5 <= actual <= hi  # started_at is the child's own start, a moment before the tick
            all_err.append(err)
            all_in.append(inside)
            widths.append(hi - lo)
            if k == 0:
                first_err.append(err)
                first_in.append(inside)
                if not inside:
                    misses.append(actual - hi if actual > hi else actual - lo)
    waited = len(asked)
    print(f"jobs: {len(ids)}, of which waited: {waited}; estimates read: {sum(asked.values())}, "
          f"unknown: {sum(unknown.values())} ({100 * sum(unknown.values()) / max(1, sum(asked.values())):.0f} %)")
    print(f"first known estimate: start inside the range {sum(first_in)}/{len(first_in)}; error of the middle "
          f"median {statistics.median(first_err):.1f} s, p90 {percentile(first_err, 90):.1f} s" if first_err else
          "no estimate was known")
    if misses:
        print("first estimates missed by (s, + late, - early): " + ", ".join(f"{m:+.1f}" for m in sorted(misses)))
    if all_err:
        print(f"every estimate: inside {100 * sum(all_in) / len(all_in):.0f} %; error of the middle median "
              f"{statistics.median(all_err):.1f} s, p90 {percentile(all_err, 90):.1f} s; range width median "
              f"{statistics.median(widths):.1f} s")
    portal.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 14)
