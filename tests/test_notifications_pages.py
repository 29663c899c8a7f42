"""The Notifications page and the Submit form's "Notify me" under AppTest: a webhook outside the allow-list is
refused under its field, a new webhook's secret is shown once, "Send a test message" reaches a real receiver
and its result shows on the channel, the list shows a failed job with the unread count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import run_to_end
from tests.notification_receivers import WebhookReceiver

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch, data_dir, receiver) -> AppTest:
    monkeypatch.setenv("PORTAL_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page("pages/notifications.py").run()
    assert not at.exception
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    parts += [s.value for s in at.subheader] + [s.value for s in at.success] + [w.value for w in at.warning]
    return "\n".join(str(p) for p in parts)


def test_channels_are_checked_added_and_tested(page: AppTest, portal, user, receiver) -> None:
    page.selectbox(key="n_kind").set_value("slack").run()
    page.text_input(key="n_target").input("http://10.1.2.3/hooks/x")
    page.button(key="n_add_channel").click().run()
    assert "10.1.2.3 is not on this portal's list of webhook hosts (127.0.0.1); ask your admin to add it " \
           "(PORTAL_WEBHOOK_ALLOWED_HOSTS)" in [e.value for e in page.error]
    assert portal.notifications.channels(user) == []

    page.selectbox(key="n_kind").set_value("generic").run()
    page.text_input(key="n_target").input(receiver.url)
    page.button(key="n_add_channel").click().run()
    [channel] = portal.notifications.channels(user)
    [secret] = [c.value for c in page.code]  # shown once, now
    assert "Its signing secret, shown only now" in texts(page)
    page.run()
    assert not page.code and secret not in texts(page)  # never again
    card = next(m.value for m in page.markdown if m.value.startswith("**Generic JSON webhook**"))
    assert "/…hook" in card and receiver.url not in card  # the URL itself is a credential: shown cut

    page.button(key=f"n_test_{channel.id}").click().run()
    portal.sync.workers[0].deliver_due()
    assert receiver.delivered()[0].signed_with(secret)
    page.run()
    assert "Last delivery: Delivered: HTTP 200" in texts(page)


def test_the_list_shows_a_failed_job_unread_until_marked(page: AppTest, portal, user, workspace_script) -> None:
    workspace_script("boom.py", "import sys\nsys.exit(3)\n")
    job_id = portal.jobs.submit(user, {"name": "boom", "script": "boom.py", "epochs": 1})
    run_to_end(portal, user, job_id)
    page.run()
    assert "Your notifications · 1 unread" in texts(page)
    assert f"**Job boom of {user.name} failed" in texts(page) and "Exited with code 3" in texts(page)
    page.button(key="n_mark_read").click().run()
    assert "Your notifications" in [s.value for s in page.subheader] and "unread" not in texts(page)


def test_the_submit_form_sends_the_per_job_choice(page: AppTest, portal, user) -> None:
    portal.notifications.set_default_notify(user, "never")
    page.switch_page("pages/submit.py").run()
    notify = page.selectbox(key="f_notify")
    assert notify.options[0] == "As in my notification settings (never)"
    page.text_input(key="f_name").input("quiet-run")
    notify.set_value("failure")
    page.button(key="submit").click().run()
    [job] = portal.jobs.list_jobs()
    assert job.request["notify"] == "failure"


def test_alert_rules_are_checked_under_their_fields_and_saved(page: AppTest, portal, user) -> None:
    page.text_input(key="n_pattern").input("(a+)+")
    page.text_input(key="n_rules").input("loss >> 10")
    page.button(key="n_save_alerts").click().run()
    errors = [e.value for e in page.error]
    assert any(e.startswith("'(a+)+' holds a repeat inside a repeat") for e in errors)
    assert any(e.startswith("unknown operator '>>' in 'loss >> 10'") for e in errors)
    assert portal.notifications.alerts(user) == ("", "")
    page.text_input(key="n_pattern").input("CUDA out of memory")
    page.text_input(key="n_rules").input("loss > 10")
    page.number_input(key="n_stuck").set_value(30.0)
    page.button(key="n_save_alerts").click().run()
    assert "Saved your alerts." in [s.value for s in page.success]
    assert portal.notifications.alerts(user) == ("CUDA out of memory", "loss > 10")
    assert portal.notifications.stuck_minutes(user) == 30


def test_a_clone_keeps_its_jobs_choice(page: AppTest, portal, user, workspace_script) -> None:
    workspace_script("fine.py", "print('ok')\n")
    job_id = portal.jobs.submit(user, {"name": "picky", "script": "fine.py", "epochs": 1, "notify": "failure"})
    run_to_end(portal, user, job_id)
    page.query_params["clone"] = str(job_id)
    page.switch_page("pages/submit.py").run()
    assert page.selectbox(key="f_notify").value == "failure"
