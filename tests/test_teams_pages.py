"""Teams in the pages under Streamlit's AppTest: "My team" on the dashboard and History, a teammate's job cloned,
a hidden team's job absent for others, a lead's Stop, the Team select of the Submit form and the Teams page."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.models import JobStatus, Role, User
from services.store.orm import Job
from services.store.seed import seed_jobs

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")
ADMIN = User("root", Role.ADMIN)


@pytest.fixture
def as_user(portal, monkeypatch):
    """Sign in as a given user (the page's identity, as the proxy or OIDC would give it)."""
    who = {"user": ADMIN}
    monkeypatch.setattr("pages.common.current_user", lambda *a, **k: who["user"])

    def sign_in(user: User) -> AppTest:
        who["user"] = user
        at = AppTest.from_file(APP, default_timeout=30)
        at.run()
        assert not at.exception
        return at

    return sign_in


@pytest.fixture
def vision(portal):
    """A hidden team: alice leads it, bob and eve are members; bob has a running and a finished job in it."""
    teams = portal.jobs.teams
    teams.save(ADMIN, "vision", everyone_visible=False)
    teams.set_member(ADMIN, "vision", "alice", lead=True)
    for member in ("bob", "eve"):
        teams.set_member(ADMIN, "vision", member)
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 1, owner="bob", status=JobStatus.SUCCEEDED)
    seed_jobs(engine, 1, owner="bob", status=JobStatus.RUNNING, seed=1)
    with portal.jobs.session() as s:
        for job in s.query(Job):
            job.team = "vision"
            job.request = dict(job.request) | {"team": "vision", "script": "train_example.py"}
    return {j.status: j.id for j in portal.jobs.list_jobs(owner="bob")}


def names(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in [*at.markdown, *at.caption, *at.subheader, *at.title, *at.error, *at.info])


def test_a_member_sees_a_teammates_job_under_my_team_and_clones_it(as_user, vision):
    done = vision[JobStatus.SUCCEEDED]
    at = as_user(User("eve"))
    assert "My experiments" in names(at) and f"#{done}" not in names(at)
    at.toggle(key="dash_team").set_value(True).run()
    assert "My team's experiments" in names(at) and f"#{done} · bob" in names(at)
    keys = {b.key for b in at.button}
    assert f"SUCCEEDED-{done}-clone" in keys and f"ACTIVE-{vision[JobStatus.RUNNING]}-stop" not in keys
    at.button(key=f"SUCCEEDED-{done}-clone").click().run()
    at.run()  # the switch to the Submit page happens on the rerun
    assert at.title[0].value == "Submit training job"
    assert at.selectbox(key="f_team").value == "vision" and at.selectbox(key="f_team").options == ["vision"]
    assert at.text_input(key="f_name").value.endswith("-clone")


def test_a_lead_has_stop_on_a_members_running_card(as_user, vision):
    at = as_user(User("alice"))
    at.toggle(key="dash_team").set_value(True).run()
    assert f"ACTIVE-{vision[JobStatus.RUNNING]}-stop" in {b.key for b in at.button}


def test_a_hidden_teams_job_is_absent_for_a_non_member(as_user, vision):
    done = vision[JobStatus.SUCCEEDED]
    at = as_user(User("carol"))
    assert not [t for t in at.toggle if t.key == "dash_team"]  # carol is in no team
    at.toggle(key="dash_everyone").set_value(True).run()
    assert f"#{done}" not in names(at) and "No jobs" in names(at)
    at.switch_page("pages/job.py")
    at.query_params["id"] = str(done)
    at.run()
    assert f"No job with id '{done}'." in names(at)
    at.switch_page("pages/history.py").run()
    assert "bob" not in names(at) and not at.exception
    # Under "My team" in the History, a member sees both of bob's jobs.
    at = as_user(User("eve"))
    at.switch_page("pages/history.py").run()
    at.segmented_control(key="h_scope").set_value("team").run()
    assert not at.exception
    assert sorted(at.dataframe[0].value["id"].tolist()) == sorted(vision.values())


