"""Job page with a 1,000,000-line log: first render of the Logs tab and the portal's memory growth.

Targets: first render <= 300 ms, memory growth <= 50 MB. Also prints how fast the sync loop ingests the
whole log (metrics extracted and stored), and the naive way (reading the whole file) for comparison.
"""

from __future__ import annotations

import gc
import time

import psutil
from _common import APP, fresh_portal, summary, time_runs

from services.auth import local_user
from services.models import JobStatus

LINES = 1_000_000


def write_log(path, lines: int) -> None:
    with open(path, "w") as fh:
        for i in range(lines):
            if i % 100 == 0:
                fh.write(f"Epoch {i // 100 + 1}/{lines // 100}\n")
            elif i % 10 == 0:
                fh.write(f"step={i} loss={1.0 / (1 + i / 1000):.5f} lr=0.0003\n")
            else:
                fh.write(f"2026-11-26 12:00:00 INFO batch {i} done in 0.12s, data loader queue depth 4\n")


def main() -> None:
    from streamlit.testing.v1 import AppTest

    portal = fresh_portal()
    user = local_user(portal.settings)
    job_id = portal.jobs.submit(user, {"name": "big-log", "script": "train_example.py", "epochs": 1,
                                       "extra_args": "--seconds-per-epoch 0"})
    while portal.jobs.get(user, job_id).is_active:
        portal.sync.tick()
        time.sleep(0.1)
    log_path, _ = portal.jobs.log_info(job_id)
    write_log(log_path, LINES)
    size_mb = log_path.stat().st_size / 1e6
    # Ingest as the sync loop would (cursor reset), timed.
    from services.store.orm import JobLog

    with portal.jobs.session() as s:
        jl = s.get(JobLog, job_id)
        jl.offset, jl.lines, jl.parser_state = 0, 0, {}
    t = time.perf_counter()
    while portal.sync.ingest_logs(job_id, final=True):
        pass
    ingest = time.perf_counter() - t
    print(f"log: {LINES:,} lines, {size_mb:.0f} MB; sync ingest {ingest:.1f} s "
          f"({LINES / ingest:,.0f} lines/s incl. storing points)")
    assert portal.jobs.get(user, job_id).status is JobStatus.SUCCEEDED

    proc = psutil.Process()
    small = portal.jobs.submit(user, {"name": "small", "script": "train_example.py", "epochs": 1,
                                      "extra_args": "--seconds-per-epoch 0"})
    while portal.jobs.get(user, small).is_active:
        portal.sync.tick()
        time.sleep(0.1)
    for label, warm in (("cold process", False), ("warm process", True)):
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        if warm:  # the portal has already shown some job page (imports done), as a running one has
            at.query_params["id"] = str(small)
            at.switch_page("pages/job.py").run()
            at = AppTest.from_file(APP, default_timeout=60)
            at.run()
        gc.collect()
        rss0 = proc.memory_info().rss
        at.query_params["id"] = str(job_id)
        t = time.perf_counter()
        at.switch_page("pages/job.py").run()
        first = (time.perf_counter() - t) * 1000
        assert not at.exception, at.exception
        assert at.code and "INFO batch" in at.code[0].value
        gc.collect()
        grown = (proc.memory_info().rss - rss0) / 1e6
        print(f"first render of the Logs tab ({label}): {first:.0f} ms; memory growth {grown:.1f} MB")
    print(f"warm re-renders: {summary(time_runs(at.run, 20))}")
    t = time.perf_counter()
    naive = log_path.read_text().splitlines()[-500:]
    naive_ms = (time.perf_counter() - t) * 1000
    print(f"naive tail (read the whole file): {naive_ms:.0f} ms for {len(naive)} lines")


if __name__ == "__main__":
    main()
