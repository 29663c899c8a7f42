"""Issue 19 figure: the portal's own overhead per sweep trial, from the moment the runner asks Optuna for the trial
to the moment the portal has read the trial's first log line, without the script's own time.

A portal in this process (local backend, its sync loop and sweep runner running on their threads as in a real
portal, the default sync interval) runs a random sweep of N one-line trials, one at a time. The script prints its
own clock first thing; per trial the bench records when Optuna's trial was created (the ask), when its job row was
written, the script's printed clock, and when the job's log cursor first moved (polled every 5 ms). The interpreter's
own start-up (``python -c 'print(1)'``, measured here) is the script's, so it is taken out of the total.

    .venv/bin/python bench/sweep_overhead.py [-n 20] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

from _common import percentile

SCRIPT = "import time\nprint(f'started={time.time():.6f}', flush=True)\nprint('loss=0.5', flush=True)\n"


def interpreter_start() -> float:
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-S", "-c", "print(1)"], check=True, capture_output=True)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20, help="trials")
    ap.add_argument("--interval", type=float, default=0.5, help="PORTAL_SYNC_INTERVAL_SECONDS")
    args = ap.parse_args()

    from optuna.storages._rdb import models as om
    from sqlalchemy import select

    from services.auth import local_user
    from services.config import Settings
    from services.portal import build_portal
    from services.store.orm import Job, JobLog

    data_dir = Path(tempfile.mkdtemp(prefix="portal-bench-sweep-"))
    portal = build_portal(Settings(data_dir=data_dir, backend="local", sync_interval_seconds=args.interval))
    (portal.settings.workspace_dir / "first_line.py").write_text(SCRIPT)
    user = local_user(portal.settings)
    portal.sync.start()
    try:
        sweep = portal.sweeps.create(user, {
            "name": "overhead", "base": {"script": "first_line.py", "epochs": 1}, "method": "random",
            "budget": args.n, "parallel": 1, "early_stopping": "none",
            "params": {"learning_rate": {"kind": "uniform", "low": 0.001, "high": 0.1}}})
        first_line: dict[int, float] = {}
        deadline = time.time() + 60 + args.n * (2 * args.interval + 2)
        while len(first_line) < args.n and time.time() < deadline and not portal.sweeps.get(user, sweep.id).finished:
            with portal.jobs.session() as s:
                for job_id, lines in s.execute(select(Job.id, JobLog.lines).join(JobLog, JobLog.job_id == Job.id)
                                               .where(Job.sweep_id == sweep.id)):
                    if lines and job_id not in first_line:
                        first_line[job_id] = time.time()
            time.sleep(0.005)
        view = portal.sweeps.get(user, sweep.id)
        if view.state not in ("running", "done"):
            print(f"the sweep ended {view.state}: {view.stop_reason}", file=sys.stderr)
        with portal.jobs.session() as s:
            jobs = {j.sweep_trial: j for j in s.scalars(select(Job).where(Job.sweep_id == sweep.id))}
            asked = dict(s.execute(select(om.TrialModel.number, om.TrialModel.datetime_start)
                                   .join(om.StudyModel).where(om.StudyModel.study_name == view.study_name)).all())
    finally:
        portal.sync.stop()
        portal.close()

    startup = interpreter_start()
    ask_to_row, row_to_script, script_to_read, total, gap = [], [], [], [], []
    for number, job in sorted(jobs.items()):
        before = jobs.get(number - 1)
        if before is not None and before.finished_at is not None:
            gap.append(asked[number].astimezone(UTC).timestamp() - before.finished_at.timestamp())
        if job.id not in first_line:
            continue
        # Optuna writes datetime_start as this machine's local time without a zone.
        t_ask = asked[number].astimezone(UTC).timestamp()
        t_row = job.created_at.timestamp()
        log = (data_dir / "jobs" / str(job.id) / "job.log")
        printed = next((float(line.split("=", 1)[1]) for line in log.read_text().splitlines()
                        if line.startswith("started=")), None) if log.exists() else None
        t_read = first_line[job.id]
        ask_to_row.append(t_row - t_ask)
        if printed is not None:
            row_to_script.append(printed - t_row - startup)
            script_to_read.append(t_read - printed)
        total.append(t_read - t_ask - startup)

    def line(label: str, xs: list[float]) -> str:
        if not xs:
            return f"{label:<48} (no data)"
        return (f"{label:<48} median {statistics.median(xs) * 1000:7.1f} ms   p90 {percentile(xs, 90) * 1000:7.1f} ms"
                f"   ({len(xs)} trials)")

    print(f"sweep of {args.n} trials, one at a time, sync interval {args.interval:g} s; "
          f"interpreter start-up {startup * 1000:.1f} ms (the script's, taken out)")
    print(line("ask -> job row written (runner, submit)", ask_to_row))
    print(line("job row -> script running (backend start)", row_to_script))
    print(line("script printed -> portal read the line (log)", script_to_read))
    print(line("portal overhead per trial (ask -> first line)", total))
    print(line("a trial's end -> the next trial asked (the sweep)", gap))


if __name__ == "__main__":
    main()
