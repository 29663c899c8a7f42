"""A portal process killed in the middle of delivering a failed job's notifications delivers after its restart,
once: the e-mail it had sent is not sent again, the Slack message it was sending when it died arrives once, under
the same Idempotency-Key, with the reason and a link (the issue's "done when", as a new user would try it)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from services.auth import local_user
from services.config import Settings
from services.portal import build_portal
from tests.conftest import PortalServer, create_token, wait_until
from tests.notification_receivers import SmtpServer, WebhookReceiver, confirm_address, parts


def test_a_portal_killed_mid_delivery_delivers_after_restart_once(tmp_path: Path) -> None:
    smtp, receiver = SmtpServer().start(), WebhookReceiver().start()
    receiver.hold.set()  # the first webhook request is never answered: the portal dies while it waits
    env = {"PORTAL_SMTP_HOST": "127.0.0.1", "PORTAL_SMTP_PORT": str(smtp.port), "PORTAL_SMTP_STARTTLS": "false",
           "PORTAL_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "PORTAL_PUBLIC_URL": "https://portal.example.com"}
    data_dir = tmp_path / "portal-data"
    setup = build_portal(Settings(data_dir=data_dir, backend="local", smtp_host="127.0.0.1", smtp_port=smtp.port,
                                  smtp_starttls=False, webhook_allowed_hosts=["127.0.0.1"]))
    user = local_user(setup.settings)
    setup.notifications.add_channel(user, "email", "ada@example.com")
    confirm_address(setup, user, smtp, "ada@example.com")
    setup.notifications.add_channel(user, "slack", receiver.url, secret="k")  # Slack's shape, our receiver
    (setup.settings.workspace_dir / "boom.py").write_text("import sys\nsys.exit(3)\n")
    setup.close()
    token = create_token(data_dir, user.name)
    server = PortalServer(data_dir, env=env).start()
    try:
        answer = httpx.post(f"{server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"},
                            json={"name": "boom", "script": "boom.py", "epochs": 1}, timeout=30)
        assert answer.status_code == 201, answer.text
        assert receiver.arrived.wait(60), "the webhook was never called"
        assert len(smtp.messages) == 1
        server.proc.kill()  # SIGKILL: no shutdown, the delivery stays claimed
        server.proc.wait(10)
        receiver.release.set()

        server = PortalServer(data_dir, port=server.port, env=env).start()
        wait_until(lambda: receiver.delivered(), timeout=60)
        time.sleep(3)  # time for a wrong second delivery to show
        assert len(receiver.requests) == 2 and len(receiver.delivered()) == 1
        first, again = receiver.requests
        assert first.answered is None and again.headers["idempotency-key"] == first.headers["idempotency-key"]
        text = json.loads(again.body)["text"]
        assert again.signed_with("k") and "failed" in text and "Exited with code 3" in text
        assert "https://portal.example.com/job?id=" in text
        assert len(smtp.messages) == 1  # sent before the kill: not again
        assert "Exited with code 3" in parts(smtp.messages[0])["text/plain"]
    finally:
        server.stop()
        receiver.stop()
        smtp.stop()
