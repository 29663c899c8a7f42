"""The store on SQLite and on PostgreSQL alike: each test runs once per database (fixture database_url)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text

from services.auth import local_user
from services.models import Conflict, JobStatus, NotFound, StatusGroup, User
from services.store.db import alembic_config, include_object, migrate
from services.store.orm import Base, MetricPoint, SeriesCache
from tests.conftest import run_to_end

EXAMPLE = "train_example.py"


@pytest.fixture
def me(any_portal):
    return local_user(any_portal.settings)


@pytest.fixture
def script_file(any_portal):
    """Write a script into the workspace of any_portal; returns its workspace path."""

    def write(name: str, body: str) -> str:
        (any_portal.settings.workspace_dir / name).write_text(body)
        return name

    return write


def engine_of(portal):
    return portal.jobs.sessions.kw["bind"]


def finished(portal, user, name, script=EXAMPLE, **values):
    """Submit a job and drive the sync loop until it has ended; returns its view."""
    data = {"name": name, "script": script, **values}
    if script == EXAMPLE:
        data.setdefault("extra_args", "--seconds-per-epoch 0")
    return run_to_end(portal, user, portal.jobs.submit(user, data))


# The parameters' expression indexes are made by migration 0011 alone (include_object leaves them out).
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_migrations_build_exactly_the_orm_schema(any_portal):
    engine = engine_of(any_portal)  # build_portal has migrated it once
    migrate(engine)  # a second start-up is a no-op
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object})
        diff = compare_metadata(context, Base.metadata)
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert diff == [], f"ORM and migrations differ on {engine.dialect.name}; add an Alembic revision: {diff}"
    assert versions == [ScriptDirectory.from_config(alembic_config(engine)).get_current_head()]
    tables = {t for t in inspect(engine).get_table_names() if include_object(None, t, "table", True, None)}
    assert set(Base.metadata.tables) | {"alembic_version"} == tables


def test_a_job_runs_to_the_end_shows_its_charts_and_is_deleted(any_portal, me):
    job = finished(any_portal, me, "lifecycle", epochs=2)
    assert job.status is JobStatus.SUCCEEDED, job.reason
    assert (job.epoch, job.total_epochs, job.progress, job.exit_code) == (2, 2, 1.0, 0)
    assert set(job.final_metrics) >= {"loss", "accuracy"}
    series = any_portal.jobs.metric_series(job.id)
    assert series["loss"].axis == "epoch" and list(series["loss"].x) == [1.0, 2.0]
    statuses = [e[1] for e in any_portal.jobs.events(job.id)]
    assert statuses[0] == "Submitting" and statuses[-1] == "Succeeded"

    any_portal.jobs.delete(me, job.id)
    with pytest.raises(NotFound):
        any_portal.jobs.get(me, job.id)
    assert any_portal.jobs.list_jobs() == [] and any_portal.jobs.metric_series(job.id) == {}
    with any_portal.jobs.session() as s:
        assert s.scalar(select(func.count()).select_from(MetricPoint)) == 0


def test_api_tokens_authenticate_until_revoked(any_portal):
    alice = User(name="alice", groups=("ml-team",))
    view, secret = any_portal.tokens.create(alice, "laptop notebook")
    who = any_portal.tokens.authenticate(secret)
    # A token acts by its owner's name only: groups it was made with would outlive a change of membership.
    assert who is not None and (who.name, who.groups) == ("alice", ())
    assert any_portal.tokens.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    [listed] = any_portal.tokens.list(alice)
    assert (listed.name, listed.prefix, listed.active) == ("laptop notebook", secret[:12], True)
    assert listed.last_used_at is not None and listed.last_used_at >= view.created_at

    any_portal.tokens.revoke(alice, view.id)
    assert any_portal.tokens.authenticate(secret) is None
    assert not any_portal.tokens.list(alice)[0].active
    with pytest.raises(NotFound):
        any_portal.tokens.revoke(User(name="bob"), view.id)


def test_templates_are_saved_updated_shared_and_deleted(any_portal):
    alice, bob = User(name="alice"), User(name="bob")
    saved = any_portal.templates.save(alice, "resnet baseline", {"script": "train_example.py", "epochs": 5,
                                                                 "learning_rate": 0.01})
    updated = any_portal.templates.save(alice, "resnet baseline", {"script": "train_example.py", "epochs": 7})
    assert updated.id == saved.id and updated.values == {"script": "train_example.py", "epochs": 7}
    assert any_portal.templates.get_by_name("resnet baseline").values["epochs"] == 7
    with pytest.raises(Conflict):
        any_portal.templates.save(bob, "resnet baseline", {"epochs": 1})
    any_portal.templates.save(bob, "bert", {"gpus": 0})
    assert [t.name for t in any_portal.templates.list()] == ["bert", "resnet baseline"]

    any_portal.templates.delete(alice, saved.id)
    with pytest.raises(NotFound):
        any_portal.templates.get_by_name("resnet baseline")


def test_chart_cache_is_served_then_refreshed_with_new_points(any_portal, me, script_file):
    script = script_file("steps.py", "for i in range(1, 41):\n    print(f'step={i} loss={1 / i:.4f}')\n")
    job = finished(any_portal, me, "chart", script=script)
    first = any_portal.jobs.metric_series(job.id)["loss"]
    again = any_portal.jobs.metric_series(job.id)["loss"]  # now from the cache
    assert first.axis == again.axis == "step" and list(again.x) == list(first.x) == list(range(1, 41))
    assert list(again.y) == pytest.approx([1 / i for i in range(1, 41)], abs=1e-4)

    # New points arrive the way the sync loop writes them; the background refresh rebuilds the chart.
    with any_portal.jobs.session() as s:
        s.add(MetricPoint(job_id=job.id, name="loss", step=41, epoch=None, value=0.01, ts=time.time(), rank=None))
        s.execute(SeriesCache.__table__.update().where(SeriesCache.job_id == job.id).values(dirty=True,
                                                                                               updated_at=0.0))
    assert any_portal.jobs.refresh_series(min_age_seconds=0) == 1
    assert any_portal.jobs.refresh_series(min_age_seconds=0) == 0  # nothing dirty any more
    refreshed = any_portal.jobs.metric_series(job.id)["loss"]
    assert refreshed.x[-1] == 41 and refreshed.y[-1] == pytest.approx(0.01)


def test_gpu_samples_drive_the_card_and_the_chart(any_portal, me, script_file):
    job = finished(any_portal, me, "gpu", script=script_file("q.py", "print('loss=0.5')\n"))
    t0 = (job.started_at or job.created_at).timestamp()
    any_portal.jobs.record_gpu({job.id: (85.0, 40_960.0)}, t0 + 10, idle_percent=10)
    any_portal.jobs.record_gpu({job.id: (3.0, 1024.0)}, t0 + 70, idle_percent=10)
    any_portal.jobs.record_gpu({job.id: (2.0, None)}, t0 + 130, idle_percent=10)
    card = any_portal.jobs.get(me, job.id)
    assert (card.gpu_util, card.gpu_memory_mib, card.gpu_idle_since) == (2.0, None, t0 + 70)
    series = any_portal.jobs.gpu_series(job.id)
    util, memory = series["GPU utilisation (%)"], series["GPU memory (MiB)"]
    assert util.axis == "seconds" and list(util.x) == pytest.approx([10, 70, 130], abs=1e-3)
    assert list(util.y) == [85.0, 3.0, 2.0] and list(memory.y)[:2] == [40_960.0, 1024.0]


def test_compare_series_puts_runs_on_one_axis(any_portal, me):
    short, long = finished(any_portal, me, "short", epochs=2), finished(any_portal, me, "long", epochs=3)
    jobs = any_portal.jobs.compare(me, [long.id, short.id, 999])
    assert [j.id for j in jobs] == [long.id, short.id]
    by_epoch = any_portal.jobs.compare_series(jobs)
    assert set(by_epoch) >= {"loss", "accuracy"} and not set(by_epoch) & {"epoch", "step"}
    assert list(by_epoch["loss"][short.id].x) == [1.0, 2.0]
    assert list(by_epoch["loss"][long.id].x) == [1.0, 2.0, 3.0]
    by_time = any_portal.jobs.compare_series(jobs, by="time")
    assert by_time["loss"][long.id].axis == "seconds" and min(by_time["loss"][long.id].x) >= -1


def test_dashboard_filters_and_counts(any_portal, script_file):
    alice, bob = User(name="alice"), User(name="bob")
    ok, ok_1 = script_file("ok.py", "print('loss=1')\n"), script_file("ok_1.py", "print('loss=1')\n")
    a1 = finished(any_portal, alice, "resnet-a", script=ok_1)
    finished(any_portal, bob, "resnet-b", script=ok)
    a2 = finished(any_portal, alice, "bert", script=script_file("bad.py", "raise SystemExit(3)\n"))
    jobs = any_portal.jobs
    assert [j.name for j in jobs.list_jobs(search="RESNET")] == ["resnet-b", "resnet-a"]
    assert [j.name for j in jobs.list_jobs(search="ok_")] == ["resnet-a"]  # "_" is a character, not a wildcard
    assert jobs.list_jobs(search="%") == []
    assert [j.id for j in jobs.list_jobs(owner="alice")] == [a2.id, a1.id]
    assert [j.id for j in jobs.list_jobs(group=StatusGroup.FAILED)] == [a2.id]
    assert [j.id for j in jobs.list_jobs(limit=1, offset=1, owner="alice")] == [a1.id]
    assert jobs.counts() == {StatusGroup.ACTIVE: 0, StatusGroup.SUCCEEDED: 2, StatusGroup.FAILED: 1,
                             StatusGroup.STOPPED: 0}
    assert jobs.counts(search="resnet", owner="alice") == {StatusGroup.ACTIVE: 0, StatusGroup.SUCCEEDED: 1,
                                                           StatusGroup.FAILED: 0, StatusGroup.STOPPED: 0}
    page = jobs.list_group(StatusGroup.SUCCEEDED, limit=1)
    assert page.has_more and [j.name for j in page.jobs] == ["resnet-b"]
    # Without a search the counts come from the running totals: they follow a delete like the jobs do.
    assert jobs.counts(owner="alice") == {StatusGroup.ACTIVE: 0, StatusGroup.SUCCEEDED: 1, StatusGroup.FAILED: 1,
                                          StatusGroup.STOPPED: 0}
    jobs.delete(alice, a1.id)
    assert jobs.counts(owner="alice")[StatusGroup.SUCCEEDED] == 0 and jobs.counts()[StatusGroup.SUCCEEDED] == 1


def test_times_are_utc_aware_and_keep_their_instant(any_portal, me, script_file):
    before = datetime.now(UTC)
    job = finished(any_portal, me, "tz", script=script_file("q.py", "print('loss=0.5')\n"))
    assert job.created_at.tzinfo is not None and job.created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= job.created_at <= job.finished_at <= datetime.now(UTC)
    assert all(ts.utcoffset() == timedelta(0) for ts, _, _ in any_portal.jobs.events(job.id))
    # A time in another zone is stored as the same instant and read back in UTC.
    berlin = datetime(2025, 7, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    any_portal.jobs.mark(job.id, started_at=berlin)
    started = any_portal.jobs.get(me, job.id).started_at
    assert started == berlin and started.tzinfo is not None and started.hour == 12 and started.microsecond == 123456


def test_diverged_losses_huge_steps_and_odd_names_never_stall_the_sync_loop(any_portal, me, script_file):
    # What broke the PostgreSQL store: NaN/inf in JSON, steps beyond 32 bits, a NUL in a protocol key.
    script = script_file("odd.py", (
        "print('step=1 loss=0.5')\n"
        "print('step=3000000000 loss=0.25 grad_norm: inf')\n"
        "print('##portal {\"lo\\\\u0000ss\": 0.1, \"acc\": 0.9}')\n"
        "print('Epoch 2/2 loss: nan')\n"))
    job = finished(any_portal, me, "odd", script=script)
    assert job.status is JobStatus.SUCCEEDED and (job.epoch, job.total_epochs) == (2, 2)
    import math

    assert math.isnan(job.final_metrics["loss"]) and math.isinf(job.latest_metrics["grad_norm"])
    assert job.final_metrics["acc"] == 0.9 and not [k for k in job.final_metrics if "\x00" in k]
    series = any_portal.jobs.metric_series(job.id)["loss"]
    assert list(series.x) == [1, 3_000_000_000] and list(series.y) == [0.5, 0.25]


def test_text_search_is_served_by_an_index_and_follows_changes(any_portal, me):
    from services.history import HistoryQuery
    from services.store.search import matches

    engine = engine_of(any_portal)
    from services.store.seed import seed_jobs

    seed_jobs(engine, 50, owner="carol", status=JobStatus.SUCCEEDED)
    hit = any_portal.history.page(me, HistoryQuery(search="exp-0000042"))
    assert [j.name for j in hit] == ["exp-0000042"]
    any_portal.history.set_tags_note(User("carol"), hit[0].id, ["needle-tag"], "")
    assert [j.id for j in any_portal.history.page(me, HistoryQuery(search="needle-tag"))] == [hit[0].id]
    any_portal.jobs.delete(User("carol"), hit[0].id)
    assert any_portal.history.page(me, HistoryQuery(search="needle-tag")) == []
    with engine.connect() as conn:
        stmt = select(func.count()).select_from(MetricPoint.__table__.metadata.tables["jobs"]).where(
            matches(engine.dialect.name, "exp-00000"))
        sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
        if engine.dialect.name == "sqlite":
            plan = " ".join(str(r) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            assert "VIRTUAL TABLE INDEX" in plan, plan
        else:
            conn.execute(text("SET enable_seqscan = off"))
            plan = " ".join(str(r) for r in conn.execute(text(f"EXPLAIN {sql}")))
            assert "ix_jobs_search_trgm" in plan, plan


def test_a_bulk_load_builds_every_index_again(any_portal):
    """Seeding a large history drops the jobs' secondary indexes and rebuilds them from the catalog's own
    definitions: afterwards the same indexes exist (expression indexes included) and the rows are there."""
    from services.store.seed import indexes_rebuilt_after, seed_jobs

    engine = engine_of(any_portal)

    def index_names() -> set[str]:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                return set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index' "
                                                "AND tbl_name = 'jobs'").scalars())
            return set(conn.exec_driver_sql("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'").scalars())

    before = index_names()
    assert {"ix_jobs_param_learning_rate", "ix_jobs_by_final_loss", "ix_jobs_owner_group_id"} <= before
    with indexes_rebuilt_after(engine, "jobs"):
        assert "ix_jobs_by_final_loss" not in index_names()
        seed_jobs(engine, 300, owner="bulk", varied=True)
    assert index_names() == before
    # A bulk seed (triggers skipped where the database allows it) still leaves the running totals right.
    from services.store import seed

    seed.REBUILD_INDEXES_FROM, old = 100, seed.REBUILD_INDEXES_FROM
    try:
        seed_jobs(engine, 150, owner="bulk", varied=True, seed=9)
    finally:
        seed.REBUILD_INDEXES_FROM = old
    assert index_names() == before
    from services.history import HistoryQuery

    assert any_portal.history.summary(User("bulk"), HistoryQuery(owner="bulk")).jobs == 450
    assert any_portal.history._summary_of_jobs(User("bulk"), HistoryQuery(owner="bulk", search="bulk")).jobs == 450
