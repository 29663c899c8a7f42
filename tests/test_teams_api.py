"""Teams through the REST API and the Python client of a real portal process: an admin defines a hidden team, a
member sees a teammate's job under scope=team, a non-member gets 404, a member may not stop it (403) and its lead
may; a submit for a team you are not in is refused (422)."""

from __future__ import annotations

import httpx
import pytest
from ml_job_portal import JobClient

from tests.conftest import PortalServer, create_token, wait_until

LOOP = "import time\nfor i in range(600):\n    print(f'Epoch {i+1}/600', flush=True)\n    time.sleep(0.1)\n"


@pytest.fixture
def portal_server(tmp_path):
    srv = PortalServer(tmp_path / "portal-data", env={"PORTAL_ADMINS": "root"}).start()
    yield srv
    srv.stop()


def api(server: PortalServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_team_visibility_and_stop_through_the_api(portal_server):
    srv = portal_server
    root, alice, bob, eve, carol = (api(srv, create_token(srv.data_dir, n)) for n in
                                    ("root", "alice", "bob", "eve", "carol"))
    refused = bob.post("/teams", json={"name": "vision"})
    assert refused.status_code == 403 and refused.json()["error"] == "Only an admin may define teams, their " \
                                                                     "members and leads."
    made = root.post("/teams", json={"name": "vision", "everyone_visible": False, "members": ["bob", "eve"],
                                     "leads": ["alice"]})
    assert made.status_code == 201, made.text
    assert made.json() | {"members": sorted(made.json()["members"])} == {
        "name": "vision", "lead": False, "source": "admin", "everyone_visible": False, "default_queue": None,
        "notify_channel": None, "members": ["alice", "bob", "eve"], "leads": ["alice"]}
    assert root.post("/teams", json={"name": "vision"}).status_code == 409
    (srv.data_dir / "workspace" / "loop.py").write_text(LOOP)

    bad = carol.post("/jobs", json={"name": "not-mine", "script": "loop.py", "team": "vision"})
    assert bad.status_code == 422
    assert bad.json()["problems"] == {"team": "You are not in the team 'vision'; your teams: none."}

    job = bob.post("/jobs", json={"name": "bobs-run", "script": "loop.py"}).json()
    assert job["team"] == "vision"
    assert [j["id"] for j in alice.get("/jobs", params={"scope": "team"}).json()["jobs"]] == [job["id"]]
    assert alice.get(f"/jobs/{job['id']}").json()["owner"] == "bob"
    assert carol.get(f"/jobs/{job['id']}").status_code == 404
    assert carol.get("/jobs", params={"scope": "all"}).json()["jobs"] == []
    assert [j["id"] for j in root.get("/jobs", params={"scope": "all"}).json()["jobs"]] == [job["id"]]

    wait_until(lambda: bob.get(f"/jobs/{job['id']}").json()["status"] == "Running", timeout=60)
    member = eve.post(f"/jobs/{job['id']}/stop", json={})
    assert member.status_code == 403
    assert member.json()["error"] == "Only bob or a lead of the team vision may stop job bobs-run."
    assert carol.post(f"/jobs/{job['id']}/stop", json={}).status_code == 404
    assert alice.post(f"/jobs/{job['id']}/stop", json={}).status_code == 202
    wait_until(lambda: bob.get(f"/jobs/{job['id']}").json()["status"] == "Stopped", timeout=60)

    # Seen by others once the admin lets them; the client lists the caller's teams.
    changed = root.put("/teams/vision", json={"everyone_visible": True})
    assert changed.status_code == 200 and changed.json()["everyone_visible"] is True
    assert carol.get(f"/jobs/{job['id']}").status_code == 200
    assert root.put("/teams/nobody", json={}).status_code == 404
    client = JobClient(cluster_url=srv.url, token=alice.headers["Authorization"].split()[1])
    assert [(t["name"], t["lead"]) for t in client.teams()] == [("vision", True)]
    assert [j.id for j in client.list_jobs(scope="team")] == [job["id"]]


def test_a_teams_webhook_is_shown_whole_to_admins_only_and_a_refused_put_changes_nothing(tmp_path):
    # Before: every member read the team's webhook URL (a credential) in GET /teams; a PUT whose member name was
    # refused (422) had already saved the team's settings and removed its members.
    env = {"PORTAL_ADMINS": "root", "PORTAL_WEBHOOK_ALLOWED_HOSTS": "hooks.slack.com"}
    srv = PortalServer(tmp_path / "portal-data", env=env).start()
    try:
        root, bob = (api(srv, create_token(srv.data_dir, n)) for n in ("root", "bob"))
        url = "https://hooks.slack.com/services/T000/B000/SECRETTOKENabcd"
        made = root.post("/teams", json={"name": "vision", "notify_channel": f"slack:{url}", "members": ["bob", "eve"],
                                         "everyone_visible": False})
        assert made.status_code == 201 and made.json()["notify_channel"] == f"slack:{url}"
        (team,) = bob.get("/teams").json()["teams"]
        assert team["notify_channel"] == "https://hooks.slack.com/…abcd" and "SECRET" not in str(team)
        assert root.get("/teams").json()["teams"][0]["notify_channel"] == f"slack:{url}"

        refused = root.put("/teams/vision", json={"everyone_visible": True, "members": ["bob", "x" * 300]})
        assert refused.status_code == 422
        assert refused.json()["problems"] == {"user": "name the member (1 to 255 characters)"}
        (kept,) = root.get("/teams").json()["teams"]
        assert (kept["everyone_visible"], sorted(kept["members"])) == (False, ["bob", "eve"])
        # A PUT of settings alone keeps the whole channel (never the masked one).
        assert root.put("/teams/vision", json={"default_queue": "vision-q"}).json()["notify_channel"] == f"slack:{url}"
    finally:
        srv.stop()
