from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from services.store.db import make_engine, migrate
from services.store.orm import Base


def test_migrations_build_exactly_the_orm_schema(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    migrate(engine)
    migrate(engine)  # a second start-up is a no-op
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"ORM and migrations differ; add an Alembic revision: {diff}"
    assert {"jobs", "metric_points", "job_logs", "job_events", "alembic_version"} <= set(
        inspect(engine).get_table_names()
    )


def test_sqlite_runs_with_wal_busy_timeout_and_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


def test_dashboard_queries_use_indexes(portal):
    with portal.jobs.session() as s:
        plan = s.execute(text(
            "EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE status_group='Completed' ORDER BY id DESC LIMIT 11"
        )).all()
    detail = " ".join(str(r[-1]) for r in plan)
    assert "ix_jobs_group_id" in detail and "TEMP B-TREE" not in detail
