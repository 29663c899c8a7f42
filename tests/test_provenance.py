"""Provenance: a job's page says which job it was cloned from or is a retry of, with a link to it; a parent that
is gone (or not the viewer's to see) is named without a link; the API's job JSON carries both."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from services.models import User
from services.portal import get_portal, reset_portal
from tests.conftest import PortalServer, create_token, run_to_end, wait_until

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")
QUICK = {"script": "train_example.py", "epochs": 1, "extra_args": "--seconds-per-epoch 0"}


def job_page(job_id: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.query_params["id"] = str(job_id)
    at.switch_page("pages/job.py").run()
    assert not at.exception
    return at


def provenance(at: AppTest) -> tuple[list[tuple[str, str]], list[str]]:
    """The page's links to other jobs (label, query) and its captions."""
    links = [(p.proto.label, p.proto.query_string) for p in at.get("page_link") if "from #" in p.proto.label
             or "of #" in p.proto.label]
    return links, [c.value for c in at.caption]


def clone_on_the_submit_page(job_id: int) -> int:
    """Clone as a user does: the job's values fill the Submit form, which is submitted as it is."""
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.query_params["clone"] = str(job_id)
    at.switch_page("pages/submit.py").run()
    at.button(key="submit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return int(at.query_params["id"][0] if isinstance(at.query_params["id"], list) else at.query_params["id"])


def test_retry_and_clones_name_their_direct_parent_with_a_link(portal, user):
    first = portal.jobs.submit(user, {"name": "base", **QUICK})
    run_to_end(portal, user, first)
    retried = portal.jobs.retry(user, first)
    cloned = clone_on_the_submit_page(first)
    run_to_end(portal, user, cloned)
    clone_of_clone = clone_on_the_submit_page(cloned)

    links, _ = provenance(job_page(retried))
    assert links == [(f"Retry of #{first} base", f"id={first}")]
    links, _ = provenance(job_page(cloned))
    assert links == [(f"Cloned from #{first} base", f"id={first}")]
    links, _ = provenance(job_page(clone_of_clone))  # its own parent, not the first job
    assert links == [(f"Cloned from #{cloned} base-clone", f"id={cloned}")]
    # The first job came from nowhere: nothing is said.
    links, captions = provenance(job_page(first))
    assert links == [] and not [c for c in captions if "#" in c]
    # What the parent kind is kept in is not a value the next clone submits again.
    assert "parent_kind" not in portal.jobs.clone_values(user, retried)
    # Nor is it shown as something the user submitted.
    at = job_page(retried)
    at.query_params["tab"] = "Config"
    at.run()
    (submitted, *_) = at.get("json")
    assert '"epochs"' in submitted.proto.body and "parent_kind" not in submitted.proto.body


def test_a_deleted_parent_is_named_without_a_link(portal, user):
    first = portal.jobs.submit(user, {"name": "gone", **QUICK})
    run_to_end(portal, user, first)
    retried = portal.jobs.retry(user, first)
    run_to_end(portal, user, retried)
    portal.jobs.delete(user, first)
    links, captions = provenance(job_page(retried))
    assert links == []
    assert f"Retry of #{first} (deleted)" in captions


@pytest.fixture
def private_portal(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PORTAL_SHOW_OTHERS_JOBS", "false")
    reset_portal()
    yield get_portal()
    reset_portal()


def test_a_parent_the_viewer_may_not_see_is_not_revealed(private_portal, monkeypatch):
    jobs = private_portal.jobs
    alice, bob = User("alice"), User("bob")
    hers = jobs.submit(alice, {"name": "hers", **QUICK})
    run_to_end(private_portal, alice, hers)
    # Cloned while others' jobs were visible; since then this portal shows researchers only their own.
    his = jobs.submit(bob, dict(QUICK, name="his"), parent_id=hers)
    run_to_end(private_portal, bob, his)
    monkeypatch.setattr("pages.common.current_user", lambda *a, **k: bob)
    links, captions = provenance(job_page(his))
    assert links == [] and f"Cloned from #{hers} (deleted)" in captions
    assert "hers" not in " ".join(captions)


def test_the_api_job_json_carries_parent_id_and_kind(tmp_path: Path):
    from tests.test_client import local_user_name

    srv = PortalServer(tmp_path / "portal-data").start()
    try:
        headers = {"Authorization": f"Bearer {create_token(srv.data_dir, local_user_name())}"}
        api = f"{srv.url}/api/v1"
        with httpx.Client(headers=headers, timeout=30) as http:
            first = http.post(f"{api}/jobs", json={"name": "api-base", **QUICK}).json()
            assert first["parent_id"] is None and first["parent_kind"] is None
            wait_until(lambda: http.get(f"{api}/jobs/{first['id']}/status").json()["finished"], interval=0.2)
            retry = http.post(f"{api}/jobs/{first['id']}/retry", json={}).json()
            clone = http.post(f"{api}/jobs/{first['id']}/clone", json={"epochs": 2}).json()
            assert (retry["parent_id"], retry["parent_kind"]) == (first["id"], "retry")
            assert (clone["parent_id"], clone["parent_kind"]) == (first["id"], "clone")
            listed = {j["id"]: j for j in http.get(f"{api}/jobs").json()["jobs"]}
            assert listed[clone["id"]]["parent_kind"] == "clone" and listed[retry["id"]]["parent_id"] == first["id"]
            # A job's "request" is what was submitted, so a notebook can submit it again (with changes).
            assert "parent_kind" not in clone["request"] and "parent_kind" not in retry["request"]
            again = http.post(f"{api}/jobs", json={**clone["request"], "name": "api-again", "epochs": 3})
            assert again.status_code == 201, again.text
    finally:
        srv.stop()
