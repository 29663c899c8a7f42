"""Usage, prices and budgets through the REST API and the Python client of a real portal process: an admin sets a
price and a team budget, a researcher may do neither (403), a job past the budget gets 422 with the sentence, the
usage sums the jobs' costs by user, as JSON, as CSV and through `client.usage()`."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import httpx
import pytest
from ml_job_portal import JobClient

from tests.conftest import PortalServer, create_token, wait_until
from tests.test_costs import SLEEP


@pytest.fixture
def srv(tmp_path):
    s = PortalServer(tmp_path / "portal-data", env={"PORTAL_ADMINS": "root", "PORTAL_LOCAL_GPUS": "4"}).start()
    yield s
    s.stop()


def api(server: PortalServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_prices_budgets_and_usage_through_the_api_and_the_client(srv):
    root_token, rita_token = create_token(srv.data_dir, "root"), create_token(srv.data_dir, "rita", groups=("vision",))
    root, rita = api(srv, root_token), api(srv, rita_token)
    (srv.data_dir / "workspace" / "sleep.py").write_text(SLEEP)

    refused = rita.post("/prices", json={"gpu_type": "local", "gpu_hour": 1})
    assert refused.status_code == 403 and refused.json()["error"] == "Only admins set prices."
    bad = root.post("/prices", json={"gpu_hour": -1})
    assert bad.status_code == 422
    assert bad.json()["problems"] == {"gpu_type": "name a GPU type or a node",
                                      "gpu_hour": "a price per hour of 0 or more"}
    made = root.post("/prices", json={"gpu_type": "local", "gpu_hour": 3600, "node_hour": 0,
                                      "effective_from": "2020-01-01"})
    assert made.status_code == 201, made.text
    assert [p["gpu_hour"] for p in rita.get("/prices").json()["prices"]] == [3600]

    assert rita.put("/budgets", json={"scope": "user", "name": "rita", "monthly_limit": 10}).status_code == 403
    assert root.put("/budgets", json={"scope": "user", "name": "rita", "monthly_limit": 100}).json()["left"] == 100
    over = rita.post("/jobs", json={"name": "too-big", "script": "sleep.py", "gpus": 1, "max_runtime_hours": 1})
    assert over.status_code == 422
    assert over.json()["problems"] == {"": "This job may cost up to $3,600.00 (1 h × 1 GPU); you have $100.00 "
                                           "left this month: the job is refused, since it may cost more than "
                                           "is left."}
    root.put("/budgets", json={"scope": "user", "name": "rita", "monthly_limit": 100, "overdraft": True})
    job = rita.post("/jobs", json={"name": "fits", "script": "sleep.py", "gpus": 2, "extra_args": "--seconds 0.5"})
    assert job.status_code == 201, job.text
    done = wait_until(lambda: (j := rita.get(f"/jobs/{job.json()['id']}").json())["status"] == "Succeeded" and j,
                      timeout=60)
    ran = (datetime.fromisoformat(done["finished_at"]) - datetime.fromisoformat(done["started_at"])).total_seconds()
    usage = rita.get("/usage", params={"by": "user,gpu_type"}).json()
    assert [(r["user"], r["gpu_type"], r["jobs"]) for r in usage["rows"]] == [("rita", "local", 1)]
    assert usage["total"]["cost"] == pytest.approx(2 * ran, abs=0.01) and ran >= 0.5  # 2 GPUs at $1 a GPU-second
    assert [b["used"] for b in rita.get("/budgets").json()["budgets"]] == [pytest.approx(usage["total"]["cost"])]
    text = rita.get("/usage", params={"by": "team", "format": "csv"})
    assert text.headers["content-type"].startswith("text/csv")
    assert [(r["team"], r["jobs"]) for r in csv.DictReader(io.StringIO(text.text))] == [("", "1")]  # a token: no team
    wrong = rita.get("/usage", params={"by": "colour"})
    assert wrong.status_code == 422 and wrong.json()["problems"] == {
        "by": "'colour' is not one of user, team, month, gpu_type"}
    with JobClient(cluster_url=srv.url, token=rita_token) as client:
        assert [(r["user"], r["jobs"]) for r in client.usage(by=["user", "month"])] == [("rita", 1)]
    assert root.get("/usage", params={"by": "user"}).json()["rows"][0]["user"] == "rita"
