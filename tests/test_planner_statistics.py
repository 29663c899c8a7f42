"""Issue 14: the portal keeps the planner's statistics itself (the History page's plans depend on them), at
start-up and from the sync loop, on SQLite and on PostgreSQL (fixture database_url)."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine

from services.config import Settings
from services.portal import Portal, build_portal
from services.store import maintenance
from services.store.db import make_engine, migrate
from services.store.seed import seed_jobs
from tests.conftest import _kill_leftover_jobs, wait_until

JOBS = 3000


def job_statistics(engine: Engine) -> dict[str, float]:
    """What the planner knows of the jobs table: the rows it thinks there are, per index (SQLite's sqlite_stat1)
    or for the table and its parameter expression indexes (PostgreSQL's pg_class and pg_stats)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            if not conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
                return {}
            return {idx: float(stat.split()[0]) for idx, stat in conn.exec_driver_sql(
                "SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'jobs' AND idx IS NOT NULL")}
        analyzed = {name for (name,) in conn.exec_driver_sql(
            "SELECT DISTINCT tablename FROM pg_stats WHERE schemaname = current_schema() AND "
            "(tablename = 'jobs' OR left(tablename, 14) = 'ix_jobs_param_')")}
        reltuples = conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE relname = 'jobs'").scalar()
        # pg_stats has rows for the table only once it was analyzed (CREATE INDEX sets reltuples, not those).
        return {name: float(reltuples) for name in analyzed}


def start_portal(database_url: str, tmp_path: Path) -> Portal:
    return build_portal(Settings(data_dir=tmp_path / "portal-data", backend="local", database_url=database_url,
                                 stop_grace_seconds=2))


def test_a_portal_started_on_a_store_without_statistics_gathers_them_and_keeps_them_current(database_url, tmp_path):
    """A store filled outside the portal (a bulk load, a restore) and never analyzed: once the portal has started,
    the planner knows the jobs table's size, its sort indexes and (PostgreSQL) its parameter indexes; after the
    table has tripled, the sync loop's next check (not an earlier one) brings them up to date."""
    engine = make_engine(database_url)
    migrate(engine)
    seed_jobs(engine, JOBS, owner=["alice", "bob", "carol"], varied=True)
    engine.dispose()  # PostgreSQL: a backend's activity counters reach pg_stat_user_tables when it ends
    assert job_statistics(engine) == {}

    portal = start_portal(database_url, tmp_path)
    try:
        stats = job_statistics(portal.jobs.sessions.kw["bind"])
        if engine.dialect.name == "sqlite":
            sorts = {"ix_jobs_by_final_loss", "ix_jobs_by_runtime_seconds", "ix_jobs_param_batch_size"}
            assert sorts <= set(stats), stats
        else:
            assert "jobs" in stats and any(name.startswith("ix_jobs_param_") for name in stats), stats
        assert all(0.5 * JOBS <= rows <= 1.5 * JOBS for rows in stats.values()), stats

        seed_jobs(engine, 2 * JOBS, owner="dave", seed=1, varied=True)
        engine.dispose()
        sync = portal.sync
        assert sync.refresh_statistics(now=time.time()) == []  # checked at most every CHECK_EVERY_SECONDS
        assert all(rows <= 1.5 * JOBS for rows in job_statistics(portal.jobs.sessions.kw["bind"]).values())

        clock = [time.time()]

        def refreshed_jobs() -> bool:
            # A fake clock past each next check; PostgreSQL's counters of the load may arrive a few seconds late.
            clock[0] += maintenance.CHECK_EVERY_SECONDS + 1
            return "jobs" in sync.refresh_statistics(now=clock[0])

        wait_until(refreshed_jobs, timeout=30, interval=0.5)
        stats = job_statistics(portal.jobs.sessions.kw["bind"])
        assert stats and all(2 * JOBS <= rows <= 4 * JOBS for rows in stats.values()), stats
        # Current now: the next check analyzes nothing.
        assert "jobs" not in sync.refresh_statistics(now=clock[0] + maintenance.CHECK_EVERY_SECONDS + 1)
    finally:
        _kill_leftover_jobs(portal)
        portal.close()
