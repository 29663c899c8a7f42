"""A web page must not act as the portal's user, in a real headless Chromium against a laptop portal on
127.0.0.1 (single-user mode: no login, so the browser's reach is the user's).

- DNS rebinding: Chromium resolves ``attacker.test`` to 127.0.0.1 (``--host-resolver-rules``), and the attacker's
  page is served as ``http://attacker.test:PORT/`` on the portal's own port, as if the name had first pointed at
  the attacker's server and then been rebound. To the browser that page and the portal are one origin.
- Another local site (a server on another port): its page tries every way a page can reach the portal.

Chromium's own Local Network Access checks are turned off so that the portal's defences are what is tested
(other browsers and older Chromiums have none).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.conftest import PortalServer, create_token, free_port, wait_until
from tests.e2e.test_browser import ARGS, CHROMIUM, wait_for_app

pytestmark = pytest.mark.browser

EXAMPLE = {"name": "from-a-web-page", "script": "train_example.py", "epochs": 1,
           "extra_args": "--seconds-per-epoch 0"}
NO_LNA = "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessRespectPreflightResults," \
         "PrivateNetworkAccessSendPreflights,BlockInsecurePrivateNetworkRequests"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortalServer]:
    srv = PortalServer(tmp_path_factory.mktemp("rebinding") / "portal-data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def chromium():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            *ARGS, NO_LNA, "--host-resolver-rules=MAP attacker.test 127.0.0.1, MAP *.attacker.test 127.0.0.1"])
        yield b
        b.close()


def job_names(server: PortalServer, token: str) -> list[str]:
    r = httpx.get(f"{server.url}/api/v1/jobs?scope=all", headers={"Authorization": f"Bearer {token}"})
    return [j["name"] for j in r.json()["jobs"]]


# The attacker's script: read the portal's page, open its WebSocket, make a job through the API (handed a token:
# even one would not help), and report what came back.
ATTACK = """async ([token, job]) => {
  const out = {};
  try { const r = await fetch("/"); out.page = [r.status, (await r.text()).slice(0, 300)]; }
  catch (e) { out.page = ["failed", String(e)]; }
  try {
    const r = await fetch("/api/v1/jobs", {method: "POST", body: JSON.stringify(job),
      headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"}});
    out.api = [r.status, await r.text()];
  } catch (e) { out.api = ["failed", String(e)]; }
  out.websocket = await new Promise(done => {
    const ws = new WebSocket(location.origin.replace("http", "ws") + "/_stcore/stream", ["streamlit"]);
    ws.onopen = () => { ws.close(); done("open"); };
    ws.onerror = () => done("refused");
    setTimeout(() => done("timeout"), 10000);
  });
  return out;
}"""


def test_a_rebound_host_name_gets_nothing_from_the_portal(chromium, server):
    token = create_token(server.data_dir, "alice")
    rebound = f"http://attacker.test:{server.port}"
    page = chromium.new_page()
    # The portal itself, opened through the rebound name: a sentence, not the app.
    response = page.goto(rebound + "/")
    assert response.status == 400
    assert "does not answer to this host name" in page.locator("body").inner_text()
    assert page.locator("[data-testid='stApp']").count() == 0

    # The attacker's page, as its own server first answered for that name; everything after goes to 127.0.0.1.
    page.route(rebound + "/start", lambda route: route.fulfill(status=200, content_type="text/html",
                                                                 body="<title>cute cats</title><p>cats</p>"))
    page.goto(rebound + "/start")
    out = page.evaluate(ATTACK, [token, EXAMPLE])
    assert out["page"][0] == 400 and "host name" in out["page"][1], out
    assert out["api"][0] == 400 and "host name" in json.loads(out["api"][1])["error"], out
    assert out["websocket"] == "refused", out
    assert "from-a-web-page" not in job_names(server, token)


class AttackerSite(BaseHTTPRequestHandler):
    html = ""

    def do_GET(self) -> None:
        body = self.html.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


CROSS_SITE = """async ([portal, token, job]) => {
  const out = {};
  try {  // with the token: the browser asks the portal first (CORS preflight) and the portal does not agree
    const r = await fetch(portal + "/api/v1/jobs", {method: "POST", body: JSON.stringify(job),
      headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"}});
    out.api = [r.status];
  } catch (e) { out.api = ["failed"]; }
  try {  // the kind of request a page may send anywhere without asking: no token, text/plain
    await fetch(portal + "/api/v1/jobs", {method: "POST", mode: "no-cors", body: JSON.stringify(job),
      headers: {"Content-Type": "text/plain"}});
    out.simple = "sent";
  } catch (e) { out.simple = "failed"; }
  out.websocket = await new Promise(done => {
    const ws = new WebSocket(portal.replace("http", "ws") + "/_stcore/stream", ["streamlit"]);
    ws.onopen = () => { ws.close(); done("open"); };
    ws.onerror = () => done("refused");
    setTimeout(() => done("timeout"), 10000);
  });
  return out;
}"""


def test_a_page_on_another_site_cannot_make_the_portal_act(chromium, server):
    token = create_token(server.data_dir, "alice")
    AttackerSite.html = (f'<form id="f" method="post" action="{server.url}/api/v1/jobs" enctype="text/plain">'
                         f'<input name=\'{{"name": "from-a-form", "x": "\' value=\'"}}\'></form>'
                         f'<iframe id="frame" src="{server.url}/tokens" width="800" height="600"></iframe>')
    site = ThreadingHTTPServer(("127.0.0.1", free_port()), AttackerSite)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        page = chromium.new_page()
        page.goto(f"http://127.0.0.1:{site.server_address[1]}/")
        out = page.evaluate(CROSS_SITE, [server.url, token, EXAMPLE])
        assert out["api"] == ["failed"] and out["websocket"] == "refused", out
        # Framed, the portal's pages could be clicked through (clickjacking): the browser refuses to show them.
        page.wait_for_timeout(3000)
        frame = page.frame_locator("#frame")
        assert frame.locator("[data-testid='stApp']").count() == 0
        assert "API tokens" not in (page.frames[1].content() if len(page.frames) > 1 else "")
        # A plain form posted across sites carries no token: refused, and nothing happened.
        with page.expect_navigation():
            page.evaluate("document.getElementById('f').submit()")
        assert "API token" in page.locator("body").inner_text()
        names = job_names(server, token)
        assert "from-a-web-page" not in names and "from-a-form" not in names
    finally:
        site.shutdown()


def test_the_pages_work_under_their_content_security_policy(chromium, server):
    from services.auth import local_user
    from services.config import Settings

    token = create_token(server.data_dir, local_user(Settings(data_dir=server.data_dir)).name)  # "My jobs"
    r = httpx.post(f"{server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"},
                   json={**EXAMPLE, "name": "under-the-policy", "epochs": 3})
    job = r.json()["id"]
    wait_until(lambda: httpx.get(f"{server.url}/api/v1/jobs/{job}",
                                 headers={"Authorization": f"Bearer {token}"}).json()["finished"], timeout=60)
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    for path, shown in [("/", "under-the-policy"), ("/submit", "Experiment name"),
                        (f"/job?id={job}&tab=Metrics", None), ("/history", "under-the-policy")]:
        response = page.goto(server.url + path)
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
        wait_for_app(page)
        if shown:
            page.get_by_text(shown).first.wait_for(state="attached", timeout=15_000)  # History's grid is a canvas
        else:  # the loss curve: Plotly draws under the policy
            page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for(timeout=30_000)
        page.wait_for_timeout(500)
    assert violations == [], violations
