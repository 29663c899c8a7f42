"""Issue 17 figure: a waiting job's estimated start against its actual start, on Kubernetes with a real Kueue.

A simulated day of submissions to one team queue (a ClusterQueue of 8 GPUs) on the test control plane
(testenv/start.sh qbench, KWOK GPU nodes, Kueue run out of cluster as tests/k8s/kueue_env.py runs it), compressed
into a few minutes of wall time: Poisson arrivals over the "day", a dozen experiments of 1, 2, 4 or 8 GPUs that
people submit again and again, each with its usual runtime (a simulated 20 min to 6 h, this run's own runtime
varying around it) and a max runtime a little above it; a share of urgent jobs. Every job goes through the
portal's JobService.submit (what the form's button calls) into the queue; the pod's runtime is the KWOK
annotation `kwok.test/runtime`. The portal's sync loop runs as in the server process.

While a job waits its estimated start is read every half second, as its card shows it (services/queues.py
waiting_status). Its actual start is the Job's start time (when Kueue admitted and unsuspended it), as the store
records it. Printed: how often the first answer shown was "unknown"; for the first known estimate, and for every
estimate read, the share of actual starts inside the range and the error of the range's middle (median and 90th
percentile, in wall seconds and in simulated hours).

    .venv/bin/python bench/kueue_estimate.py [--minutes 10 | --quick] [--gpus 8] [--jobs N] [--seed 17]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import percentile
from _kueue import kueue_queue, start_cluster

from services import queues
from services.models import JobStatus, Role, User
from services.portal import build_portal
from tests.k8s.conftest import k8s_settings

ME = User(name="researcher", role=Role.ADMIN)
# The experiments of a team: (name, GPUs, usual runtime in hours, max runtime in hours). Small jobs are the many.
EXPERIMENTS = [("lr-sweep-small", 1, 0.4, 1), ("tokenizer-ablation", 1, 1.0, 2), ("eval-harness", 1, 0.3, 1),
               ("vit-finetune", 2, 1.5, 3), ("data-mix-a", 2, 2.5, 4), ("distill-tiny", 2, 0.8, 2),
               ("llm-sft-7b", 4, 3.0, 5), ("rlhf-reward", 4, 2.0, 3), ("moe-probe", 4, 1.2, 2),
               ("llm-pretrain-1b", 8, 4.5, 6), ("llm-sft-13b", 8, 3.0, 4)]
WEIGHTS = [5, 4, 5, 3, 3, 3, 2, 2, 2, 1, 1]


@dataclass
class Seen:
    """What one job's card said while it waited: (read at, earliest, latest) as unix times; None: unknown."""

    name: str
    gpus: int
    priority: str
    submitted: float
    reads: list[tuple[float, float, float] | None] = field(default_factory=list)


def plan_day(rng: random.Random, jobs: int, day_s: float, urgent_share: float) -> list[tuple[float, str, int,
                                                                                            float, float, str]]:
    """(submit at s, name, GPUs, runtime s, max runtime s, priority), arrivals a Poisson process over the day."""
    hour = day_s / 24
    out = []
    t = 0.0
    for _ in range(jobs):
        t += rng.expovariate(jobs / day_s)
        if t >= day_s:
            break
        name, gpus, usual, most = rng.choices(EXPERIMENTS, WEIGHTS)[0]
        runtime = min(usual * rng.lognormvariate(0, 0.15), most * 0.95) * hour
        out.append((t, name, gpus, runtime, most * hour, "urgent" if rng.random() < urgent_share else "normal"))
    return out


