"""Dashboard render time, server side, with 1,000 / 10,000 / 100,000 jobs in the store.

Each figure is one full script run of the dashboard page under Streamlit's AppTest (queries, 40 cards,
widget tree) on a warm process. Target: p95 at 100,000 jobs <= 100 ms.

--search (issue 14): the dashboard's queries with a search typed in (the section counts, then each non-empty
section's first cards) and the REST list's, at 10,000 / 300,000 / 1,000,000 jobs of 50 owners, for each kind of
term, before (a GROUP BY and a listing over every match) and after (newest first, counts stopping at 1,000).

    .venv/bin/python bench/dashboard_render.py --search [--sizes 10000,300000,1000000] [--postgresql start]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import APP, ScriptTimer, fresh_portal, percentile, summary, time_runs

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


# Each kind of term the issue names (the rare name is in one job of each seeding batch).
TERMS = {"rare name 'exp-0004242'": "exp-0004242", "in every job 'train_example'": "train_example",
         "an owner 'user-07'": "user-07", "a template 'llm-lora'": "llm-lora", "1 character 'e'": "e",
         "2 characters 'zq' (in no job)": "zq", "in no job 'zzqq'": "zzqq"}


def before_queries(jobs, term: str, owner: str | None, page: int) -> None:
    """The dashboard's queries as they were: a GROUP BY over every match, then each section's listing."""
    from sqlalchemy import func, select

    from services.models import StatusGroup
    from services.store.orm import Job
    from services.store.search import matches

    dialect = jobs.sessions.kw["bind"].dialect.name
    where = [matches(dialect, term), *([Job.owner == owner] if owner else [])]
    with jobs.session() as s:
        counts = dict(s.execute(select(Job.status_group, func.count()).where(*where).group_by(Job.status_group)).all())
        for g in StatusGroup:
            if counts.get(g.value):
                list(s.scalars(select(Job).where(*where, Job.status_group == g.value).order_by(Job.id.desc())
                               .limit(page + 1)))


def after_queries(jobs, term: str, owner: str | None, page: int) -> None:
    from services.models import StatusGroup

    counts = jobs.counts(search=term, owner=owner)
    for g in StatusGroup:
        if counts[g]:
            jobs.list_group(g, page, search=term, owner=owner)


def search_figures(sizes: list[int]) -> None:
    from services.portal import get_portal, reset_portal
    from services.store.seed import seed_jobs

    portal = get_portal()
    engine = portal.jobs.sessions.kw["bind"]
    owners = [f"user-{i:02d}" for i in range(50)]
    page = max(1, portal.settings.dashboard_page_size // 2)  # every section on screen: half a page each
    have = 0

    def short(ms: list[float]) -> str:
        return f"p50 {statistics.median(ms):7.1f} p95 {percentile(ms, 95):7.1f}"

    for total in sizes:
        t = time.perf_counter()
        seed_jobs(engine, total - have, owner=owners, seed=total, varied=True)
        have = total
        reset_portal()  # a restart: the portal's start-up keeps the planner's statistics
        portal = get_portal()
        engine, jobs = portal.jobs.sessions.kw["bind"], portal.jobs
        print(f"\n{engine.dialect.name}, {total:,} jobs (seeded in {time.perf_counter() - t:.0f} s); milliseconds")
        print(f"{'term':32s} {'view':9s} | {'dashboard before':>21s} | {'dashboard after':>21s} | "
              f"{'REST list before':>21s} | {'REST list after':>21s} | counts after")
        for label, term in TERMS.items():
            for view, owner in (("everyone", None), ("user-07", "user-07")):
                runs = 3 if total >= 300_000 else 10
                old = time_runs(lambda t=term, o=owner, jobs=jobs: before_queries(jobs, t, o, page), runs)
                new = time_runs(lambda t=term, o=owner, jobs=jobs: after_queries(jobs, t, o, page), 2 * runs)
                api_old = time_runs(lambda t=term, o=owner, jobs=jobs: old_list(jobs, t, o), runs)
                api_new = time_runs(lambda t=term, o=owner, jobs=jobs: jobs.list_jobs(limit=51, search=t, owner=o),
                                    2 * runs)
                shown = " ".join(str(c) for c in jobs.counts(search=term, owner=owner).values())
                print(f"{label:32s} {view:9s} | {short(old)} | {short(new)} | {short(api_old)} | {short(api_new)} "
                      f"| {shown}")
    portal.close()


def old_list(jobs, term: str, owner: str | None) -> None:
    """The REST list's query as it was: every match's id in order, then the first 51."""
    from sqlalchemy import select

    from services.store.orm import Job
    from services.store.search import matches

    where = [matches(jobs.sessions.kw["bind"].dialect.name, term), *([Job.owner == owner] if owner else [])]
    with jobs.session() as s:
        list(s.scalars(select(Job).where(*where).order_by(Job.id.desc()).limit(51)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--search", action="store_true", help="the dashboard with a search, before and after (issue 14)")
    ap.add_argument("--sizes", default="10000,300000,1000000")
    ap.add_argument("--postgresql", default="", help="'start' for a throwaway server, or a postgresql+psycopg:// URL")
    args = ap.parse_args()
    if not args.search:
        main()
    else:
        server = None
        if args.postgresql == "start":
            from tests.pg_env import start_server

            server = start_server()
            args.postgresql = server.url(server.create_database())
        if args.postgresql:
            os.environ["PORTAL_DATABASE_URL"] = args.postgresql
        fresh_portal()
        search_figures([int(n) for n in args.sizes.split(",")])
        if server is not None:
            server.stop()
