"""The Queues page, the job page's status strip and the dashboard card of a waiting job, under AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.models import JobStatus, User
from tests.conftest import run_to_end, wait_until

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")
LOOP = "import time\nfor i in range(600):\n    print(f'Epoch {i+1}/600', flush=True)\n    time.sleep(0.1)\n"


@pytest.fixture
def queue(monkeypatch, portal, user, workspace_script):
    """On a 2-GPU machine: one running job of 2 GPUs, then a normal job of bob's and an urgent one waiting."""
    monkeypatch.setattr(portal.jobs.backend, "machine_gpus", 2)
    s = workspace_script("loop.py", LOOP)
    holder = portal.jobs.submit(user, {"name": "holder", "script": s, "gpus": 2})

    def running():
        portal.sync.tick()
        return portal.jobs.get(user, holder).status is JobStatus.RUNNING

    wait_until(running, timeout=20)
    bob = portal.jobs.submit(User("bob"), {"name": "bobs-run", "script": s, "gpus": 1})
    urgent = portal.jobs.submit(user, {"name": "deadline", "script": s, "gpus": 2, "priority": "urgent"})
    yield holder, urgent, bob
    for job_id in (holder, urgent, bob):
        portal.jobs.stop(user, job_id)
        run_to_end(portal, user, job_id)


def test_queues_page_lists_quota_usage_and_waiting_jobs_in_order(portal, user, queue):
    holder, urgent, bob = queue
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.switch_page("pages/queues.py").run()
    assert not at.exception
    assert at.title[0].value == "Queues" and at.subheader[0].value == "this machine"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"GPUs in use": "2 of 2", "Running": "1", "Waiting": "2"}
    lines = [m.value for m in at.markdown if m.value.startswith("**") or " · #" in m.value]
    # The urgent job first though submitted later; then bob's; then the running one (an admin sees every owner).
    assert lines == ["**1.**", f"{user.name} · #{urgent} · 2 GPUs · urgent", "**2.**", f"bob · #{bob} · 1 GPU · normal",
                     f"{user.name} · #{holder} · 2 GPUs"]
    links = [(e.proto.label, e.proto.page) for e in at.get("page_link")]
    assert [label for label, _ in links if label in ("deadline", "bobs-run", "holder")] == [
        "deadline", "bobs-run", "holder"]
    captions = [c.value for c in at.caption]
    assert any(f"2 of this machine's 2 GPUs are in use by #{holder}; this job needs 2" in c for c in captions)
    assert any(f"2 of this machine's 2 GPUs are in use by #{holder}; this job needs 1" in c for c in captions)
    assert sum("Estimated start: unknown" in c for c in captions) == 2  # no ETA yet, no earlier runs: no number


def test_a_waiting_jobs_page_and_card_say_where_it_stands(portal, queue):
    holder, _, bob = queue
    at = AppTest.from_file(APP, default_timeout=30).run()
    card = [c.value for c in at.caption if "in the queue" in c.value]
    assert card == [f"1st in the queue of this machine · 2 of this machine's 2 GPUs are in use by #{holder}; this job "
                    "needs 2 · Estimated start: unknown"]
    at.switch_page("pages/job.py")
    at.query_params["id"] = str(bob)
    at.run()
    assert not at.exception
    info = [i.value for i in at.info]
    assert (f"2nd in the queue of this machine · 2 of this machine's 2 GPUs are in use by #{holder}; this job needs "
            "1 · Estimated start: unknown") in info, info


def test_the_submit_form_offers_the_priorities_with_a_sentence_each(portal, user):
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.switch_page("pages/submit.py").run()
    radio = at.radio(key="f_priority")
    assert radio.options == ["low", "normal", "urgent"] and radio.value == "normal"
    at.text_input(key="f_name").input("rush")
    radio.set_value("urgent")
    at.button(key="submit").click().run()
    assert not at.exception
    (job,) = portal.jobs.list_jobs()
    assert job.request["priority"] == "urgent"
    run_to_end(portal, user, job.id)


def test_a_hidden_teams_waiting_job_is_another_users_job_to_a_non_member(portal, queue, monkeypatch):
    # Before: the Queues page named a hidden team's jobs, and linked them, for anyone who may see others' jobs.
    from services.models import Role
    from services.store.orm import Job

    _, _, bob = queue
    admin = User("root", Role.ADMIN)
    portal.jobs.teams.save(admin, "vision", everyone_visible=False)
    for member in ("bob", "eve"):
        portal.jobs.teams.set_member(admin, "vision", member)
    with portal.jobs.session() as s:
        s.get(Job, bob).team = "vision"
    who = {"user": User("carol")}
    monkeypatch.setattr("pages.common.current_user", lambda *a, **k: who["user"])

    def queue_lines() -> list[str]:
        at = AppTest.from_file(APP, default_timeout=30).run()
        at.switch_page("pages/queues.py").run()
        assert not at.exception
        return [m.value for m in at.markdown if " · #" in m.value or "another user" in m.value]

    carol_sees = "\n".join(queue_lines())
    assert "bob" not in carol_sees and f"another user's job · #{bob}" in carol_sees
    who["user"] = User("eve")
    assert any(f"bob · #{bob}" in line for line in queue_lines())
