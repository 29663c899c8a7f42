"""PORTAL_PRIORITY_LIMITS: the submit form offers a person only the priorities their group or role may use, and the
API refuses the others with a sentence naming the ones they may (the local backend; tests/k8s/test_kueue_priorities.py
does the same with Kueue's classes)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

import pages.common
from services.config import Settings
from services.models import Role, User
from services.priority_choice import allowed
from tests.conftest import PortalServer, create_token, run_to_end

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")
LIMITS = '{"group:interns": ["low", "normal"], "role:researcher": ["low", "normal", "urgent"], "role:viewer": ["low"]}'


def test_the_form_offers_an_intern_only_their_groups_priorities(monkeypatch, portal):
    monkeypatch.setattr(portal.settings, "priority_limits", {"group:interns": ["low", "normal"]})
    ivy = User("ivy", Role.RESEARCHER, groups=("interns", "staff"))
    monkeypatch.setattr(pages.common, "signed_in_user", lambda: ivy)  # as the proxy's headers would say
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.switch_page("pages/submit.py").run()
    radio = at.radio(key="f_priority")
    assert radio.options == ["low", "normal"] and radio.value == "normal"
    at.text_input(key="f_name").input("intern-run")
    radio.set_value("low")
    at.button(key="submit").click().run()
    assert not at.exception
    (job,) = portal.jobs.list_jobs()
    assert (job.owner, job.request["priority"]) == ("ivy", "low")
    run_to_end(portal, ivy, job.id)


def test_the_api_refuses_a_priority_the_role_may_not_use_naming_those_it_may(tmp_path):
    data = tmp_path / "portal-data"
    env = {"PORTAL_PRIORITY_LIMITS": '{"role:researcher": ["low", "normal"]}', "PORTAL_ADMINS": "ada"}
    srv = PortalServer(data, env=env).start()
    try:
        def post(who: str, priority: str) -> httpx.Response:
            return httpx.post(f"{srv.url}/api/v1/jobs", headers={"Authorization": f"Bearer {create_token(data, who)}"},
                              json={"name": f"{who}-{priority}", "script": "train_example.py", "epochs": 1,
                                    "priority": priority})

        refused = post("carl", "urgent")
        assert refused.status_code == 422, refused.text
        assert refused.json()["problems"] == {"priority": "the researcher role may use low or normal, not urgent"}
        assert post("carl", "asap").json()["problems"] == {"priority": "choose one of low, normal"}
        assert post("carl", "normal").status_code == 201
        assert post("ada", "urgent").status_code == 201  # admins are never limited
    finally:
        srv.stop()


@pytest.mark.parametrize("user,expected", [
    (User("ivy", Role.RESEARCHER, groups=("interns",)), {"low", "normal"}),  # the group's entry wins over the role's
    (User("rob", Role.RESEARCHER, groups=("staff",)), {"low", "normal", "urgent"}),
    (User("vera", Role.VIEWER), {"low"}),
    (User("ada", Role.ADMIN, groups=("interns",)), None),  # everything
])
def test_who_may_use_which_priority(tmp_path, user: User, expected: set[str] | None) -> None:
    settings = Settings(data_dir=tmp_path, backend="local", priority_limits=json.loads(LIMITS))
    assert allowed(settings, user)[0] == expected


def test_a_limit_naming_neither_a_group_nor_a_role_is_refused_at_start(tmp_path) -> None:
    with pytest.raises(ValueError, match="'interns' is neither 'group:NAME' nor 'role:'"):
        Settings(data_dir=tmp_path, backend="local", priority_limits={"interns": ["low"]})
