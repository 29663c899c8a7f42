"""Issue 20 figures: the Usage page's sums over a year of jobs (100,000 by default) across 50 users, 10 teams and 3
GPU types, read from the usage sums per month, owner, team and GPU type (seeded in bulk with the per-job rows):
the service's GROUP BY for an admin (every row) and for one team's member (their own and their team's), and the
whole page under AppTest. SQLite by default; --postgresql start for a throwaway PostgreSQL.

    .venv/bin/python bench/usage_scale.py
    .venv/bin/python bench/usage_scale.py --jobs 1000000 --postgresql start
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import APP, ScriptTimer, fresh_portal, summary, time_runs

from services.models import Role, User
from services.usage import UsageService, parse_query

USERS, TEAMS, TYPES = 50, 10, ("a100", "h100", "l4")


def seed(engine, n_jobs: int, teams: int = TEAMS) -> int:
    """One usage row per job for the month it ran in, a fifth of them a second row for the next month."""
    rng = np.random.default_rng(0)
    months = rng.integers(1, 13, n_jobs)
    users = rng.integers(0, USERS, n_jobs)
    types = rng.integers(0, len(TYPES), n_jobs)
    secs = rng.exponential(4 * 3600, n_jobs) * rng.integers(1, 9, n_jobs)
    rows = [(i + 1, f"2026-{m:02d}", TYPES[t], f"user-{u:02d}", f"team-{u % teams}", float(s), float(s) / 3600 * 2.5,
             True) for i, (m, u, t, s) in enumerate(zip(months, users, types, secs, strict=True))]
    rows += [(r[0], f"2026-{int(r[1][5:]) + 1:02d}", *r[2:]) for r in rows[::5] if r[1] != "2026-12"]
    sql = ("INSERT INTO job_usage (job_id, month, gpu_type, owner, team, gpu_seconds, cost, final) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)")
    with engine.begin() as conn:
        raw = conn.connection.dbapi_connection
        if engine.dialect.name == "sqlite":
            raw.executemany(sql.replace("%s", "?"), rows)
        else:
            with raw.cursor() as cur:
                cur.executemany(sql, rows)
        # The sums the accruals keep, made in one statement here.
        conn.exec_driver_sql("INSERT INTO usage_totals (month, owner, team, gpu_type, jobs, gpu_seconds, cost) "
                             "SELECT month, owner, team, gpu_type, count(*), sum(gpu_seconds), sum(cost) "
                             "FROM job_usage GROUP BY month, owner, team, gpu_type")
        conn.exec_driver_sql("ANALYZE")
    return len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--teams", type=int, default=TEAMS)
    ap.add_argument("--postgresql", default="", help="a postgresql+psycopg:// URL of an empty database, or 'start'")
    args = ap.parse_args()
    if args.postgresql == "start":
        from tests.pg_env import start_server

        server = start_server()
        args.postgresql = server.url(server.create_database())
    if args.postgresql:
        os.environ["PORTAL_DATABASE_URL"] = args.postgresql
    p = fresh_portal()
    engine = p.jobs.sessions.kw["bind"]
    t = time.perf_counter()
    n = seed(engine, args.jobs, args.teams)
    took = time.perf_counter() - t
    print(f"{engine.dialect.name}: {args.jobs:,} jobs, {args.teams} teams, {n:,} usage rows seeded in {took:.1f} s")
    usage = UsageService.of(p.jobs)
    admin, member = User("ada", Role.ADMIN), User("user-03", groups=(f"team-{3 % args.teams}",))
    for who, user in (("admin", admin), ("team member", member)):
        for by in ("month,team", "user", "gpu_type,month", "user,team,month,gpu_type"):
            q = parse_query("2026-01", "2026-12", by)
            rows = usage.rows(user, q)
            ms = time_runs(lambda u=user, q=q: usage.rows(u, q), 20)
            print(f"  {who:11s} by {by:26s} {len(rows):5d} rows  {summary(ms)}")
    q = parse_query("2026-01", "2026-12", "user,month")
    print(f"  CSV, admin, by user,month: {summary(time_runs(lambda: usage.csv(admin, q), 10))}")

    from streamlit.testing.v1 import AppTest

    timer = ScriptTimer()
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/usage.py").run()
    assert not at.exception, at.exception
    timer.take()
    for _ in range(10):
        at.run()  # a rerun of the page, as a click on Show makes
    print(f"  Usage page rerun (single-user admin: every row; the script run only): {summary(timer.take())}")

if __name__ == "__main__":
    main()
