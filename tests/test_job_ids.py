"""Ids only grow (migration 0015): a deleted job's id is never given to another job, so a bookmark, a compare link
or a notebook's job handle of the deleted job says "not found" instead of showing someone else's run. On SQLite
and on PostgreSQL (fixture database_url), through every way the portal makes a job, and across restarts."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from services.history import HistoryQuery
from services.models import NotFound, StatusGroup, User
from services.store.db import alembic_config, make_engine
from services.store.seed import seed_jobs
from tests.conftest import portal_on
from tests.test_history import VERA, final_metric_rows, final_metrics_of_the_jobs, totals_match_the_jobs
from tests.test_store_databases import finished

ALICE = User("alice")
VIEWS = [HistoryQuery(), HistoryQuery(owner="alice"), HistoryQuery(status=[StatusGroup.SUCCEEDED]),
         HistoryQuery(gpus_min=1), HistoryQuery(template="llm-lora")]


def job_ids(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql("SELECT id FROM jobs ORDER BY id").scalars())


def test_the_newest_jobs_id_is_never_given_again_by_submit_clone_retry_or_a_restart(database_url, tmp_path):
    given: list[int] = []

    def new(job_id: int) -> int:
        assert job_id > max(given, default=0), f"id {job_id} was given before: {given}"
        given.append(job_id)
        return job_id

    with portal_on(database_url, tmp_path) as p:
        first = [new(finished(p, ALICE, f"run-{i}", epochs=1).id) for i in range(3)]
        p.jobs.delete(ALICE, first[-1])
        with pytest.raises(NotFound):  # the deleted job's link stays dead...
            p.jobs.get(ALICE, first[-1])
        after = new(finished(p, ALICE, "after-delete", epochs=1).id)
        with pytest.raises(NotFound):  # ...also once the next job exists
            p.jobs.get(ALICE, first[-1])
        p.jobs.delete(ALICE, after)
        retried = new(p.jobs.retry(ALICE, first[0]))
        p.jobs.delete(ALICE, retried)
        values = p.jobs.clone_values(ALICE, first[1]) | {"name": "clone"}
        new(p.jobs.submit(ALICE, values))
        # Templates are deleted by id (REST DELETE /api/v1/templates/{id}): theirs only grow too.
        templates = [p.templates.save(ALICE, name, {"script": "train_example.py", "epochs": 1}).id
                     for name in ("resnet", "bert")]
        p.templates.delete(ALICE, templates[-1])
        templates.append(p.templates.save(ALICE, "llama", {"epochs": 2}).id)
        assert templates[-1] > templates[-2]
        p.templates.delete(ALICE, templates[-1])
        p.jobs.delete(ALICE, given[-1])
    # A restart keeps the high-water mark: the newest job deleted before it does not come back after it.
    with portal_on(database_url, tmp_path) as p:
        new(finished(p, ALICE, "after-restart", epochs=1).id)
        p.jobs.delete(ALICE, given[-1])
        # The bulk loader's rows (driver-level inserts, COPY on PostgreSQL) take new ids too.
        seed_jobs(p.jobs.sessions.kw["bind"], 5, owner="alice")
        seeded = [i for i in job_ids(p.jobs.sessions.kw["bind"]) if i not in given]
        assert len(seeded) == 5 and min(seeded) > max(given)
        assert p.templates.save(ALICE, "after-restart", {"epochs": 3}).id > max(templates)


def snapshot(engine: sa.Engine) -> dict[str, object]:
    """Everything an upgrade must keep: rows (ids included), derived rows, and the schema's other objects."""
    with engine.connect() as conn:
        def rows(sql: str) -> list[tuple]:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]

        got: dict[str, object] = {
            table: rows(f"SELECT * FROM {table} ORDER BY 1, 2")
            for table in ("jobs", "job_templates", "job_events", "metric_points", "job_logs", "job_totals",
                          "job_final_metrics")}
        if engine.dialect.name == "sqlite":
            # Every index and trigger exactly as it was (the two rebuilt tables' own CREATE TABLE aside).
            got["schema"] = rows("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT IN "
                                 "('jobs', 'job_templates', 'sqlite_sequence') ORDER BY type, name")
            got["stats"] = rows("SELECT tbl, idx, stat FROM sqlite_stat1 ORDER BY tbl, idx")
            got["orphan"] = conn.exec_driver_sql("SELECT id FROM job_events WHERE message = 'orphan'").scalar()
            got["search"] = rows("SELECT rowid FROM jobs_search WHERE jobs_search MATCH '\"exp-00000\"' ORDER BY 1")
        else:
            got["schema"] = rows("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")
            got["triggers"] = rows("SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal "
                                   "ORDER BY 1")
    return got


