"""E-mail addresses are confirmed before the portal writes to them: adding one sends a single message with a signed
link; nothing else (no test message, no job's end) goes there until its owner opens it, on the Notifications page
or by pasting its code. Test and confirmation messages are limited per user and hour, with a sentence.
A real SMTP server (aiosmtpd) and HTTP receiver on 127.0.0.1; the page under AppTest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.models import User, ValidationProblem
from services.notifications_confirm import TooManyMessages
from tests.conftest import run_to_end
from tests.notification_receivers import WebhookReceiver, parts
from tests.test_notifications import notify_env, smtp  # noqa: F401 (the real SMTP server and the portal's settings)

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")
ADDRESS = "ada@example.com"


def deliver(portal) -> None:
    portal.sync.workers[0].deliver_due()


def code_in(mail) -> str:
    found = re.search(r"https://portal\.example\.com/notifications\?confirm=([\w.-]+)", parts(mail)["text/plain"])
    assert found, parts(mail)["text/plain"]
    return found.group(1)


def fail_a_job(portal, user, workspace_script, name: str = "boom") -> None:
    workspace_script("boom.py", "import sys\nsys.exit(3)\n")
    run_to_end(portal, user, portal.jobs.submit(user, {"name": name, "script": "boom.py", "epochs": 1}))


def test_an_address_gets_only_its_confirmation_until_its_link_is_opened(
        notify_env, portal, user, workspace_script, smtp) -> None:  # noqa: F811
    notes = portal.notifications
    channel, _ = notes.add_channel(user, "email", ADDRESS)
    assert not channel.confirmed
    deliver(portal)
    [mail] = smtp.messages
    assert mail["To"] == ADDRESS and mail["Subject"] == "[ML Job Portal] Confirm your address for notifications"
    assert f"asked to get notifications at {ADDRESS}" in parts(mail)["text/plain"]

    fail_a_job(portal, user, workspace_script)  # an event: not to an address no one confirmed
    assert notes.send_test(user, channel.id) == "confirm"  # "test": the confirmation again, not a test message
    deliver(portal)
    assert [m["Subject"] for m in smtp.messages] == ["[ML Job Portal] Confirm your address for notifications"] * 2
    assert notes.channels(user)[0].last_result == "Confirmation delivered (accepted by 127.0.0.1): open the link in it"

    assert notes.confirm(user, code_in(smtp.messages[0])).confirmed  # the first link is still good
    fail_a_job(portal, user, workspace_script, name="boom-2")
    assert notes.send_test(user, channel.id) == "test"
    deliver(portal)
    subjects = [" ".join(m["Subject"].split()) for m in smtp.messages[2:]]  # unfolded
    assert subjects == ["[ML Job Portal] boom-2 failed", "[ML Job Portal] A test message from the ML Job Portal: "
                        f"notifications of {user.name} arrive on this channel."]
    assert notes.unread_count(user) == 2  # the two failures; confirmations and tests are not news in the portal


def test_a_forged_or_someone_elses_code_is_refused_with_a_sentence(notify_env, portal, user, smtp) -> None:  # noqa: F811
    notes = portal.notifications
    notes.add_channel(user, "email", ADDRESS)
    deliver(portal)
    code = code_in(smtp.messages[0])
    with pytest.raises(ValidationProblem) as forged:
        notes.confirm(user, code[:-3] + ("abc" if not code.endswith("abc") else "xyz"))
    assert forged.value.problems["code"].startswith("This confirmation code is not valid or has expired")
    with pytest.raises(ValidationProblem) as other:
        notes.confirm(User(name="mallory", role=user.role), code)
    assert "another user's channel" in other.value.problems["code"]
    assert not notes.channels(user)[0].confirmed


def test_test_messages_are_limited_per_hour_with_a_sentence(notify_env, monkeypatch, data_dir) -> None:  # noqa: F811
    monkeypatch.setenv("PORTAL_NOTIFY_TEST_PER_HOUR", "2")
    from services.auth import local_user
    from services.portal import get_portal

    portal = get_portal()
    user = local_user(portal.settings)
    with WebhookReceiver() as receiver:
        channel, _ = portal.notifications.add_channel(user, "generic", receiver.url)
        portal.notifications.send_test(user, channel.id)
        portal.notifications.send_test(user, channel.id)
        with pytest.raises(TooManyMessages) as refused:
            portal.notifications.send_test(user, channel.id)
        assert str(refused.value) == ("You have sent 2 test or confirmation messages in the last hour, the most this "
                                      "portal allows (PORTAL_NOTIFY_TEST_PER_HOUR = 2); try again in 60 min.")
        with pytest.raises(ValidationProblem) as adding:  # an address's confirmation counts too
            portal.notifications.add_channel(user, "email", ADDRESS)
        assert "try again in 60 min" in adding.value.problems["target"]
        deliver(portal)
        assert len(receiver.delivered()) == 2
    assert [c.kind for c in portal.notifications.channels(user)] == ["generic"]


def test_the_link_confirms_on_the_notifications_page(notify_env, portal, user, smtp) -> None:  # noqa: F811
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page("pages/notifications.py").run()
    at.selectbox(key="n_kind").set_value("email").run()
    at.text_input(key="n_target").input(ADDRESS)
    at.button(key="n_add_channel").click().run()
    assert any("A confirmation is on its way to the address" in s.value for s in at.success)
    [channel] = portal.notifications.channels(user)
    assert any(w.value.startswith("Not confirmed yet") for w in at.warning)
    assert at.button(key=f"n_test_{channel.id}").label == "Send the confirmation again"

    deliver(portal)
    at.query_params["confirm"] = code_in(smtp.messages[0])[:-2] + "zz"  # a cut or altered link
    at.run()
    assert any(e.value.startswith("This confirmation code is not valid") for e in at.error)
    assert not portal.notifications.channels(user)[0].confirmed

    at.query_params["confirm"] = code_in(smtp.messages[0])
    at.run()
    assert f"Confirmed: notifications now go to {ADDRESS}." in [s.value.replace("\u2060", "") for s in at.success]
    assert portal.notifications.channels(user)[0].confirmed
    at.run()
    assert not any(w.value.startswith("Not confirmed yet") for w in at.warning)
    assert at.button(key=f"n_test_{channel.id}").label == "Send a test message"


def test_a_put_adding_more_addresses_than_the_hour_allows_changes_nothing(
        notify_env, monkeypatch, data_dir) -> None:  # noqa: F811
    # Before: each address was checked against the messages already sent, so the third one of three failed after
    # the default was changed, the webhook removed and two addresses added.
    monkeypatch.setenv("PORTAL_NOTIFY_TEST_PER_HOUR", "2")
    from services.auth import local_user
    from services.portal import get_portal

    portal = get_portal()
    notes = portal.notifications
    user = local_user(portal.settings)
    with WebhookReceiver() as receiver:
        kept, _ = notes.add_channel(user, "generic", receiver.url)
        before = notes.default_notify(user)
        addresses = [{"kind": "email", "target": f"r{n}@example.org"} for n in range(3)]
        with pytest.raises(ValidationProblem) as refused:
            notes.replace(user, default="never", channels=addresses)
    assert list(refused.value.problems) == ["channels[2].target"]
    assert refused.value.problems["channels[2].target"].startswith(
        "You have sent 0 test or confirmation messages in the last hour and this would send 2 more, the most this "
        "portal allows (PORTAL_NOTIFY_TEST_PER_HOUR = 2)")
    assert [(c.id, c.kind) for c in notes.channels(user)] == [(kept.id, "generic")]
    assert notes.default_notify(user) == before != "never"
