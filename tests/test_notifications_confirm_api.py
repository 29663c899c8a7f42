"""Confirming an e-mail address through the REST API and the Python client (issue 18): the code read from the real
confirmation mail (aiosmtpd on 127.0.0.1) confirms it, after which a job's end goes there; a wrong code, or another
user's, is a 422 with a sentence (the channel stays unconfirmed); the confirmation sent again counts towards the
hourly limit (429 with Retry-After). A real portal process, as a notebook reaches it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message

import httpx
import pytest
from ml_job_portal import JobClient, PortalError

from services.auth import local_user
from services.config import Settings
from tests.conftest import PortalServer, create_token, wait_until
from tests.notification_receivers import SmtpServer, parts

CONFIRM_SUBJECT = "[ML Job Portal] Confirm your address for notifications"
PER_HOUR = 2


@dataclass
class Portal:
    srv: PortalServer
    smtp: SmtpServer
    tokens: dict[str, str]  # user name -> API token
    owner: str  # the local user: the one whose jobs run here

    def client(self, name: str) -> JobClient:
        return JobClient(self.srv.url, self.tokens[name])

    def post(self, name: str | None, path: str, body: dict | None = None) -> httpx.Response:
        headers = {"Origin": self.srv.url} | ({"Authorization": f"Bearer {self.tokens[name]}"} if name else {})
        return httpx.post(f"{self.srv.url}/api/v1/{path}", headers=headers, json=body or {}, timeout=30)

    def mails(self, address: str, subject: str = CONFIRM_SUBJECT) -> list[Message]:
        return [m for m in self.smtp.messages if m["To"] == address and " ".join(m["Subject"].split()) == subject]

    def codes(self, address: str, count: int = 1) -> list[str]:
        """The codes of the first `count` confirmations that reached `address`, waiting for them."""
        wait_until(lambda: len(self.mails(address)) >= count, timeout=30)
        found = [re.search(r"/notifications\?confirm=([\w.-]+)", parts(m)["text/plain"]) for m in self.mails(address)]
        assert all(found), [parts(m)["text/plain"] for m in self.mails(address)]
        return [f.group(1) for f in found[:count] if f]


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    data_dir = tmp_path_factory.mktemp("confirm-api") / "portal-data"
    owner = local_user(Settings(data_dir=data_dir)).name
    with SmtpServer() as smtp:
        tokens = {name: create_token(data_dir, name) for name in (owner, "bob", "carol", "dave")}
        srv = PortalServer(data_dir, env={
            "PORTAL_SMTP_HOST": "127.0.0.1", "PORTAL_SMTP_PORT": str(smtp.port), "PORTAL_SMTP_STARTTLS": "false",
            "PORTAL_PUBLIC_URL": "https://portal.example.com", "PORTAL_NOTIFY_TEST_PER_HOUR": str(PER_HOUR)}).start()
        try:
            yield Portal(srv, smtp, tokens, owner)
        finally:
            srv.stop()


def channel_of(portal: Portal, name: str) -> dict:
    [channel] = portal.client(name).notification_settings()["channels"]
    return channel


def sender_done(portal: Portal, name: str) -> None:
    """The sender writes its result on the channel just after the mail is accepted: wait for it, or it may land
    after the confirmation's own."""
    wait_until(lambda: (channel_of(portal, name)["last_result"] or "").startswith("Confirmation delivered"))


