"""A team's notification channel, set on the Teams page (or PUT /api/v1/teams): it hears of the failures of its
jobs at once, beside the channels of PORTAL_TEAM_WEBHOOKS, which keep working (real webhook receiver)."""

from __future__ import annotations

import json

from services.models import Role, User
from tests.conftest import run_to_end
from tests.test_notifications import FAILING, SUCCEEDING, deliver_all, notify_env, receiver, smtp  # noqa: F401

ADMIN = User("root", Role.ADMIN)


def test_a_teams_channel_hears_of_its_jobs_failures(notify_env, monkeypatch, data_dir, receiver):  # noqa: F811
    from services.portal import get_portal

    monkeypatch.setenv("PORTAL_TEAM_WEBHOOKS", json.dumps({"team-a": f"generic:{receiver.url}/settings"}))
    portal = get_portal()
    portal.jobs.teams.save(ADMIN, "vision", notify_channel=f"generic:{receiver.url}/vision")
    portal.jobs.teams.set_member(ADMIN, "vision", "bob")
    (portal.settings.workspace_dir / "boom.py").write_text(FAILING)
    (portal.settings.workspace_dir / "fine.py").write_text(SUCCEEDING)
    bob, ada = User("bob"), User("ada", groups=("team-a",))
    for who, script in ((bob, "boom.py"), (bob, "fine.py"), (ada, "boom.py")):
        run_to_end(portal, who, portal.jobs.submit(who, {"name": f"{who.name}-run", "script": script,
                                                         "notify": "never"}))
    deliver_all(portal, rounds=5)
    heard = sorted((r.path, json.loads(r.body)["sentence"].split(" failed")[0]) for r in receiver.delivered())
    assert heard == [("/hook/settings", "Job ada-run of ada"), ("/hook/vision", "Job bob-run of bob")]
