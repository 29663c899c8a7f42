"""The HTTP routes of the running portal (started as a user starts it): health, the pages' signed download
links, and the REST API's authentication, ownership rules and guards."""

from __future__ import annotations

import io
import json
import zipfile

import httpx
import pytest

from api.v1 import ROUTES as API_ROUTES
from services.auth import sign_link
from services.config import Settings
from services.models import Role, User
from tests.conftest import PortalServer, create_token, sandbox_python, sandbox_skip_reason, wait_until

EXAMPLE = {"script": "train_example.py", "epochs": 1, "extra_args": "--seconds-per-epoch 0"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(server):
    """Tokens of alice and bob (researchers), vera (viewer) and ada (admin) on the running portal."""
    return {name: create_token(server.data_dir, name) for name in ("alice", "bob", "vera", "ada")}


@pytest.fixture
def server(tmp_path):
    from tests.conftest import PortalServer

    env = {"PORTAL_VIEWERS": "vera", "PORTAL_ADMINS": "ada"}
    srv = PortalServer(tmp_path / "portal-data", env=env).start()
    yield srv
    srv.stop()


def submit(server, token: str, name: str = "api", **values) -> dict:
    r = httpx.post(f"{server.url}/api/v1/jobs", headers=bearer(token), json={"name": name, **EXAMPLE, **values})
    assert r.status_code == 201, r.text
    return r.json()


def finished(server, token: str, job_id: int) -> dict:
    def done():
        job = httpx.get(f"{server.url}/api/v1/jobs/{job_id}", headers=bearer(token)).json()
        return job if job["finished"] else None

    return wait_until(done, timeout=60, interval=0.3)


def link(server, user: User, **what) -> str:
    return f"{server.url}/download/{sign_link(Settings(data_dir=server.data_dir), user, **what)}"


def test_healthz_reports_the_sync_loop(server):
    body = httpx.get(f"{server.url}/healthz").json()
    assert body["status"] == "ok" and body["backend"] == "local" and body["backend_error"] is None
    assert body["sync"]["running"] is True


def test_every_api_route_without_a_token_answers_401(server):
    for route in API_ROUTES:
        path = route.path.replace("{job_id}", "1").replace("{template_id}", "1").replace("{path:anypath}", "x.py")
        for method in route.methods - {"HEAD"}:
            for headers in ({}, {"Authorization": "Bearer mlp_not-a-token"}, {"Authorization": "Basic abc"},
                            {"X-Forwarded-User": "alice"}):
                r = httpx.request(method, f"{server.url}{path}", headers=headers, json={})
                assert r.status_code == 401, (method, path, headers, r.text)
                assert r.json()["error"]


def test_a_revoked_token_stops_working(server):
    from services.portal import build_portal

    token = create_token(server.data_dir, "alice", "notebook")
    assert httpx.get(f"{server.url}/api/v1/me", headers=bearer(token)).json()["name"] == "alice"
    p = build_portal(Settings(data_dir=server.data_dir, backend="local"))
    try:
        alice = User("alice")
        (view,) = p.tokens.list(alice)
        assert view.last_used_at is not None, "the page shows when a token was last used"
        p.tokens.revoke(alice, view.id)
    finally:
        p.close()
    r = httpx.get(f"{server.url}/api/v1/me", headers=bearer(token))
    assert r.status_code == 401 and "revoked" in r.json()["error"]


def test_roles_come_from_the_settings(server, tokens):
    roles = {n: httpx.get(f"{server.url}/api/v1/me", headers=bearer(t)).json()["role"] for n, t in tokens.items()}
    assert roles == {"alice": "researcher", "bob": "researcher", "vera": "viewer", "ada": "admin"}


def test_others_cannot_act_on_your_job_viewers_read_admins_act(server, tokens):
    job = submit(server, tokens["alice"], "alices-run")
    finished(server, tokens["alice"], job["id"])
    url = f"{server.url}/api/v1/jobs/{job['id']}"
    # Bob sees it read-only (the default), but every action answers "not found".
    assert httpx.get(url, headers=bearer(tokens["bob"])).json()["owner"] == "alice"
    for method, path in [("POST", "/retry"), ("POST", "/stop"), ("DELETE", ""), ("GET", "/files/model.json"),
                         ("GET", "/results.zip")]:
        r = httpx.request(method, url + path, headers=bearer(tokens["bob"]), json={})
        assert r.status_code == 404 and r.json()["error"], (method, path, r.text)
        r = httpx.request(method, url + path, headers=bearer(tokens["vera"]), json={})
        assert (r.status_code == 200) if method == "GET" else (r.status_code == 404), (method, path, r.text)
    # Bob's listing of his own jobs does not hold Alice's; "all" does.
    mine = httpx.get(f"{server.url}/api/v1/jobs", headers=bearer(tokens["bob"])).json()["jobs"]
    everyone = httpx.get(f"{server.url}/api/v1/jobs?scope=all", headers=bearer(tokens["bob"])).json()["jobs"]
    assert mine == [] and [j["id"] for j in everyone] == [job["id"]]
    # Cloning is reading: Bob gets his own copy.
    clone = httpx.post(f"{url}/clone", headers=bearer(tokens["bob"]), json={"epochs": 2})
    assert clone.status_code == 201 and clone.json()["owner"] == "bob" and clone.json()["request"]["epochs"] == 2
    # The admin may act on anyone's job.
    assert httpx.post(f"{url}/retry", headers=bearer(tokens["ada"]), json={}).status_code == 201
    assert httpx.request("DELETE", url, headers=bearer(tokens["ada"]), json={}).status_code == 204
    assert httpx.get(url, headers=bearer(tokens["alice"])).status_code == 404


def test_hidden_jobs_are_not_found(tmp_path):
    from tests.conftest import PortalServer

    srv = PortalServer(tmp_path / "d", env={"PORTAL_SHOW_OTHERS_JOBS": "false", "PORTAL_VIEWERS": "vera"}).start()
    try:
        alice, bob, vera = (create_token(srv.data_dir, n) for n in ("alice", "bob", "vera"))
        job = submit(srv, alice, "secret-run")
        r = httpx.get(f"{srv.url}/api/v1/jobs/{job['id']}", headers=bearer(bob))
        assert r.status_code == 404 and r.json() == {"error": f"Job {job['id']} was not found."}
        assert httpx.get(f"{srv.url}/api/v1/jobs/{job['id'] + 100}", headers=bearer(bob)).json() == r.json() | {
            "error": f"Job {job['id'] + 100} was not found."}
        assert httpx.get(f"{srv.url}/api/v1/jobs?scope=all", headers=bearer(bob)).json()["jobs"] == []
        assert httpx.get(f"{srv.url}/api/v1/jobs/{job['id']}", headers=bearer(vera)).status_code == 200
    finally:
        srv.stop()


def test_mutations_need_json_and_the_same_origin(server, tokens):
    h = bearer(tokens["alice"])
    r = httpx.post(f"{server.url}/api/v1/jobs", headers=h, content=b"name=x", )
    assert r.status_code == 415
    r = httpx.post(f"{server.url}/api/v1/jobs", headers=h | {"Content-Type": "text/plain"}, content=b"{}")
    assert r.status_code == 415
    for evil in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        r = httpx.post(f"{server.url}/api/v1/jobs", headers=h | evil, json={"name": "x", **EXAMPLE})
        assert r.status_code == 403, evil
    same = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    assert httpx.post(f"{server.url}/api/v1/jobs", headers=h | same, json={"name": "ok", **EXAMPLE}).status_code == 201
    r = httpx.post(f"{server.url}/api/v1/jobs", headers=h, json={"name": "Bad Name", "script": "nope.py", "gpus": -1})
    assert r.status_code == 422 and set(r.json()["problems"]) == {"name", "script", "gpus"}


def test_uploads_are_python_only_size_limited_and_sanitised(server, tokens):
    h = bearer(tokens["alice"])
    ok = httpx.post(f"{server.url}/api/v1/files", headers=h, files={"file": ("../../evil dir/train.py", b"print(1)\n")})
    assert ok.status_code == 201
    script = ok.json()["script"]
    assert script == "uploads/train.py", "the name is reduced to its own base name, in the uploads folder"
    assert script in [f["path"] for f in httpx.get(f"{server.url}/api/v1/files", headers=h).json()["files"]]
    assert httpx.get(f"{server.url}/api/v1/files/{script}", headers=h).content == b"print(1)\n"
    not_py = httpx.post(f"{server.url}/api/v1/files", headers=h, files={"file": ("data.sh", b"rm -rf /")})
    assert not_py.status_code == 422 and "Python" in not_py.json()["error"]
    big = httpx.post(f"{server.url}/api/v1/files", headers=h, files={"file": ("big.py", b"#" * 6_000_000)})
    assert big.status_code == 413
    cross = httpx.post(f"{server.url}/api/v1/files", headers=h | {"Origin": "https://evil.example"},
                       files={"file": ("x.py", b"print(1)\n")})
    assert cross.status_code == 403


def test_downloads_are_confined_to_the_job(server, tokens):
    job = submit(server, tokens["alice"])
    finished(server, tokens["alice"], job["id"])
    h = bearer(tokens["alice"])
    for path in ["..%2Fjob.log", "..%2F..%2Fportal.db", "%2Fetc%2Fpasswd", "nope.txt", "output%2F..%2F..%2Fjob.log",
                 "..%2F..%2Fsecret.key"]:
        r = httpx.get(f"{server.url}/api/v1/jobs/{job['id']}/files/{path}", headers=h)
        assert r.status_code in (400, 404), path
        assert "Epoch" not in r.text and "SQLite" not in r.text and "root:" not in r.text
    for path in ["..%2Fportal.db", "%2Fetc%2Fpasswd", "..%2Fsecret.key", "a%0Ab.py"]:
        r = httpx.get(f"{server.url}/api/v1/files/{path}", headers=h)
        # Refused either by the server's own traversal check (400) or by the portal's confinement (404, JSON).
        assert r.status_code == 400 or (r.status_code == 404 and r.json()["error"]), path
    r = httpx.get(f"{server.url}/api/v1/no/such/route%0A", headers=h)
    assert r.status_code == 404 and r.json()["error"]
    r = httpx.get(f"{server.url}/api/v1/jobs/{job['id']}/stop", headers=h)
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_signed_download_links_of_the_pages(server):
    alice = User("alice")
    job = submit(server, create_token(server.data_dir, "alice"))
    wait_until(lambda: "Training finished" in httpx.get(link(server, alice, job=job["id"], kind="log")).text,
               timeout=30)
    r = httpx.get(link(server, alice, job=job["id"], kind="log"))
    assert r.headers["content-type"].startswith("text/plain") and "attachment" in r.headers["content-disposition"]
    assert '"w"' in httpx.get(link(server, alice, job=job["id"], kind="file", path="model.json")).text
    wait_until(lambda: httpx.get(link(server, alice, job=job["id"], kind="zip")).status_code == 200)
    zf = zipfile.ZipFile(io.BytesIO(httpx.get(link(server, alice, job=job["id"], kind="zip")).content))
    assert {"model.json", "metrics.json"} <= set(zf.namelist())
    # Another researcher's link, a tampered one, or a path out of the job: not found.
    assert httpx.get(link(server, User("bob"), job=job["id"], kind="log")).status_code == 404
    assert httpx.get(link(server, User("vera", Role.VIEWER), job=job["id"], kind="log")).status_code == 200
    good = link(server, alice, job=job["id"], kind="log")
    cut = len(good) - 10  # inside the signature: its last character may only carry padding bits
    assert httpx.get(good[:cut] + ("A" if good[cut] != "A" else "B") + good[cut + 1:]).status_code == 404
    assert httpx.get(link(server, alice, job=job["id"], kind="file", path="../job.log")).status_code == 404


@pytest.mark.skipif(bool(sandbox_skip_reason()), reason=sandbox_skip_reason() or "")
def test_behind_the_proxy_a_download_link_works_only_for_its_own_user(open_tmp_path):
    env = {"PORTAL_AUTH_MODE": "proxy", "PORTAL_PYTHON_EXECUTABLE": sandbox_python()}
    server = PortalServer(open_tmp_path / "portal-data", env=env).start()
    try:
        job = submit(server, create_token(server.data_dir, "alice"))
        url = link(server, User("alice"), job=job["id"], kind="log")
        wait_until(lambda: httpx.get(url, headers={"X-Forwarded-User": "alice"}).status_code == 200, timeout=30)
        replayed = httpx.get(url, headers={"X-Forwarded-User": "bob"})  # a link pasted into a chat
        assert replayed.status_code == 403 and "made for another user" in replayed.json()["error"]
        anonymous = httpx.get(url)
        assert anonymous.status_code == 403 and "Sign in" in anonymous.json()["error"]
    finally:
        server.stop()


@pytest.mark.skipif(bool(sandbox_skip_reason()), reason=sandbox_skip_reason() or "")
def test_with_oidc_a_download_link_works_only_for_the_signed_in_user_it_was_made_for(open_tmp_path):
    from streamlit.web.server.starlette.starlette_app_utils import create_signed_value

    home = open_tmp_path / "home"
    (home / ".streamlit").mkdir(parents=True)
    secret = "a-cookie-secret-for-the-test-only"
    secrets = home / ".streamlit" / "secrets.toml"
    secrets.write_text(f'[auth]\nredirect_uri = "http://127.0.0.1/oauth2callback"\ncookie_secret = "{secret}"\n'
                       'client_id = "portal"\nclient_secret = "x"\n'
                       'server_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"\n')
    secrets.chmod(0o600)
    env = {"PORTAL_AUTH_MODE": "oidc", "PORTAL_PYTHON_EXECUTABLE": sandbox_python(), "HOME": str(home)}
    server = PortalServer(open_tmp_path / "portal-data", env=env).start()

    def signed_in(email: str) -> dict[str, str]:  # the cookie Streamlit's login sets after the provider's callback
        claims = json.dumps({"email": email, "sub": email, "is_logged_in": True, "provider": "default"})
        return {"_streamlit_user": create_signed_value(secret, "_streamlit_user", claims).decode()}

    try:
        job = submit(server, create_token(server.data_dir, "alice@example.org"))
        url = link(server, User("alice@example.org"), job=job["id"], kind="log")
        wait_until(lambda: httpx.get(url, cookies=signed_in("alice@example.org")).status_code == 200, timeout=30)
        replayed = httpx.get(url, cookies=signed_in("bob@example.org"))
        assert replayed.status_code == 403 and "made for another user" in replayed.json()["error"]
        assert httpx.get(url).status_code == 403, "a link without the login cookie is not a bearer link"
        forged = {"_streamlit_user": create_signed_value("another-secret", "_streamlit_user", "{}").decode()}
        assert httpx.get(url, cookies=forged).status_code == 403
    finally:
        server.stop()


def test_openapi_document_is_served(server):
    doc = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1") and "/api/v1/jobs" in doc["paths"]
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {(m, r.path.replace("{path:anypath}", "{path}")) for r in API_ROUTES for m in r.methods - {"HEAD"}}
    assert served <= documented


def test_pages_are_served_including_deep_links(server):
    for path in ["/", "/submit", "/history", "/job?id=1", "/tokens"]:
        assert httpx.get(f"{server.url}{path}").status_code == 200


def test_the_history_through_the_api_and_the_python_client(server, tokens, tmp_path):
    """A notebook's view of the history: filtered, sorted by a final metric, paged, summed and exported, with
    every final metric a column (also one the first job did not report); bad views are refused per field."""
    import pandas as pd
    from ml_job_portal import AuthenticationError, JobClient
    from ml_job_portal import ValidationError as ClientValidationError

    from services.models import JobStatus
    from services.store.db import make_engine
    from services.store.seed import seed_jobs

    engine = make_engine(Settings(data_dir=server.data_dir).sqlalchemy_url)
    seed_jobs(engine, 40, owner="alice", status=JobStatus.SUCCEEDED, seed=11, varied=True)
    seed_jobs(engine, 12, owner="bob", status=JobStatus.FAILED, seed=12, varied=True)
    engine.dispose()
    url = f"{server.url}/api/v1/history"

    def get(path: str = "", token: str | None = tokens["vera"], **params) -> httpx.Response:
        return httpx.get(url + path, headers=bearer(token) if token else {}, params=params, timeout=30)

    page = get(sort="final_metric", metric="accuracy", page_size=20).json()
    accuracy = [j["final_metrics"]["accuracy"] for j in page["jobs"]]
    assert len(accuracy) == 20 and page["has_more"] and accuracy == sorted(accuracy, reverse=True)
    failed = get(status="Failed", owner="bob", sort="cost", descending="false").json()["jobs"]
    assert len(failed) == 12 and {(j["owner"], j["status"]) for j in failed} == {("bob", "Failed")}
    assert get("/summary", owner="alice").json() | {"cost": 0, "gpu_hours": 0} == {
        "jobs": 40, "succeeded": 40, "success_rate": 1.0, "cost": 0, "gpu_hours": 0}
    assert {"accuracy", "eval_loss"} <= set(get("/metrics").json()["metrics"])
    # Bad views get a sentence, per field; every history route needs a token.
    unknown = get(stauts="Failed")
    assert unknown.status_code == 400 and "Unknown parameter 'stauts'" in unknown.json()["error"]
    bad = get(status="Bogus")
    assert bad.status_code == 422 and set(bad.json()["problems"]) == {"status"}
    assert "needs the metric's name" in get(sort="final_metric").json()["problems"]["metric"]
    assert get(gpus_min="-1").json()["problems"].keys() == {"gpus_min"}
    assert get("/export", format="xlsx").status_code == 400
    for path in ("", "/summary", "/metrics", "/export"):
        assert get(path, token=None).status_code == 401

    with JobClient(server.url, tokens["vera"]) as client:
        assert [j.id for j in client.history(sort="final_metric", metric="accuracy", page_size=5)] == [
            j["id"] for j in page["jobs"][:5]]
        assert len(list(client.iter_history(owner="bob", page_size=5))) == 12
        assert client.history_summary(status=["Completed", "Failed"])["jobs"] == 52
        assert "accuracy" in client.final_metric_names()
        frame = pd.read_parquet(client.export_history(tmp_path, sort="final_metric", metric="accuracy"))
        assert len(frame) == 52 and list(frame["final_accuracy"]) == sorted(frame["final_accuracy"], reverse=True)
        # Half the jobs reported an eval_loss: its column is there whichever job comes first.
        assert 0 < frame["final_eval_loss"].notna().sum() < 52
        csv_file = client.export_history(tmp_path / "bob.csv", format="csv", owner="bob", sort="cost")
        rows = csv_file.read_text().splitlines()
        assert len(rows) == 13 and "final_eval_loss" in rows[0].split(",") and "final_accuracy" in rows[0]
        with pytest.raises(ClientValidationError) as exc:
            client.history(status="Bogus")
        assert "status" in exc.value.problems
    with JobClient(server.url, "mlp_not-a-token") as client, pytest.raises(AuthenticationError):
        client.history()
