"""Budgets on SQLite and PostgreSQL with real local runs: a submit whose ceiling is past what the team has left is
refused with the sentence saying both (allowed with overdraft), a spent budget refuses every new job or, when it says
"wait", holds them in the queue until it is raised or the month turns, and the 80 % and
100 % alerts reach the user and the team's lead through the real outbox, once each."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from services import queues
from services.models import JobStatus, Role, User, ValidationProblem
from services.store.cost_tables import UsageTotal
from services.store.notification_tables import Notification
from services.usage import UsageService
from tests.conftest import portal_on, run_to_end, wait_until
from tests.test_costs import SLEEP

ADMIN = User("ada", Role.ADMIN, groups=("vision",))
RESEARCHER = User("rita", groups=("vision",))


@pytest.fixture
def p(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PORTAL_LOCAL_GPUS", "4")
    with portal_on(database_url, tmp_path) as portal:
        (portal.settings.workspace_dir / "sleep.py").write_text(SLEEP)
        yield portal


def budget(p, **values) -> dict:
    return UsageService.of(p.jobs).set_budget(ADMIN, {"scope": "team", "name": "vision", **values})


def submit(p, user: User, hours: float = 2, seconds: float = 0.2) -> int:
    return p.jobs.submit(user, {"name": "job", "script": "sleep.py", "gpus": 1, "max_runtime_hours": hours,
                                "extra_args": f"--seconds {seconds}"})


def test_a_submit_past_the_team_budget_is_refused_with_the_sentence_and_overdraft_lets_it_in(p):
    budget(p, unit="money", monthly_limit=5.0)  # 2 h × (1 GPU at $2.50 + the node's $0.40) = $5.80 at most
    with pytest.raises(ValidationProblem) as refused:
        submit(p, ADMIN)
    assert str(refused.value) == ("This job may cost up to $5.80 (2 h × 1 GPU); your team vision has $5.00 left this "
                                  "month: the job is refused, since it may cost more than is left.")
    note, why = UsageService.of(p.jobs).submit_note("local", ADMIN, "vision", 1, 1, 2)
    assert note == "This job may cost up to $5.80 (2 h × 1 GPU); your team vision has $5.00 left this month."
    assert why == str(refused.value)
    assert run_to_end(p, ADMIN, submit(p, ADMIN, hours=1)).status is JobStatus.SUCCEEDED  # $2.90 fits
    budget(p, unit="money", monthly_limit=5.0, overdraft=True)
    assert run_to_end(p, ADMIN, submit(p, ADMIN)).status is JobStatus.SUCCEEDED


def test_a_spent_budget_refuses_every_new_job_even_with_overdraft(p):
    budget(p, unit="gpu_hours", monthly_limit=0.0, overdraft=True, at_limit="refuse")
    with pytest.raises(ValidationProblem) as refused:
        submit(p, ADMIN, hours=0.1)
    assert str(refused.value).endswith("your team vision has 0.0 GPU-hours left this month: the budget is spent, so "
                                       "new jobs are refused until next month.")


def test_the_80_and_100_percent_alerts_reach_the_user_and_the_lead_once_each(p):
    usage = UsageService.of(p.jobs)
    with p.jobs.session() as s:
        from services.costs import set_price

        set_price(s, "ada", {"gpu_type": "local", "gpu_hour": 3600.0, "node_hour": 0.0, "effective_from": "2020-01"
                             "-01"})  # $1 a GPU-second
    p.jobs.teams.save(ADMIN, "vision", source="identity")
    p.jobs.teams.set_member(ADMIN, "vision", "lena", lead=True)
    budget(p, unit="money", monthly_limit=4.0, overdraft=True)
    job = submit(p, RESEARCHER, hours=1, seconds=60)

    def alerts() -> list[tuple[str, int]]:
        p.sync._accrued.clear()  # accrue on every tick here, not every 5 s
        p.sync.tick()
        with p.jobs.session() as s:
            return sorted((n.owner, n.payload["threshold"]) for n in s.scalars(
                select(Notification).where(Notification.event == "budget")))

    wait_until(lambda: alerts(), timeout=30, interval=0.05)
    assert alerts() == [("lena", 80), ("rita", 80)]  # at $3.20 of $4 (the next tick is 0.8 s away at most)
    wait_until(lambda: len(alerts()) == 4, timeout=30, interval=0.05)
    for _ in range(10):
        alerts()
    assert alerts() == [("lena", 80), ("lena", 100), ("rita", 80), ("rita", 100)]
    with p.jobs.session() as s:
        texts = {n.payload["text"] for n in s.scalars(select(Notification).where(Notification.owner == "rita"))}
    assert any(t.startswith("Team vision's budget for ") and "is 100 % spent" in t for t in texts)
    assert [b["name"] for b in usage.budgets(RESEARCHER)] == ["vision"]
    p.jobs.stop(RESEARCHER, job)
    run_to_end(p, RESEARCHER, job)
    assert len(alerts()) == 4


def test_running_jobs_keep_running_at_100_percent_unless_the_admin_chose_to_stop_them(p, monkeypatch):
    with p.jobs.session() as s:
        from services.costs import set_price

        set_price(s, "ada", {"gpu_type": "local", "gpu_hour": 3600.0, "node_hour": 0.0, "effective_from": "2020-01-01"})
    budget(p, unit="money", monthly_limit=1.0, overdraft=True)
    keeps = submit(p, RESEARCHER, hours=1, seconds=60)

    def tick() -> JobStatus:
        p.sync._accrued.clear()
        p.sync.tick()
        return p.jobs.get(RESEARCHER, keeps).status

    wait_until(lambda: (p.jobs.get(RESEARCHER, keeps).cost_total or 0) > 1.5 if tick() else False, timeout=30)
    assert tick() is JobStatus.RUNNING  # past 100 %, still running
    p.jobs.stop(RESEARCHER, keeps)
    run_to_end(p, RESEARCHER, keeps)

    monkeypatch.setattr(p.settings, "budget_stops_running", True)
    budget(p, unit="money", monthly_limit=p.jobs.get(RESEARCHER, keeps).cost_total + 1.0, overdraft=True)
    p.sync._accrued.clear()
    stopped = submit(p, RESEARCHER, hours=1, seconds=60)
    done = run_to_end(p, RESEARCHER, stopped, timeout=30)
    assert done.status is JobStatus.STOPPED and done.cost_total < 8.0  # at its first accrual past $1 (every 5 s)


def test_a_spent_budget_that_says_wait_holds_new_jobs_until_it_is_raised_or_the_month_turns(p):
    budget(p, unit="gpu_hours", monthly_limit=0.0, at_limit="wait")
    note, why = UsageService.of(p.jobs).submit_note("local", RESEARCHER, "vision", 1, 1, 2)
    assert why is None and note.endswith("0.0 GPU-hours left this month: the budget is spent, so the job will wait "
                                         "until it is raised or next month.")
    held = submit(p, RESEARCHER)
    month = datetime.now(UTC)
    sentence = (f"team vision's budget for {month:%B} is spent; it starts when an admin or lead raises it or next "
                "month")

    def blocker(job_id: int) -> str | None:
        for _ in range(3):
            p.sync.tick()
        job = p.jobs.get(RESEARCHER, job_id)
        place = queues.waiting_status(p.jobs, job)
        return place.blocker if job.status is JobStatus.QUEUED and place else None

    assert blocker(held) == sentence and p.jobs.get(RESEARCHER, held).reason == "Waiting: the budget is spent"
    other = User("olga", groups=("nlp",))  # another team's job is not held up by it
    assert run_to_end(p, other, submit(p, other)).status is JobStatus.SUCCEEDED
    assert blocker(held) == sentence
    budget(p, unit="gpu_hours", monthly_limit=1.0, at_limit="wait")  # raised: it starts
    done = run_to_end(p, RESEARCHER, held)
    assert done.status is JobStatus.SUCCEEDED and done.gpu_hours > 0

    budget(p, unit="gpu_hours", monthly_limit=done.gpu_hours / 2, at_limit="wait")  # spent again
    next_one = submit(p, RESEARCHER)
    assert blocker(next_one) == sentence
    with p.jobs.session() as s:  # the month turns: what was spent is last month's
        s.execute(update(UsageTotal).where(UsageTotal.month == f"{month:%Y-%m}").values(month="2000-01"))
    assert run_to_end(p, RESEARCHER, next_one).status is JobStatus.SUCCEEDED


def test_the_queues_page_says_why_a_budget_holds_a_job(monkeypatch, portal, user, workspace_script):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(portal.jobs.backend, "machine_gpus", 2)
    UsageService.of(portal.jobs).set_budget(user, {"scope": "user", "name": user.name, "unit": "money",
                                                   "monthly_limit": 0, "at_limit": "wait"})
    job = portal.jobs.submit(user, {"name": "held", "script": workspace_script("sleep.py", SLEEP), "gpus": 1,
                                    "extra_args": "--seconds 0.1"})
    portal.sync.tick()
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "portal_app.py"), default_timeout=30).run()
    at.switch_page("pages/queues.py").run()
    assert not at.exception
    sentence = (f"{user.name}'s budget for {datetime.now(UTC):%B} is spent; it starts when an admin raises it or "
                "next month")
    assert any(sentence in c.value for c in at.caption), [c.value for c in at.caption]
    assert portal.jobs.get(user, job).status is JobStatus.QUEUED
    portal.jobs.stop(user, job)
    run_to_end(portal, user, job)