def test_an_upgrade_keeps_every_id_row_index_and_trigger_and_ids_grow_after_it(database_url, tmp_path):
    """A store made at revision 0014, with history, gaps in its ids, and jobs copied in with their ids (a store
    moved over from elsewhere), upgraded: every id, row, index and trigger kept, foreign keys intact, and the
    next job, after deleting the newest, gets a larger id than any job had; the derived rows follow changes."""
    engine = make_engine(database_url)
    cfg = alembic_config(engine)
    try:
        command.upgrade(cfg, "0014")
        seed_jobs(engine, 40, owner=["alice", "bob"], seed=3, varied=True)
        with engine.begin() as conn:
            columns = [c["name"] for c in sa.inspect(conn).get_columns("jobs") if c["name"] not in
                       ("id", "submission_id")]
            listed = ", ".join(f'"{c}"' for c in columns)
            # Rows copied in with ids past what the database itself has handed out.
            conn.exec_driver_sql(f"INSERT INTO jobs (id, submission_id, {listed}) "
                                 f"SELECT id + 5, substr(submission_id, 1, 30) || '-moved', {listed} FROM jobs "
                                 "WHERE id > 35 ORDER BY id")
            conn.exec_driver_sql("DELETE FROM jobs WHERE id IN (7, 20)")
            for job_id in (1, 12, 45):
                conn.execute(sa.text("INSERT INTO job_events (job_id, ts, status, message) "
                                     "VALUES (:j, '2026-01-01 00:00:00', 'Succeeded', 'done')"), {"j": job_id})
                conn.execute(sa.text("INSERT INTO metric_points (job_id, name, step, value, ts) "
                                     "VALUES (:j, 'loss', 1, 0.5, 0)"), {"j": job_id})
                conn.execute(sa.text("INSERT INTO job_logs (job_id, path, \"offset\", lines, parser_state, "
                                     "updated_at) VALUES (:j, 'x.log', 0, 0, '{}', '2026-01-01 00:00:00')"),
                             {"j": job_id})
            for name in ("resnet", "bert", "gone"):
                conn.execute(sa.text("INSERT INTO job_templates (owner, name, \"values\", created_at, updated_at) "
                                     "VALUES ('alice', :n, '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"),
                             {"n": name})
            conn.exec_driver_sql("DELETE FROM job_templates WHERE name = 'gone'")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
            if engine.dialect.name == "sqlite":  # an orphan from some old accident must not block the upgrade
                conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
                conn.exec_driver_sql("INSERT INTO job_events (job_id, ts, status, message) "
                                     "VALUES (999, '2026-01-01 00:00:00', 'Failed', 'orphan')")
                conn.exec_driver_sql("PRAGMA foreign_keys = ON")
        before = snapshot(engine)
        assert engine.dialect.name != "sqlite" or before["search"]  # the search index has something to lose
        command.upgrade(cfg, "0015")
        assert snapshot(engine) == before
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                # Every foreign key still holds (the one planted orphan aside); the cascades did not fire.
                assert [r[:3] for r in conn.exec_driver_sql("PRAGMA foreign_key_check")] == [
                    ("job_events", before["orphan"], "jobs")]
                conn.exec_driver_sql("INSERT INTO jobs_search(jobs_search) VALUES ('integrity-check')")
                # The connection the migration ran on went back to the pool with its foreign keys on.
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        command.upgrade(cfg, "head")
    finally:
        engine.dispose()
    top = 45  # the copied-in rows' largest id
    with portal_on(database_url, tmp_path) as p:
        owner = User(p.jobs.get(VERA, top).owner)
        p.jobs.delete(owner, top)  # its events, points and log record go by the cascade
        with p.jobs.sessions.begin() as s:
            assert s.execute(sa.text("SELECT count(*) FROM metric_points WHERE job_id = 45")).scalar() == 0
        done = finished(p, ALICE, "after-upgrade", epochs=1, template="llm-lora")
        assert done.id > top
        newest = p.templates.save(ALICE, "llama", {"epochs": 1}).id
        p.templates.delete(ALICE, newest)
        assert p.templates.save(ALICE, "mistral", {"epochs": 1}).id > newest
        # The triggers came back: running totals, final-metric rows and the search index follow the changes.
        totals_match_the_jobs(p.history, VIEWS)
        assert final_metric_rows(p) == final_metrics_of_the_jobs(p)
        assert any(j == done.id and n == "accuracy" for j, n, *_ in final_metric_rows(p))
        p.history.set_tags_note(ALICE, done.id, ["needle-after-upgrade"], "")
        assert [j.id for j in p.history.page(VERA, HistoryQuery(search="needle-after-upgrade"))] == [done.id]
        p.jobs.delete(ALICE, done.id)
        totals_match_the_jobs(p.history, VIEWS)
        assert final_metric_rows(p) == final_metrics_of_the_jobs(p)
