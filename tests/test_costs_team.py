"""The team a job's usage counts for, on SQLite and PostgreSQL with real local runs: an owner whose identity group is
no team (longer than a team's name may be) still has the job end and its usage counted, under no team."""

from __future__ import annotations

from sqlalchemy import select

from services.models import JobStatus, User
from services.store.cost_tables import JobUsage
from tests.conftest import run_to_end
from tests.test_costs import gpu_portal, submit  # noqa: F401 - the fixture

LONG_GROUP = "cn=ml-researchers,ou=" + "x" * 200  # an LDAP DN as some proxies pass it: 222 characters


def test_a_job_whose_owners_group_is_no_team_ends_and_counts_under_no_team(gpu_portal, monkeypatch) -> None:  # noqa: F811
    p = gpu_portal
    monkeypatch.setattr(p.settings, "team_groups", "team-.*")  # PORTAL_TEAM_GROUPS: only these groups are teams
    lena = User("lena", groups=(LONG_GROUP,))
    job_id = submit(p, lena, 0, 0.5, "long-group")
    done = run_to_end(p, lena, job_id, timeout=30)
    assert done.status is JobStatus.SUCCEEDED, done.reason
    with p.jobs.session() as s:
        assert set(s.scalars(select(JobUsage.team).where(JobUsage.job_id == job_id))) == {""}


def test_a_cluster_jobs_ceiling_is_priced_at_the_dearest_price_it_may_get(database_url, tmp_path) -> None:
    from services.costs import hourly_rate, set_price
    from tests.conftest import portal_on

    with portal_on(database_url, tmp_path) as p, p.jobs.session() as s:
        for gpu_type, hourly in (("gpu", 2.0), ("A100", 4.0), ("local", 9.0)):
            set_price(s, "ada", {"gpu_type": gpu_type, "gpu_hour": hourly, "node_hour": 0.5,
                                 "effective_from": "2020-01-01"})
        set_price(s, "ada", {"node": "dgx-7", "gpu_hour": 6.0, "node_hour": 0.5, "effective_from": "2099-01-01"})
        # Which node and GPU type it lands on is known only once it runs: A100's, not the default type's $2.
        assert hourly_rate(s, p.settings, "kubernetes", 2, 1) == 8.5
        assert hourly_rate(s, p.settings, "local", 2, 1) == 18.5
