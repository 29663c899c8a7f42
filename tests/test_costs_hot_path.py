"""The sync loop's accrual on a busy portal (real local jobs, SQLite and PostgreSQL, every statement counted): one
read of the price book per tick whatever the number of running jobs, and a budget past 100 % whose alerts were all
said is not asked about its recipients' channels again at each accrual."""

from __future__ import annotations

from sqlalchemy import event

from services import sync as sync_module
from tests.conftest import wait_until
from tests.test_budgets import ADMIN, budget, p  # noqa: F401 - the fixture


def statements(p, run) -> list[str]:  # noqa: F811
    seen: list[str] = []
    engine = p.jobs.sessions.kw["bind"]

    def count(conn, cursor, statement, *args) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return seen


def test_a_tick_reads_the_prices_once_and_said_alerts_are_not_looked_into_again(p, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setattr(sync_module, "ACCRUE_EVERY_SECONDS", 0.0)  # every tick accrues every running job
    budget(p, unit="money", monthly_limit=0.0001, overdraft=True, at_limit="wait")
    ids = [p.jobs.submit(ADMIN, {"name": f"j{i}", "script": "sleep.py", "gpus": 1, "max_runtime_hours": 1,
                                 "extra_args": "--seconds 30"}) for i in range(3)]
    try:
        wait_until(lambda: (p.sync.tick(), all(p.jobs.get(ADMIN, i).status.value == "Running" for i in ids))[1],
                   timeout=30)
        p.sync.tick()  # the alerts said
        seen = statements(p, p.sync.tick)
        assert sum(1 for q in seen if "FROM prices" in q) <= 1, "the price book was read per job"
        assert not any("FROM notification_channels" in q for q in seen), "said alerts were looked into again"
    finally:
        for i in ids:
            p.jobs.stop(ADMIN, i)
