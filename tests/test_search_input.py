"""A search with control characters in it (a fuzzer found a NUL reaching SQLite's FTS5: a 500) matches nothing
in the services, and the API says why it refuses it."""

from __future__ import annotations

import httpx

from services.auth import local_user
from tests.conftest import create_token


def test_control_characters_in_a_search_match_nothing(any_portal):
    jobs = any_portal.jobs
    me = local_user(any_portal.settings)
    jobs.submit(me, {"name": "abc-run", "script": "train_example.py", "epochs": 1,
                     "extra_args": "--seconds-per-epoch 0"})
    assert len(jobs.list_jobs(limit=5, offset=0, search="abc", owner=me.name, group=None)) == 1
    for term in ("0" * 198 + "\x000", "abc\x00", "\x00", "a\tb\x1fc"):
        assert jobs.list_jobs(limit=5, offset=0, search=term, owner=None, group=None) == []
        assert sum(jobs.counts(search=term).values()) == 0


def test_the_api_refuses_a_search_with_a_control_character(server):
    token = create_token(server.data_dir, "alice")
    r = httpx.get(f"{server.url}/api/v1/jobs", params={"search": "abc\x00def"},
                  headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 400 and "control characters" in r.json()["error"]