def test_the_code_from_the_mail_confirms_the_address_then_a_jobs_end_goes_there(portal: Portal) -> None:
    address = "ada@example.com"
    client = portal.client(portal.owner)
    [added] = client.add_notification_channel("email", address)["channels"]
    assert added["confirmed"] is False
    [code] = portal.codes(address)
    sender_done(portal, portal.owner)

    wrong = portal.post(portal.owner, "notifications/confirm", {"code": code[:-3] + ("xyz" if code[-3:] != "xyz"
                                                                                        else "abc")})
    assert wrong.status_code == 422, wrong.text
    assert wrong.json()["problems"]["code"].startswith("This confirmation code is not valid or has expired")
    assert "Traceback" not in wrong.text
    for junk in ({"code": "not-a-code"}, {"code": 5}, {}):
        answer = portal.post(portal.owner, "notifications/confirm", junk)
        assert answer.status_code == 422 and answer.json()["error"], (junk, answer.text)
    assert portal.post(None, "notifications/confirm", {"code": code}).status_code == 401
    assert channel_of(portal, portal.owner)["confirmed"] is False

    confirmed = portal.post(portal.owner, "notifications/confirm", {"code": code})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json() == channel_of(portal, portal.owner)
    assert confirmed.json()["confirmed"] is True and confirmed.json()["last_result"] == "Address confirmed"

    (portal.srv.data_dir / "workspace" / "boom.py").write_text("import sys\nsys.exit(3)\n")
    client.submit_job("boom", "boom.py", epochs=1).wait(timeout=60)
    wait_until(lambda: portal.mails(address, "[ML Job Portal] boom failed"), timeout=30)
    assert len(portal.mails(address)) == 1  # and no second confirmation


def test_another_users_code_is_refused_and_the_channel_stays_unconfirmed(portal: Portal) -> None:
    address = "carol@example.org"
    [channel] = portal.client("carol").add_notification_channel("email", address)["channels"]
    [code] = portal.codes(address)
    sender_done(portal, "carol")

    refused = portal.post("bob", "notifications/confirm", {"code": code})
    assert refused.status_code == 422, refused.text
    assert refused.json()["problems"]["code"].startswith("This confirmation is for another user's channel")
    assert "carol" not in refused.text and address not in refused.text  # nor whose it is
    with pytest.raises(PortalError) as by_client:
        portal.client("bob").confirm_notification_address(code)
    assert by_client.value.status_code == 422 and "another user's channel" in str(by_client.value)
    assert portal.post("bob", f"notifications/channels/{channel['id']}/confirmation").status_code == 404
    assert portal.client("bob").notification_settings()["channels"] == []
    assert channel_of(portal, "carol")["confirmed"] is False

    mine = portal.client("carol").confirm_notification_address(code)  # its owner still can, through the client
    assert mine["confirmed"] is True and mine == channel_of(portal, "carol")


def test_the_confirmation_again_is_within_the_hourly_limit(portal: Portal) -> None:
    address = "dave@example.org"
    client = portal.client("dave")
    [channel] = client.add_notification_channel("email", address)["channels"]  # the first of PER_HOUR
    again = client.resend_confirmation(channel["id"])
    assert again["queued"] is True and again["channel"]["confirmed"] is False
    assert address in again["message"]

    refused = portal.post("dave", f"notifications/channels/{channel['id']}/confirmation")
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == (f"You have sent {PER_HOUR} test or confirmation messages in the last hour, "
                                       f"the most this portal allows (PORTAL_NOTIFY_TEST_PER_HOUR = {PER_HOUR}); "
                                       "try again in 60 min.")
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    with pytest.raises(PortalError) as by_client:
        client.resend_confirmation(channel["id"])
    assert by_client.value.status_code == 429 and "try again in 60 min" in str(by_client.value)

    _, second = portal.codes(address, count=2)  # the two that were allowed arrived
    assert client.confirm_notification_address(second)["confirmed"] is True
    done = portal.post("dave", f"notifications/channels/{channel['id']}/confirmation")
    assert done.status_code == 409 and done.json()["error"] == (
        f"Channel {channel['id']} needs no confirmation: its address is confirmed already.")
    assert len(portal.mails(address)) == 2

    paths = httpx.get(f"{portal.srv.url}/api/v1/openapi.json").json()["paths"]
    assert "429" in paths["/api/v1/notifications/channels/{channel_id}/confirmation"]["post"]["responses"]
    assert "422" in paths["/api/v1/notifications/confirm"]["post"]["responses"]


def test_the_openapi_document_describes_both() -> None:
    from api.openapi import openapi_document

    paths = openapi_document()["paths"]
    confirm = paths["/api/v1/notifications/confirm"]["post"]
    assert confirm["requestBody"]["content"]["application/json"]["schema"]["required"] == ["code"]
    assert {"200", "401", "422"} <= set(confirm["responses"])
    again = paths["/api/v1/notifications/channels/{channel_id}/confirmation"]["post"]
    assert {"202", "401", "404", "409", "429"} <= set(again["responses"])