def report(seen: dict[int, Seen], started: dict[int, float], hour: float) -> None:
    def figures(label: str, pairs: list[tuple[float, float, float]]) -> None:
        if not pairs:
            print(f"{label}: none")
            return
        errs = [abs(actual - (lo + hi) / 2) for actual, lo, hi in pairs]
        # The store keeps the Job's start time to the second, so a start up to a second before the range is in.
        inside = sum(1 for actual, lo, hi in pairs if lo - 1 <= actual <= hi + 1)
        widths = [hi - lo for _, lo, hi in pairs]
        late = [actual - hi for actual, lo, hi in pairs if actual > hi + 1]
        early = [lo - actual for actual, lo, hi in pairs if actual < lo - 1]
        print(f"{label}: start inside the range {inside}/{len(pairs)} ({100 * inside / len(pairs):.0f} %); "
              f"error of the middle median {statistics.median(errs):.1f} s ({statistics.median(errs) / hour:.2f} h), "
              f"p90 {percentile(errs, 90):.1f} s ({percentile(errs, 90) / hour:.2f} h); range width median "
              f"{statistics.median(widths):.1f} s ({statistics.median(widths) / hour:.2f} h); "
              f"outside: {len(late)} later (median {statistics.median(late) if late else 0:.1f} s), "
              f"{len(early)} earlier (median {statistics.median(early) if early else 0:.1f} s)")

    waited = {j: s for j, s in seen.items() if s.reads and j in started}
    first_shown = [s.reads[0] for s in waited.values()]
    first_known = [(started[j], r[1], r[2]) for j, s in waited.items()
                   if (r := next((x for x in s.reads if x is not None), None)) is not None]
    every = [(started[j], r[1], r[2]) for j, s in waited.items() for r in s.reads if r is not None]
    reads = [r for s in waited.values() for r in s.reads]
    never = [s for s in waited.values() if all(r is None for r in s.reads)]
    print(f"waited and started: {len(waited)} jobs; first answer shown 'unknown' for "
          f"{sum(r is None for r in first_shown)}/{len(first_shown)}; never an estimate: {len(never)}; "
          f"reads 'unknown': {sum(r is None for r in reads)}/{len(reads)} "
          f"({100 * sum(r is None for r in reads) / max(1, len(reads)):.0f} %)")
    figures("first known estimate", first_known)
    figures("every estimate read ", every)
    by_gpus: dict[int, list[float]] = {}
    for j, s in waited.items():
        r = next((x for x in s.reads if x is not None), None)
        if r is not None:
            by_gpus.setdefault(s.gpus, []).append(abs(started[j] - (r[1] + r[2]) / 2))
    print("first known estimate's error by job size: " + ", ".join(
        f"{g} GPU: median {statistics.median(v):.1f} s (n={len(v)})" for g, v in sorted(by_gpus.items())))
    late: dict[int, list[bool]] = {}
    for j, s in waited.items():
        for r in s.reads:
            if r is not None:
                late.setdefault(s.gpus, []).append(started[j] > r[2] + 1)
    print("every estimate read, started after the range, by job size: " + ", ".join(
        f"{g} GPU: {100 * sum(v) / len(v):.0f} % of {len(v)}" for g, v in sorted(late.items())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10, help="wall time for the whole run (at most 11)")
    ap.add_argument("--quick", action="store_true", help="a 2-minute version")
    ap.add_argument("--gpus", type=int, default=8, help="the team queue's GPU quota")
    ap.add_argument("--jobs", type=int, default=0, help="submissions over the day (default: a load of ~1.2)")
    ap.add_argument("--urgent", type=float, default=0.1, help="share of urgent jobs")
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    minutes = 2.0 if args.quick else min(args.minutes, 11.0)
    budget = minutes * 60
    day_s = budget * 0.6  # the rest drains the queue
    hour = day_s / 24
    rng = random.Random(args.seed)
    mean_gpu_hours = sum(w * g * u for (_, g, u, _), w in zip(EXPERIMENTS, WEIGHTS, strict=True)) / sum(WEIGHTS)
    jobs = args.jobs or math.ceil(1.2 * args.gpus * 24 / mean_gpu_hours)
    plan = plan_day(rng, jobs, day_s, args.urgent)
    print(f"a day of {len(plan)} submissions in {day_s:.0f} s (1 simulated hour = {hour:.1f} s), "
          f"a queue of {args.gpus} GPUs, offered load {sum(p[2] * p[3] for p in plan) / (args.gpus * day_s):.2f}")

    cluster = start_cluster()
    t_end = time.monotonic() + budget
    with kueue_queue(cluster, args.gpus) as env:
        data = Path(tempfile.mkdtemp(prefix="qbench-est-")) / "portal-data"
        settings = k8s_settings(cluster, env.namespace, data, kueue_default_queue=env.queue,
                                kueue_visibility_url=env.visibility_url, sync_interval_seconds=0.5)
        portal = build_portal(settings)
        portal.sync.start()
        seen: dict[int, Seen] = {}
        started: dict[int, float] = {}
        try:
            t0 = time.time()
            pending = list(plan)
            while time.monotonic() < t_end and (pending or len(started) < len(seen)):
                now = time.time()
                while pending and now - t0 >= pending[0][0]:
                    _, name, gpus, runtime, most, priority = pending.pop(0)
                    settings.pod_annotations = {"kwok.test/runtime": f"{runtime:.1f}s"}
                    job_id = portal.jobs.submit(ME, {"name": name, "script": "train_example.py", "gpus": gpus,
                                                     "priority": priority, "max_runtime_hours": most / 3600})
                    seen[job_id] = Seen(name, gpus, priority, now)
                for job_id, s in seen.items():
                    if job_id in started:
                        continue
                    view = portal.jobs.get(ME, job_id)
                    if view.started_at is not None:
                        started[job_id] = view.started_at.timestamp()
                        continue
                    if view.status is not JobStatus.QUEUED:
                        continue
                    status = queues.waiting_status(portal.jobs, view)
                    if status is None:
                        continue  # not in Kueue's pending list yet (or admitted, the store not told yet)
                    est = status.estimate
                    s.reads.append(None if est is None else (now, est.earliest.timestamp(), est.latest.timestamp()))
                time.sleep(0.5)
            left = [j for j in seen if j not in started]
            print(f"submitted {len(seen)} of {len(plan)}; started {len(started)}; still waiting at the end "
                  f"{len(left)}; wall {time.time() - t0:.0f} s; "
                  f"kubernetes requests by this portal: {portal.jobs.backend.requests}")
            report(seen, started, hour)
        finally:
            portal.close()
            cluster.kubectl("-n", env.namespace, "delete", "jobs", "--all", "--wait=false", check=False)


if __name__ == "__main__":
    sys.exit(main())
