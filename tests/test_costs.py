"""What a job costs, on SQLite and PostgreSQL with real local runs: its run seconds × GPUs × the price in effect (its
time in the queue costs nothing), live while it runs, frozen at its end (a later price leaves it), and an interval
cut where a month begins or a price takes effect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.costs import Interval, load_book, price_intervals, set_price
from services.models import JobStatus, User
from services.store.cost_tables import JobUsage
from services.store.orm import Job
from tests.conftest import portal_on, run_to_end, wait_until

SLEEP = "import time, sys\ntime.sleep(float(sys.argv[sys.argv.index('--seconds') + 1]))\nprint('done', flush=True)\n"


@pytest.fixture
def gpu_portal(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PORTAL_LOCAL_GPUS", "4")  # the local queue shares 4 GPUs (this machine has none)
    with portal_on(database_url, tmp_path) as p:
        (p.settings.workspace_dir / "sleep.py").write_text(SLEEP)
        yield p


def admin() -> User:
    from services.models import Role

    return User("ada", Role.ADMIN, groups=("vision",))


def price(p, **values) -> None:
    with p.jobs.session() as s:
        set_price(s, "ada", values)


def submit(p, user, gpus: int, seconds: float, name: str = "job") -> int:
    return p.jobs.submit(user, {"name": name, "script": "sleep.py", "gpus": gpus, "extra_args": f"--seconds {seconds}"})


def test_cost_is_run_seconds_times_gpus_times_price_not_the_wait_in_the_queue(gpu_portal):
    p, me = gpu_portal, admin()
    price(p, gpu_type="local", gpu_hour=3600.0, node_hour=0.0, effective_from="2020-01-01")  # $1 a GPU-second
    first = submit(p, me, 4, 2.0, "takes-every-gpu")
    waits = submit(p, me, 2, 1.0, "waits-for-them")
    wait_until(lambda: (p.sync.tick(), p.jobs.get(me, first).status)[1] is JobStatus.RUNNING, timeout=20)
    assert p.jobs.get(me, waits).status is JobStatus.QUEUED
    done = run_to_end(p, me, waits)
    assert done.status is JobStatus.SUCCEEDED, done.reason
    ran = (done.finished_at - done.started_at).total_seconds()
    assert (done.started_at - done.created_at).total_seconds() > 1.0  # it waited in the queue
    assert done.cost_total == pytest.approx(ran * 2, abs=0.01)
    assert done.gpu_hours == pytest.approx(ran * 2 / 3600, abs=1e-4)
    assert done.cost(datetime.now(UTC)) == round(ran * 2, 2)


def test_a_running_job_shows_its_cost_so_far(gpu_portal):
    p, me = gpu_portal, admin()
    price(p, gpu_type="local", gpu_hour=3600.0, node_hour=0.0, effective_from="2020-01-01")
    job_id = submit(p, me, 1, 30.0)
    wait_until(lambda: (p.sync.tick(), p.jobs.get(me, job_id).status)[1] is JobStatus.RUNNING, timeout=20)
    p.sync._accrued.clear()  # the next tick accrues at once rather than in 5 s
    wait_until(lambda: (p.sync.tick(), (p.jobs.get(me, job_id).cost(datetime.now(UTC)) or 0) > 1.0)[1], timeout=20)
    running = p.jobs.get(me, job_id)
    assert running.is_active and running.cost_total <= 30.0
    p.jobs.stop(me, job_id)
    run_to_end(p, me, job_id)


def test_a_price_change_after_a_job_ended_leaves_its_cost(gpu_portal):
    p, me = gpu_portal, admin()
    price(p, gpu_type="local", gpu_hour=3600.0, node_hour=0.0, effective_from="2020-01-01")
    done = run_to_end(p, me, submit(p, me, 1, 0.5))
    before = done.cost_total
    assert before and before > 0.4
    # Ten times the price, even dated back to before the job ran: a finished job's cost is frozen.
    price(p, gpu_type="local", gpu_hour=36000.0, node_hour=0.0, effective_from="2021-01-01")
    for _ in range(3):
        p.sync.tick()
    assert p.jobs.get(me, done.id).cost_total == before
    with p.jobs.session() as s:
        assert s.get(Job, done.id).cost == before
        rows = s.query(JobUsage).filter(JobUsage.job_id == done.id).all()
        assert [r.final for r in rows] == [True] and rows[0].cost == pytest.approx(before, abs=1e-3)
    later = run_to_end(p, me, submit(p, me, 1, 0.5))
    ran = (later.finished_at - later.started_at).total_seconds()
    assert later.cost_total == pytest.approx(ran * 10, abs=0.05)  # the new price for the new job


def test_an_interval_is_priced_by_month_and_by_the_price_in_effect(database_url, tmp_path):
    with portal_on(database_url, tmp_path) as p, p.jobs.session() as s:
        set_price(s, "ada", {"gpu_type": "a100", "gpu_hour": 2.0, "node_hour": 0.0, "effective_from": "2026-01-01"})
        set_price(s, "ada", {"gpu_type": "a100", "gpu_hour": 4.0, "node_hour": 0.0, "effective_from": "2026-03-15"})
        set_price(s, "ada", {"node": "gpu-7", "gpu_hour": 10.0, "node_hour": 1.0, "effective_from": "2026-01-01"})
        book = load_book(s, p.settings)
    t0 = datetime(2026, 2, 28, 22, tzinfo=UTC)  # 2 h in February, 2 h in March
    two_nodes = [Interval(t0, t0 + timedelta(hours=4), 4), Interval(t0, t0 + timedelta(hours=4), 4)]
    got = price_intervals(book, two_nodes, "a100")
    assert got == {("2026-02", "a100"): (2 * 2 * 3600 * 4.0, 2 * 2 * 4 * 2.0),
                   ("2026-03", "a100"): (2 * 2 * 3600 * 4.0, 2 * 2 * 4 * 2.0)}
    mid = datetime(2026, 3, 15, tzinfo=UTC) - timedelta(hours=1)  # 1 h at $2, 1 h at $4 a GPU-hour
    assert price_intervals(book, [Interval(mid, mid + timedelta(hours=2), 1)], "a100") == {
        ("2026-03", "a100"): (7200.0, 6.0)}
    # A node's own price wins over its GPU type's.
    assert price_intervals(book, [Interval(mid, mid + timedelta(hours=1), 2, node="gpu-7")], "a100") == {
        ("2026-03", "a100"): (7200.0, 21.0)}


def test_jobs_that_ended_before_the_upgrade_are_counted_as_usage(gpu_portal):
    from alembic import command

    from services.store.db import alembic_config, migrate
    from services.usage import UsageService, parse_query

    p, me = gpu_portal, admin()
    done = run_to_end(p, me, submit(p, me, 1, 0.3))
    engine = p.jobs.sessions.kw["bind"]
    command.downgrade(alembic_config(engine), "0024")  # a store from before costs were tracked
    migrate(engine)
    month = done.started_at.strftime("%Y-%m")
    rows = UsageService.of(p.jobs).rows(me, parse_query(month, month, "user,team,gpu_type"))
    assert rows == [{"user": "ada", "team": "vision", "gpu_type": "local", "jobs": 1,
                     "gpu_hours": pytest.approx(done.gpu_hours, abs=1e-4), "cost": pytest.approx(done.cost_total)}]
