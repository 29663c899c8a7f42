"""The dashboard with a search typed in, and the REST list: newest matches first without reading every match,
counts that stop at a cap and say so. Checked against every job's text, on SQLite and PostgreSQL, with the
thresholds made small so a few hundred jobs take every path (rare term from the index, common term walked
newest first, a term in between whose older matches come from the index, a 1–2 character term)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services import job_queries
from services.models import JobStatus, StatusGroup
from services.store import search
from services.store.orm import Job
from services.store.seed import seed_jobs
from tests.test_pages import app  # noqa: F401 (the dashboard under AppTest, as the page tests open it)

TERMS = ["old-owner", "exp-000001", "exp-00002", "train_example", "zzqq", "ld", "e", "EXP-0000042"]


@pytest.fixture
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "COMMON_AFTER", 10)
    monkeypatch.setattr(search, "RARE_UP_TO", 250)
    monkeypatch.setattr(search, "WALK", 50)
    monkeypatch.setattr(search, "SHORT_WALK", 40)
    monkeypatch.setattr(job_queries, "SEARCH_COUNT_CAP", 30)


def every_job(portal) -> list[tuple[int, str, str, str]]:
    with portal.jobs.session() as s:
        return list(s.execute(select(Job.id, Job.search_text, Job.status_group, Job.owner)).all())


def expected(rows, term: str, group: StatusGroup | None, owner: str | None) -> list[int]:
    return sorted((i for i, text, g, o in rows if term.lower() in text and (group is None or g == group.value)
                   and (owner is None or o == owner)), reverse=True)


def test_search_listings_and_capped_counts_match_every_jobs_text(any_portal, small_thresholds):
    engine = any_portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 300, owner="old-owner", seed=1)  # older: their owner's name is a term between rare and common
    seed_jobs(engine, 100, owner="new-owner", seed=2)
    jobs, rows = any_portal.jobs, every_job(any_portal)
    for term in TERMS:
        short = len(term) < 3
        for owner in (None, "old-owner", "new-owner"):
            counts = jobs.counts(search=term, owner=owner)
            for g in StatusGroup:
                want = expected(rows, term, g, owner)
                got = counts[g]
                if not short:
                    assert (int(got), got.more) == (min(len(want), 30), len(want) > 30), (term, owner, g)
                    assert str(got) == (f"{len(want)}" if len(want) <= 30 else "30+")
                else:  # only the newest 40 of the section are read: at least what is counted, "+" when partial
                    assert int(got) <= len(want) and (got.more or int(got) == len(want)), (term, owner, g)
                for limit in (1, 7, 45):
                    page = jobs.list_group(g, limit, search=term, owner=owner)
                    ids = [j.id for j in page.jobs]
                    if page.searched_all:
                        assert ids == want[:limit] and page.has_more == (len(want) > limit), (term, owner, g)
                    else:
                        assert short and set(ids) <= set(want) and ids == sorted(ids, reverse=True)
            # The REST list reads as far as offset + limit, and finds every match (1–2 characters too).
            for offset, limit in ((0, 50), (3, 10), (220, 51)):
                got_ids = [j.id for j in jobs.list_jobs(limit=limit, offset=offset, search=term, owner=owner)]
                assert got_ids == expected(rows, term, None, owner)[offset:offset + limit], (term, owner, offset)


def test_a_short_search_says_it_looked_only_at_the_newest_jobs(any_portal, small_thresholds):
    engine = any_portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 60, owner="old-owner", status=JobStatus.SUCCEEDED, seed=1)
    seed_jobs(engine, 60, owner="new-owner", status=JobStatus.SUCCEEDED, seed=2)
    jobs = any_portal.jobs
    counts = jobs.counts(search="ld")  # only in the older owner's jobs, beyond the newest 40
    assert counts[StatusGroup.SUCCEEDED] == job_queries.Count(0, more=True)
    assert "newest 40 jobs of each section" in job_queries.search_count_note("ld", counts)
    assert not jobs.list_group(StatusGroup.SUCCEEDED, 5, search="ld").searched_all
    assert len(jobs.list_jobs(limit=100, search="ld")) == 60  # the API looks through every job


def test_the_dashboard_shows_a_capped_count_and_says_what_it_means(app, portal, user):  # noqa: F811
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 1003, owner=user.name, status=JobStatus.SUCCEEDED)
    seed_jobs(engine, 4, owner=user.name, status=JobStatus.FAILED, seed=1)
    at = app
    at.run()
    assert "✅ Completed (1,003)" in [s.value for s in at.subheader]  # no search: the exact running total
    at.text_input(key="dash_search").input("train_example").run()
    assert not at.exception
    heads = [s.value for s in at.subheader]
    assert "✅ Completed (1,000+)" in heads and "❌ Failed (4)" in heads
    assert any("counts up to 1,000 jobs per section" in c.value for c in at.caption)
    assert at.segmented_control(key="dash_filter").format_func("Completed") == "Completed (1,000+)"
    at.text_input(key="dash_search").input("exp-0000002").run()  # one Completed job, one Failed job
    heads = [s.value for s in at.subheader]
    assert "✅ Completed (1)" in heads and "❌ Failed (1)" in heads
    assert not any("counts up to" in c.value for c in at.caption)
