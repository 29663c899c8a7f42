"""Dashboard render time, server side, with 1,000 / 10,000 / 100,000 jobs in the store.

Each figure is one full script run of the dashboard page under Streamlit's AppTest (queries, 40 cards,
widget tree) on a warm process. Target: p95 at 100,000 jobs <= 100 ms.
"""

from __future__ import annotations

import time

from _common import APP, ScriptTimer, fresh_portal, summary, time_runs

from services.auth import local_user
from services.store.seed import seed_jobs


def main() -> None:
    from streamlit.testing.v1 import AppTest

    portal = fresh_portal()
    timer = ScriptTimer()
    engine = portal.jobs.sessions.kw["bind"]
    owner = local_user(portal.settings).name
    have = 0
    for total in (1_000, 10_000, 100_000):
        t = time.perf_counter()
        seed_jobs(engine, total - have, owner=owner, seed=total)
        have = total
        seeded = time.perf_counter() - t
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()  # warm-up: imports, first page build
        timer.take()
        ms = time_runs(at.run, 30)
        assert not at.exception, at.exception
        cards = len([b for b in at.button if b.key and b.key.endswith("-clone")])
        print(f"{total:>7,} jobs: server-side script run {summary(timer.take())}   {cards} cards "
              f"(seeded in {seeded:.1f} s)")
        print(f"{'':>7}  AppTest round trip:    {summary(ms)}")
        # The same page with a text search (scans the name/owner/script column).
        at.text_input(key="dash_search").input("exp-00001").run()
        timer.take()
        time_runs(at.run, 10)
        print(f"{'':>7}  with a text search:    {summary(timer.take())}")
        # Naive way for comparison: load every job and filter in Python.
        t = time.perf_counter()
        portal.jobs.list_jobs(limit=total)
        naive = (time.perf_counter() - t) * 1000
        print(f"{'':>7}  naive 'load all jobs' query alone: {naive:7.1f} ms")


if __name__ == "__main__":
    main()
