"""Usage sums on SQLite and PostgreSQL from real local runs: by user, team and month they equal the jobs' own
costs, each user sees their own and their teams' (admins everything), and the CSV says the same."""

from __future__ import annotations

import csv
import io

import pytest

from services.costs import month_of
from services.models import Role, User, ValidationProblem
from services.store.cost_tables import JobUsage, UsageTotal
from services.store.orm import utcnow
from services.usage import UsageService, parse_query
from tests.conftest import portal_on, run_to_end
from tests.test_costs import SLEEP

ADMIN = User("ada", Role.ADMIN)
RITA, BOB, OLGA = User("rita", groups=("vision",)), User("bob", groups=("vision",)), User("olga", groups=("audio",))


@pytest.fixture
def ran(database_url, tmp_path, monkeypatch):
    """Three users' finished jobs (rita twice), and one of rita's from January 2025 as the usage table keeps it."""
    monkeypatch.setenv("PORTAL_LOCAL_GPUS", "4")
    with portal_on(database_url, tmp_path) as p:
        (p.settings.workspace_dir / "sleep.py").write_text(SLEEP)
        jobs = {}
        for user, gpus in ((RITA, 1), (RITA, 2), (BOB, 1), (OLGA, 3)):
            job_id = p.jobs.submit(user, {"name": "run", "script": "sleep.py", "gpus": gpus,
                                          "extra_args": "--seconds 0.3"})
            jobs.setdefault(user.name, []).append(run_to_end(p, user, job_id))
        with p.jobs.session() as s:
            s.add(JobUsage(job_id=10**9, month="2025-01", gpu_type="local", owner="rita", team="vision",
                           gpu_seconds=7200.0, cost=5.0, final=True))
            s.add(UsageTotal(month="2025-01", gpu_type="local", owner="rita", team="vision", jobs=1,
                             gpu_seconds=7200.0, cost=5.0))
        yield p, jobs


def q(by: str, start: str = "2025-01", end: str | None = None):
    return parse_query(start, end or month_of(utcnow()), by)


def test_usage_by_user_team_and_month_equals_the_jobs_costs(ran):
    p, jobs = ran
    usage = UsageService.of(p.jobs)
    now = month_of(utcnow())
    cost = {u: sum(j.cost_total for j in js) for u, js in jobs.items()}
    hours = {u: sum(j.gpu_hours for j in js) for u, js in jobs.items()}
    assert all(c > 0 for c in cost.values())
    by_user = {r["user"]: r for r in usage.rows(ADMIN, parse_query(now, now, "user"))}
    assert {u: (r["jobs"], r["cost"]) for u, r in by_user.items()} == {
        u: (len(jobs[u]), pytest.approx(cost[u], abs=1e-3)) for u in jobs}
    assert {u: r["gpu_hours"] for u, r in by_user.items()} == {u: pytest.approx(hours[u], abs=1e-3) for u in jobs}
    by_team = {r["team"]: r["cost"] for r in usage.rows(ADMIN, parse_query(now, now, "team"))}
    assert by_team == {"vision": pytest.approx(cost["rita"] + cost["bob"], abs=1e-3),
                       "audio": pytest.approx(cost["olga"], abs=1e-3)}
    by_month = {r["month"]: r["cost"] for r in usage.rows(ADMIN, q("month"))}
    assert by_month == {"2025-01": 5.0, now: pytest.approx(sum(cost.values()), abs=1e-3)}
    # Rita sees her team's (bob's too) but not olga's; olga only her own.
    assert {(r["user"], r["team"]) for r in usage.rows(RITA, q("user,team"))} == {("rita", "vision"),
                                                                                   ("bob", "vision")}
    assert [r["user"] for r in usage.rows(OLGA, q("user"))] == ["olga"]
    table = list(csv.DictReader(io.StringIO(usage.csv(RITA, q("user,month")))))
    assert {(r["user"], r["month"]) for r in table} == {("rita", "2025-01"), ("rita", now), ("bob", now)}
    assert sum(float(r["cost"]) for r in table) == pytest.approx(5.0 + cost["rita"] + cost["bob"], abs=1e-3)


def test_a_bad_usage_query_says_which_value_is_wrong():
    with pytest.raises(ValidationProblem) as bad:
        parse_query("2026-13", "2026-12", "user,project")
    assert bad.value.problems == {"from": "a month like 2026-12 (or a date like 2026-12-01)",
                                  "by": "'project' is not one of user, team, month, gpu_type"}
    with pytest.raises(ValidationProblem, match="the first month comes after the last"):
        parse_query("2026-12", "2026-01", "month")
