"""GET /metrics on the running portal, as Prometheus scrapes it: the text format parses, the jobs by state are the
store's, the submit latency counts every accepted submission, and only the scraper's token (PORTAL_METRICS_TOKEN_FILE)
or an admin may read it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PortalServer, create_token, sandbox_python, sandbox_skip_reason, wait_until

RUN = {"script": "train_example.py", "epochs": 1, "extra_args": "--seconds-per-epoch 0 --samples 50"}
FAIL = {"script": "train_example.py", "epochs": 2, "extra_args": "--seconds-per-epoch 0 --samples 50 --fail-at-epoch 1"}
SCRAPER_TOKEN = "scrape-me-3f9c1a"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortalServer]:
    base = tmp_path_factory.mktemp("metrics")
    token_file = base / "metrics-token"
    token_file.write_text(SCRAPER_TOKEN + "\n")  # a Secret's file may end in a newline
    env = {"PORTAL_ADMINS": "ada", "PORTAL_METRICS_TOKEN_FILE": str(token_file)}
    srv = PortalServer(base / "portal-data", env=env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def ada(server: PortalServer) -> str:
    return create_token(server.data_dir, "ada")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scrape(server: PortalServer, token: str = SCRAPER_TOKEN) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"{server.url}/metrics", headers=bearer(token), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def finish(server: PortalServer, token: str, values: dict, name: str) -> dict:
    r = httpx.post(f"{server.url}/api/v1/jobs", headers=bearer(token), json={"name": name, **values})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    def done() -> dict | None:
        job = httpx.get(f"{server.url}/api/v1/jobs/{job_id}", headers=bearer(token)).json()
        return job if job["finished"] else None

    return wait_until(done, timeout=60)  # type: ignore[return-value]


def test_jobs_by_state_and_submit_latency_follow_the_store(server: PortalServer, ada: str) -> None:
    before = scrape(server)
    submitted = value(before, "portal_submit_latency_seconds_count")
    ends = [finish(server, ada, RUN, "ok-1"), finish(server, ada, RUN, "ok-2"), finish(server, ada, FAIL, "bad")]
    assert [j["status"] for j in ends] == ["Succeeded", "Succeeded", "Failed"], [j["reason"] for j in ends]

    jobs = httpx.get(f"{server.url}/api/v1/jobs?scope=all&limit=200", headers=bearer(ada)).json()["jobs"]
    after = scrape(server)
    for state in ("Succeeded", "Failed", "Stopped", "Running", "Queued", "Submitting"):
        assert value(after, "portal_jobs", state=state) == sum(j["status"] == state for j in jobs), state
    assert value(after, "portal_jobs", state="Succeeded") == value(before, "portal_jobs", state="Succeeded") + 2
    # Every accepted submission is timed (local jobs start in well under a second).
    assert value(after, "portal_submit_latency_seconds_count") == submitted + 3
    assert 0 < value(after, "portal_submit_latency_seconds_sum") < 30
    assert value(after, "portal_submit_latency_seconds_bucket", le="+Inf") == submitted + 3


def test_the_sync_loop_and_the_build_are_described(server: PortalServer) -> None:
    first = scrape(server)
    assert value(first, "portal_sync_leader") == 1  # one portal: it runs the sync loop
    ticks = value(first, "portal_sync_ticks_total")
    wait_until(lambda: value(scrape(server), "portal_sync_ticks_total") > ticks, timeout=30)
    later = scrape(server)
    assert 0 <= value(later, "portal_sync_lag_seconds") < 10  # PORTAL_SYNC_INTERVAL_SECONDS is 0.5 s
    assert value(later, "portal_sync_failing") == 0
    assert value(later, "portal_backend_outages_total") == 0  # local jobs: no cluster to lose
    assert value(later, "portal_backend_reachable") == 1
    assert value(later, "portal_notifications_pending") == 0
    build = [labels for (name, labels) in later if name == "portal_build_info"]
    assert len(build) == 1 and ("backend", "local") in build[0] and ("auth_mode", "single") in build[0]


def test_the_sync_lag_counts_from_the_last_pass_while_passes_stop(tmp_path: Path) -> None:
    """A loop that stops completing passes shows the whole stall at the next scrape, however long since the
    previous scrape (here there was none), and more at each scrape after: what an alert on the lag needs."""
    token_file = tmp_path / "metrics-token"
    token_file.write_text(SCRAPER_TOKEN)
    # One pass at start-up, then none for an hour: as a loop stuck in a pass.
    env = {"PORTAL_METRICS_TOKEN_FILE": str(token_file), "PORTAL_SYNC_INTERVAL_SECONDS": "3600"}
    stalled = PortalServer(tmp_path / "portal-data", env=env).start()
    try:
        wait_until(lambda: httpx.get(f"{stalled.url}/healthz").json()["sync"]["ticks"] == 1, timeout=30)
        passed = time.monotonic()
        time.sleep(4)
        first = scrape(stalled)
        since = time.monotonic() - passed
        assert value(first, "portal_sync_ticks_total") == 1
        assert since - 0.5 <= value(first, "portal_sync_lag_seconds") <= since + 30, since
        time.sleep(2)
        assert value(scrape(stalled), "portal_sync_lag_seconds") >= value(first, "portal_sync_lag_seconds") + 2
    finally:
        stalled.stop()


def test_only_the_scraper_and_admins_may_read_the_metrics(server: PortalServer, ada: str) -> None:
    url = f"{server.url}/metrics"
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401 and "Authorization: Bearer" in anonymous.json()["error"]
    for wrong in ("scrape-me", SCRAPER_TOKEN + "x", "mlp_not-a-token"):
        r = httpx.get(url, headers=bearer(wrong))
        assert r.status_code == 401 and "not valid" in r.json()["error"], (wrong, r.text)
    researcher = httpx.get(url, headers=bearer(create_token(server.data_dir, "bob")))
    assert researcher.status_code == 403 and "Only admins" in researcher.json()["error"]
    assert "portal_jobs" not in researcher.text
    assert "portal_jobs{" in httpx.get(url, headers=bearer(ada)).text  # an admin's own API token
    assert "portal_jobs{" in httpx.get(url, headers=bearer(SCRAPER_TOKEN)).text


def test_a_rotated_scraper_token_applies_without_a_restart(server: PortalServer) -> None:
    token_file = Path(server.extra_env["PORTAL_METRICS_TOKEN_FILE"])
    token_file.write_text("rotated-token-77")
    try:
        assert httpx.get(f"{server.url}/metrics", headers=bearer(SCRAPER_TOKEN)).status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers=bearer("rotated-token-77")).status_code == 200
    finally:
        token_file.write_text(SCRAPER_TOKEN)


@pytest.mark.skipif(bool(sandbox_skip_reason()), reason=sandbox_skip_reason() or "")
def test_behind_the_proxy_an_identity_header_is_not_believed(open_tmp_path: Path) -> None:
    """The monitoring component lets /metrics past the proxy's login: a header there is anyone's claim."""
    env = {"PORTAL_AUTH_MODE": "proxy", "PORTAL_ADMINS": "ada", "PORTAL_PYTHON_EXECUTABLE": sandbox_python()}
    server = PortalServer(open_tmp_path / "portal-data", env=env).start()
    try:
        url = f"{server.url}/metrics"
        forged = httpx.get(url, headers={"X-Forwarded-User": "ada", "X-Forwarded-Groups": "admins"})
        assert forged.status_code == 401 and "API token" in forged.json()["error"]
        assert "portal_jobs{" in httpx.get(url, headers=bearer(create_token(server.data_dir, "ada"))).text
        # No scraper token is set: a bearer that is not an API token is refused, not matched against nothing.
        assert httpx.get(url, headers=bearer("anything")).status_code == 401
    finally:
        server.stop()


@pytest.mark.skipif(bool(sandbox_skip_reason()), reason=sandbox_skip_reason() or "")
def test_with_oidc_a_signed_in_admin_may_read_the_metrics(open_tmp_path: Path) -> None:
    from streamlit.web.server.starlette.starlette_app_utils import create_signed_value

    secret, home = "metrics-cookie-secret-for-tests", open_tmp_path / "home"
    (home / ".streamlit").mkdir(parents=True)
    secrets = home / ".streamlit" / "secrets.toml"
    secrets.write_text(f'[auth]\nredirect_uri = "http://127.0.0.1/oauth2callback"\ncookie_secret = "{secret}"\n'
                       'client_id = "p"\nclient_secret = "x"\n'
                       'server_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"\n')
    secrets.chmod(0o600)  # the portal refuses to start with secrets others may read
    env = {"PORTAL_AUTH_MODE": "oidc", "PORTAL_ADMINS": "ada@example.org", "HOME": str(home),
           "PORTAL_PYTHON_EXECUTABLE": sandbox_python()}
    server = PortalServer(open_tmp_path / "portal-data", env=env).start()

    def login(email: str) -> dict[str, str]:
        claims = json.dumps({"email": email, "sub": email, "is_logged_in": True, "provider": "default"})
        return {"_streamlit_user": create_signed_value(secret, "_streamlit_user", claims).decode()}

    try:
        url = f"{server.url}/metrics"
        assert "portal_jobs{" in httpx.get(url, cookies=login("ada@example.org")).text
        researcher = httpx.get(url, cookies=login("bob@example.org"))
        assert researcher.status_code == 403 and "Only admins" in researcher.json()["error"]
        assert httpx.get(url).status_code == 401
    finally:
        server.stop()
