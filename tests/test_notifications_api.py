"""The notifications REST API and its Python client against a real portal process: settings (a webhook outside the
allow-list refused per field, secrets never sent back), a test message that reaches the receiver signed, the
per-job choice on submit, and the in-portal list with its unread count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ml_job_portal import JobClient, PortalError

from services.auth import local_user
from services.config import Settings
from tests.conftest import PortalServer, create_token, wait_until
from tests.notification_receivers import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def portal_api(tmp_path: Path) -> Iterator[tuple[PortalServer, str, str]]:
    data_dir = tmp_path / "portal-data"
    name = local_user(Settings(data_dir=data_dir)).name
    token = create_token(data_dir, name)
    srv = PortalServer(data_dir, env={"PORTAL_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
                                      "PORTAL_PUBLIC_URL": "https://portal.example.com"}).start()
    try:
        yield srv, token, name
    finally:
        srv.stop()


def test_settings_test_message_per_job_choice_and_the_list(portal_api, receiver) -> None:
    srv, token, name = portal_api
    client = JobClient(srv.url, token)
    settings = client.notification_settings()
    assert settings["default_notify"] == "end" and settings["channels"] == []

    with pytest.raises(PortalError) as refused:
        client.add_notification_channel("slack", "https://10.0.0.7/hooks/abc")
    assert refused.value.status_code == 422
    assert "10.0.0.7 is not on this portal's list of webhook hosts (127.0.0.1)" in str(refused.value)
    assert client.notification_settings()["channels"] == []  # nothing saved

    added = client.add_notification_channel("generic", receiver.url, events=["failed", "max_runtime"])
    [channel] = added["channels"]
    secret = added["new_secrets"][str(channel["id"])]
    assert channel["has_secret"] and channel["events"] == ["failed", "max_runtime"]
    raw = httpx.get(f"{srv.url}/api/v1/notifications/settings", headers={"Authorization": f"Bearer {token}"})
    assert secret not in raw.text and "new_secrets" not in raw.json()  # shown once, never again

    client.send_test_notification(channel["id"])
    wait_until(lambda: receiver.delivered(), timeout=30)
    test = receiver.delivered()[0]
    assert test.signed_with(secret) and test.headers["x-portal-event"] == "test"
    wait_until(lambda: client.notification_settings()["channels"][0]["last_result"] == "Delivered: HTTP 200")

    with pytest.raises(PortalError) as bad:
        client.submit_job("boom", "boom.py", notify="sometimes")
    assert "notify" in bad.value.problems

    (srv.data_dir / "workspace" / "boom.py").write_text("import sys\nsys.exit(3)\n")
    (srv.data_dir / "workspace" / "fine.py").write_text("print('ok')\n")
    ok = client.submit_job("fine", "fine.py", epochs=1)
    failed = client.submit_job("boom", "boom.py", epochs=1, notify="failure")
    ok.wait(timeout=60)
    failed.wait(timeout=60)
    wait_until(lambda: client.notifications()["unread"] == 2, timeout=30)
    listing = client.notifications()
    sentences = [n["sentence"] for n in listing["notifications"]]
    assert sentences[0].startswith(f"Job boom of {name} failed after") and "Exited with code 3" in sentences[0]
    assert sentences[1].startswith(f"Job fine of {name} succeeded after")
    wait_until(lambda: len(receiver.delivered()) == 2, timeout=30)  # the channel takes failures only
    assert [r.headers["x-portal-event"] for r in receiver.delivered()] == ["test", "failed"]
    assert client.mark_notifications_read() == 2 and client.notifications()["unread"] == 0


def test_test_messages_past_the_hourly_limit_are_a_429_with_a_sentence(portal_api, receiver) -> None:
    srv, token, _ = portal_api
    client = JobClient(srv.url, token)
    [channel] = client.add_notification_channel("generic", receiver.url)["channels"]
    assert channel["confirmed"]  # a webhook needs no confirmation; an e-mail address does
    for _ in range(5):
        client.send_test_notification(channel["id"])
    answer = httpx.post(f"{srv.url}/api/v1/notifications/channels/{channel['id']}/test",
                        headers={"Authorization": f"Bearer {token}", "Origin": srv.url})
    assert answer.status_code == 429, answer.text
    assert answer.json()["error"] == ("You have sent 5 test or confirmation messages in the last hour, the most this "
                                      "portal allows (PORTAL_NOTIFY_TEST_PER_HOUR = 5); try again in 60 min.")
    assert 3500 <= int(answer.headers["Retry-After"]) <= 3600
    with pytest.raises(PortalError) as refused:  # the client says the same sentence
        client.send_test_notification(channel["id"])
    assert refused.value.status_code == 429 and "try again in 60 min" in str(refused.value)
    wait_until(lambda: len(receiver.delivered()) == 5, timeout=30)
    assert len(receiver.requests) == 5
