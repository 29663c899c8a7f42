"""What the TensorBoard route passes on: a real HTTP receiver stands where the job's TensorBoard listens, behind the
portal's real /tensorboard/ route, and records what arrives. Nothing that names or signs in the portal's user
reaches it: the sign-in proxy's identity headers (as configured), its tokens, cookies, credentials."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

from starlette.applications import Starlette
from starlette.testclient import TestClient

from api.tensorboard_proxy import ROUTES

SENT = {"X-Remote-User": "alice", "X-Remote-Email": "alice@example.org", "X-Remote-Groups": "vision",
        "X-Forwarded-Access-Token": "eyJ-access", "X-Auth-Request-User": "alice",
        "X-Auth-Request-Access-Token": "eyJ-other", "Cookie": "portal_session=s3cret", "Authorization": "Bearer t0k",
        "Accept-Language": "en"}


def test_no_identity_header_nor_token_reaches_tensorboard(portal, user, monkeypatch) -> None:
    seen: list[dict[str, str]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    for name, header in (("proxy_user_header", "X-Remote-User"), ("proxy_email_header", "X-Remote-Email"),
                         ("proxy_groups_header", "X-Remote-Groups")):
        monkeypatch.setattr(portal.settings, name, header)
    # The job's TensorBoard, as the portal found it running: the receiver's address.
    monkeypatch.setattr(portal.tensorboards, "open",
                        lambda who, ids: SimpleNamespace(base=f"http://127.0.0.1:{receiver.server_port}"))
    try:
        with TestClient(Starlette(routes=ROUTES)) as browser:
            answer = browser.get("/tensorboard/1/data/plugins_listing", headers=SENT)
        assert (answer.status_code, answer.text) == (200, "ok")
        arrived = seen[-1]
        assert arrived.get("accept-language") == "en"
        leaked = {k for k in SENT if k.lower() in arrived and k != "Accept-Language"}
        assert not leaked, f"TensorBoard was sent {sorted(leaked)}"
    finally:
        receiver.shutdown()