def test_the_submit_form_has_the_users_teams(as_user, vision, portal):
    at = as_user(User("dora", groups=("nlp", "staff")))
    at.switch_page("pages/submit.py").run()
    team = at.selectbox(key="f_team")
    assert team.options == ["nlp", "staff"] and team.value == "nlp"
    team.set_value("staff")
    at.text_input(key="f_name").input("team-run")
    at.number_input(key="f_epochs").set_value(1)
    at.button(key="submit").click().run()
    assert not at.exception
    assert [j.team for j in portal.jobs.list_jobs(owner="dora")] == ["staff"]


def test_an_admin_defines_a_team_on_the_teams_page(as_user, portal):
    at = as_user(ADMIN)
    at.switch_page("pages/teams.py").run()
    at.text_input(key="new-name").input("audio")
    at.text_area(key="new-members").input("frank, gina")
    at.text_area(key="new-leads").input("gina")
    at.toggle(key="new-visible").set_value(False)
    at.button(key="new-save").click().run()
    assert not at.exception
    assert "Team audio saved." in [s.value for s in at.success]
    assert "**Members:** frank, gina  \n**Leads:** gina" in names(at)
    assert portal.jobs.teams.team("audio").everyone_visible is False
    # A member sees the team on the page, without the editor.
    at = as_user(User("frank"))
    at.switch_page("pages/teams.py").run()
    assert "audio" in names(at) and not [b for b in at.button if b.key and b.key.endswith("-save")]


def test_a_refused_member_name_on_the_teams_page_leaves_the_team_as_it_was(as_user, portal, vision):
    # Before: the settings were saved and members removed before the too-long name was refused.
    at = as_user(ADMIN)
    at.switch_page("pages/teams.py").run()
    at.toggle(key="edit-0-visible").set_value(True)
    at.text_area(key="edit-0-members").input("bob, " + "x" * 300)
    at.button(key="edit-0-save").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["user: name the member (1 to 255 characters)"]
    assert portal.jobs.teams.team("vision").everyone_visible is False
    assert portal.jobs.teams.members("vision") == ["alice", "bob", "eve"]


def test_compare_offers_no_hidden_teams_job_to_a_non_member(as_user, vision, portal):
    # Before: the picker listed the 200 newest jobs of everyone, a hidden team's included.
    seed_jobs(portal.jobs.sessions.kw["bind"], 1, owner="carol", status=JobStatus.SUCCEEDED, seed=2)
    (carols,) = [j.id for j in portal.jobs.list_jobs(owner="carol")]
    at = as_user(User("carol"))
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    assert at.multiselect(key="cmp_pick").options == [f"{portal.jobs.get(ADMIN, carols).name} · #{carols} · carol"]
    at = as_user(User("eve"))
    at.switch_page("pages/compare.py").run()
    assert len(at.multiselect(key="cmp_pick").options) == 3  # a member is offered the team's jobs


def test_a_leads_dashboard_reads_their_teams_once_per_rerun_not_per_card(as_user, vision, portal):
    # Before: each of a member's running cards asked for the lead's teams again (2 queries a card, each 2 s rerun).
    from sqlalchemy import event

    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 5, owner="bob", status=JobStatus.RUNNING, seed=3)
    with portal.jobs.session() as s:
        for job in s.query(Job).filter(Job.team.is_(None)):
            job.team = "vision"
    at = as_user(User("alice"))
    at.toggle(key="dash_team").set_value(True).run()
    reads: list[str] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if "team_members" in statement:
            reads.append(statement)

    event.listen(engine, "before_cursor_execute", grab)
    try:
        at.run()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    assert not at.exception
    stops = [b.key for b in at.button if b.key and b.key.startswith("ACTIVE-") and b.key.endswith("-stop")]
    assert len(stops) >= 3, stops  # a Stop on each of the member's running cards shown
    assert len(reads) <= 3, reads  # the dashboard's listing and the lead's teams, not once per card
