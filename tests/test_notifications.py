"""Notifications (issue 18): a job's end reaches the user's e-mail and webhooks exactly once, signed, with the
reason and a link; retries after a receiver's error; a failing channel is disabled with a sentence; the per-job
choice; the webhook allow-list at save time; alerts while a job runs (a log line matching the owner's pattern, a
metric crossing the owner's rules) once per job, not per line, and patterns that could stall the sync loop refused.
Real SMTP (aiosmtpd) and HTTP receivers on 127.0.0.1."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from services.models import ValidationProblem
from services.portal import Portal
from tests.conftest import run_to_end
from tests.notification_receivers import SmtpServer, WebhookReceiver, confirm_address, parts

FAILING = "import sys\nprint('Epoch 1/1 loss=0.25 accuracy=0.5', flush=True)\nsys.exit(3)\n"
SUCCEEDING = "print('Epoch 1/1 loss=0.125', flush=True)\n"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def notify_env(monkeypatch: pytest.MonkeyPatch, smtp: SmtpServer, data_dir) -> None:
    monkeypatch.setenv("PORTAL_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("PORTAL_SMTP_PORT", str(smtp.port))
    monkeypatch.setenv("PORTAL_SMTP_STARTTLS", "false")
    monkeypatch.setenv("PORTAL_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1,hooks.slack.com")
    monkeypatch.setenv("PORTAL_PUBLIC_URL", "https://portal.example.com")
    monkeypatch.setenv("PORTAL_NOTIFY_RETRY_SECONDS", "0.05")
    monkeypatch.setenv("PORTAL_NOTIFY_MAX_ATTEMPTS", "3")


def sender(portal: Portal):
    return portal.sync.workers[0]


def deliver_all(portal: Portal, rounds: int = 40) -> None:
    """Run the sender until nothing is due or waiting (retries included), as its thread would."""
    import time

    for _ in range(rounds):
        sender(portal).deliver_due()
        time.sleep(0.06)


def finish(portal: Portal, user, workspace_script, body: str, **values) -> int:
    workspace_script("job.py", body)
    job_id = portal.jobs.submit(user, {"name": "resnet-a", "script": "job.py", "epochs": 1} | values)
    run_to_end(portal, user, job_id)
    return job_id


def test_a_failed_job_reaches_email_and_slack_once_with_reason_link_and_signature(
        notify_env, portal, user, workspace_script, smtp, receiver):
    notes = portal.notifications
    notes.add_channel(user, "email", "ada@example.com")
    confirm_address(portal, user, smtp, "ada@example.com")
    slack, _ = notes.add_channel(user, "slack", receiver.url, secret="s3cret")
    job_id = finish(portal, user, workspace_script, FAILING)
    deliver_all(portal)
    deliver_all(portal)  # a second pass sends nothing again

    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert mail["To"] == "ada@example.com" and "resnet-a failed" in mail["Subject"]
    text, html = parts(mail)["text/plain"], parts(mail)["text/html"]
    link = f"https://portal.example.com/job?id={job_id}"
    assert f"Job resnet-a of {user.name} failed after" in text and "Exited with code 3" in text
    assert "loss 0.25" in text and link in text
    assert f'href="{link}"' in html and "Exited with code 3" in html

    assert len(receiver.requests) == 1 and len(receiver.delivered()) == 1
    hook = receiver.requests[0]
    assert hook.signed_with("s3cret") and not hook.signed_with("other")
    assert hook.headers["idempotency-key"] and hook.headers["x-portal-event"] == "failed"
    body = json.loads(hook.body)
    assert "Exited with code 3" in body["text"] and f"<{link}|Open in the portal>" in body["text"]
    assert notes.channels(user)[1].last_result == "Delivered: HTTP 200" and slack.has_secret

    listed = notes.notifications(user)
    assert [n.event for n in listed] == ["failed"] and notes.unread_count(user) == 1
    assert "Exited with code 3" in listed[0].sentence and listed[0].url == f"/job?id={job_id}"
    notes.mark_read(user)
    assert notes.unread_count(user) == 0


def test_a_receiver_answering_500_then_200_gets_it_once(notify_env, portal, user, workspace_script, receiver):
    receiver.answers = [500]
    portal.notifications.add_channel(user, "generic", receiver.url, secret="k")
    finish(portal, user, workspace_script, SUCCEEDING)
    deliver_all(portal)
    assert [r.answered for r in receiver.requests] == [500, 200]
    assert len({r.headers["idempotency-key"] for r in receiver.requests}) == 1  # the same message, retried
    body = json.loads(receiver.delivered()[0].body)
    assert body["event"] == "succeeded" and body["job"]["final_metrics"] == {"loss": 0.125}
    assert body["url"].startswith("https://portal.example.com/job?id=")
    assert all(r.signed_with("k") for r in receiver.requests)


def test_a_channel_that_keeps_failing_is_disabled_with_a_sentence(notify_env, portal, user, workspace_script,
                                                                    receiver):
    receiver.answers = [500] * 10
    portal.notifications.add_channel(user, "mattermost", receiver.url)
    finish(portal, user, workspace_script, SUCCEEDING)
    deliver_all(portal)
    assert len(receiver.requests) == 3  # PORTAL_NOTIFY_MAX_ATTEMPTS, then no more
    [view] = portal.notifications.channels(user)
    assert not view.enabled
    assert view.disabled_reason == ("Disabled after 3 failed attempts to deliver: the webhook answered HTTP 500. "
                                    "Fix it, then enable the channel again.")
    events = [n.event for n in portal.notifications.notifications(user)]
    assert events == ["channel_disabled", "succeeded"]
    assert "Your mattermost webhook channel was disabled" in portal.notifications.notifications(user)[0].sentence


def test_a_webhook_outside_the_allow_list_is_refused_at_save_time(notify_env, portal, user):
    with pytest.raises(ValidationProblem) as refused:
        portal.notifications.add_channel(user, "slack", "http://169.254.169.254/latest/meta-data")
    assert refused.value.problems["target"] == (
        "169.254.169.254 is not on this portal's list of webhook hosts (127.0.0.1, hooks.slack.com); ask your admin "
        "to add it (PORTAL_WEBHOOK_ALLOWED_HOSTS)")
    with pytest.raises(ValidationProblem) as refused:
        portal.notifications.add_channel(user, "email", "not-an-address")
    assert refused.value.problems["target"] == "'not-an-address' is not an e-mail address"
    assert portal.notifications.channels(user) == []


def test_the_per_job_choice_defaults_to_the_users_and_retries_keep_it(notify_env, portal, user, workspace_script,
                                                                       receiver):
    portal.notifications.add_channel(user, "generic", receiver.url)
    portal.notifications.set_default_notify(user, "failure")
    finish(portal, user, workspace_script, SUCCEEDING)  # the user's default: only failures
    never = finish(portal, user, workspace_script, FAILING, notify="never")
    retry = portal.jobs.retry(user, never)
    run_to_end(portal, user, retry)
    finish(portal, user, workspace_script, SUCCEEDING, notify="end")
    deliver_all(portal)
    assert [json.loads(r.body)["event"] for r in receiver.delivered()] == ["succeeded"]
    assert portal.jobs.get(user, retry).request["notify"] == "never"


# Alerts while a job runs ---------------------------------------------------------------------------
NOISY = """import time
for step in range(1, 41):
    print(f"step {step} loss={20 + step}", flush=True)
    print("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
print("loss=nan", flush=True)
"""


def test_pattern_and_threshold_alerts_fire_once_per_job(notify_env, portal, user, workspace_script,
                                                         receiver) -> None:
    notes = portal.notifications
    notes.add_channel(user, "generic", receiver.url, secret="k")
    notes.set_alerts(user, log_pattern="CUDA out of memory|loss=nan", metric_rules="loss > 10, accuracy is nan")
    workspace_script("noisy.py", NOISY)
    job_id = portal.jobs.submit(user, {"name": "noisy", "script": "noisy.py", "epochs": 1})
    run_to_end(portal, user, job_id)
    deliver_all(portal)

    events = [json.loads(r.body) for r in receiver.delivered()]
    assert sorted(e["event"] for e in events) == ["log_match", "metric_threshold", "succeeded"]
    log_match = next(e for e in events if e["event"] == "log_match")
    assert log_match["line"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert log_match["sentence"].startswith(f"Job noisy of {user.name} printed a line matching CUDA out of memory")
    threshold = next(e for e in events if e["event"] == "metric_threshold")
    assert threshold["rule"] == "loss > 10" and threshold["value"] == 21  # the first point above, not the last
    assert f"reported loss = 21 at step {threshold['step']}" in threshold["sentence"]
    assert "crossing your rule loss > 10" in threshold["sentence"]
    assert all(r.signed_with("k") for r in receiver.delivered())

    # A second job of the same owner is a job of its own: its alerts are said again, once.
    again = portal.jobs.submit(user, {"name": "noisy-2", "script": "noisy.py", "epochs": 1})
    run_to_end(portal, user, again)
    deliver_all(portal)
    assert len(receiver.delivered()) == 6


def test_a_job_that_says_never_gets_no_alerts(notify_env, portal, user, workspace_script, receiver) -> None:
    portal.notifications.add_channel(user, "generic", receiver.url)
    portal.notifications.set_alerts(user, log_pattern="out of memory")
    workspace_script("noisy.py", NOISY)
    run_to_end(portal, user, portal.jobs.submit(user, {"name": "quiet", "script": "noisy.py", "notify": "never"}))
    deliver_all(portal, rounds=5)
    assert receiver.requests == [] and portal.notifications.notifications(user) == []


@pytest.mark.parametrize(("pattern", "sentence"), [
    ("(a+)+$", "'(a+)+$' holds a repeat inside a repeat, which can take the portal minutes on one long line; "
               "write it without (for example 'CUDA out of memory|loss=nan')"),
    ("(x|xx)*y", "'(x|xx)*y' holds alternatives ('|') inside a repeat, which can take the portal minutes on one "
                 "long line; write it without (for example 'CUDA out of memory|loss=nan')"),
    ("(oom", "'(oom' is not a regular expression: missing ), unterminated subpattern at position 0"),
    ("(?<=a+)b", "'(?<=a+)b' is not a regular expression: look-behind requires fixed-width pattern"),
    ("(?a)(?u)x", "'(?a)(?u)x' is not a regular expression: ASCII and UNICODE flags are incompatible"),
    (".*a.*b.*Z", "'.*a.*b.*Z' holds more than 2 repeats ('*', '+', '{m,n}'), which can take the portal minutes on "
                  "one long line; write it without (for example 'CUDA out of memory|loss=nan')"),
])
def test_patterns_that_could_stall_the_portal_are_refused(notify_env, portal, user, pattern, sentence) -> None:
    with pytest.raises(ValidationProblem) as refused:
        portal.notifications.set_alerts(user, log_pattern=pattern)
    assert refused.value.problems == {"log_pattern": sentence}
    assert portal.notifications.alerts(user) == ("", "")


def test_open_repeats_side_by_side_stay_quick_on_a_long_line() -> None:
    """`.*a.*Z` on 1000 a's took over a second a line (60 s were not enough for `.*.*.*Z`): the sync loop's hang."""
    import time

    from services.notifications_alerts import _compiled, _line_limit

    assert _line_limit(".*a.*b.*Z") == 0  # saved by an older portal: not run at all
    assert _line_limit("(?<=a+)b") == 0  # one the compiler refuses would fail the log cursor's transaction
    assert _line_limit("CUDA out of memory|loss=nan") == 1000
    line, started = "a" * 1000, time.monotonic()
    assert _compiled(".*a.*Z").search(line[:_line_limit(".*a.*Z")]) is None
    assert time.monotonic() - started < 0.3


def test_a_mattermost_message_says_a_job_name_as_written_not_as_a_mention_or_markdown() -> None:
    from services.notifications_messages import render, webhook_body

    job = {"id": 7, "name": "@all ![x](https://t.example/p.png)", "owner": "ada", "status": "Failed",
           "reason": "exit 1", "runtime_seconds": 5.0, "final_metrics": {}, "max_runtime_hours": 8}
    text = webhook_body("mattermost", render({"event": "failed", "job": job, "path": "/job?id=7"}, ""))["text"]
    assert "@all" not in text and "@\u200ball" in text
    assert "![x](" not in text and "\\!\\[x\\]\\(https://t.example/p.png\\)" in text
    assert text.endswith("[Open in the portal](/job?id=7)")


@pytest.mark.parametrize("url", ["https://[::1/x", "https://hooks.slack.com:99999/x", "https://hooks.slack.com:ab/x"])
def test_a_webhook_url_python_cannot_split_is_a_sentence_not_a_traceback(notify_env, portal, user, url) -> None:
    from services.notifications_teams import kind_and_url

    with pytest.raises(ValidationProblem) as refused:
        portal.notifications.add_channel(user, "slack", url)
    assert refused.value.problems == {"target": "enter the webhook's full URL, starting with https://"}
    assert kind_and_url(url)[1] == url  # a team's (PORTAL_TEAM_WEBHOOKS) raised: the sender did not start


def test_rules_the_portal_cannot_read_are_refused(notify_env, portal, user) -> None:
    with pytest.raises(ValidationProblem) as refused:
        portal.notifications.set_alerts(user, metric_rules="loss >> 10")
    assert refused.value.problems["metric_rules"].startswith("unknown operator '>>' in 'loss >> 10'")
    portal.notifications.set_alerts(user, metric_rules="loss > 10 or loss is nan")
    assert portal.notifications.alerts(user) == ("", "loss > 10 or loss is nan")


# The store's part, on SQLite and PostgreSQL -----------------------------------------------------------------
def test_the_outbox_and_a_dead_senders_claims_on_both_databases(monkeypatch, receiver, database_url, tmp_path):
    from datetime import timedelta

    from sqlalchemy import update

    from services.auth import local_user
    from services.store.notification_tables import NotificationDelivery
    from services.store.orm import utcnow
    from tests.conftest import portal_on

    monkeypatch.setenv("PORTAL_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    with portal_on(database_url, tmp_path) as p:
        me = local_user(p.settings)
        p.notifications.add_channel(me, "generic", receiver.url, secret="k")
        (p.settings.workspace_dir / "boom.py").write_text(FAILING)
        run_to_end(p, me, p.jobs.submit(me, {"name": "boom", "script": "boom.py", "epochs": 1}))
        with p.jobs.session() as s:  # what a portal killed mid-send leaves: claimed, never marked sent
            s.execute(update(NotificationDelivery).values(status="sending", attempts=1, next_attempt_at=utcnow()))
        assert sender(p).deliver_due() == 0  # a claim is not sent twice by a live sender...
        assert sender(p).recover() == 0  # ...nor by another replica while it may still be in flight...
        with p.jobs.session() as s:
            s.execute(update(NotificationDelivery).values(next_attempt_at=utcnow() - timedelta(minutes=1)))
        assert sender(p).recover() == 1  # ...but once past its deadline, a new process takes it up
        deliver_all(p, rounds=3)
        assert [json.loads(r.body)["job"]["reason"] for r in receiver.delivered()] == ["Exited with code 3"]
        assert receiver.requests[0].signed_with("k")


# What a running job has not done, and its start after a wait ---------------------------------------------
def test_stuck_idle_gpus_and_a_start_after_waiting_are_each_said_once(notify_env, portal, user, workspace_script,
                                                                       receiver):
    import time
    from datetime import timedelta

    from services.jobs import set_status
    from services.models import JobStatus
    from services.store.orm import Job, JobLog, utcnow
    from tests.conftest import wait_until

    portal.notifications.add_channel(user, "generic", receiver.url)
    portal.notifications.set_alerts(user, stuck_minutes=0.02)  # 1.2 s without output
    workspace_script("quiet.py", "import time\nprint('loading', flush=True)\ntime.sleep(30)\n")
    job_id = portal.jobs.submit(user, {"name": "quiet", "script": "quiet.py", "epochs": 1})
    def printed() -> bool:  # running, and its one line read: from then on it is quiet
        portal.sync.tick()
        with portal.jobs.session() as s:
            return s.get_one(JobLog, job_id).lines >= 1 and s.get_one(Job, job_id).status == JobStatus.RUNNING.value

    wait_until(printed)
    portal.jobs.mark(job_id, gpus=1, gpu_idle_since=time.time() - 3600)  # its GPUs idle for an hour
    time.sleep(1.5)
    for _ in range(3):  # watched again and again: said once
        portal.sync.tick()
        sender(portal).watch()
    with portal.jobs.session() as s:  # a second job that waited ten minutes in the queue starts
        job = s.get_one(Job, portal.jobs.submit(user, {"name": "waiter", "script": "quiet.py", "epochs": 1}))
        set_status(s, job, JobStatus.QUEUED, "Waiting for 1 GPU")
        job.created_at = utcnow() - timedelta(minutes=10)
        set_status(s, job, JobStatus.RUNNING, "")
    deliver_all(portal, rounds=5)
    bodies = {json.loads(r.body)["event"]: json.loads(r.body) for r in receiver.delivered()}
    assert sorted(bodies) == ["gpu_idle", "started", "stuck"] and len(receiver.delivered()) == 3
    assert re.fullmatch(f"Job quiet of {user.name} has printed nothing for [1-9] s while running; it may be stuck.",
                        bodies["stuck"]["sentence"])
    assert bodies["gpu_idle"]["sentence"] == f"Job quiet of {user.name} has kept its GPUs below 10.0 % for 1 h: " \
                                             "they are idle."
    assert bodies["started"]["sentence"] == f"Job waiter of {user.name} started after waiting 10 min in the queue."
    for j in portal.jobs.list_jobs():
        if j.is_active:
            portal.jobs.stop(user, j.id)


# Team channels ------------------------------------------------------------------------------------------------
def test_a_groups_team_webhook_hears_of_its_members_failures_only(notify_env, monkeypatch, data_dir, receiver,
                                                                   tmp_path):
    from sqlalchemy import select

    from services.models import User
    from services.portal import get_portal

    (tmp_path / "team.key").write_text("team-secret\n")
    monkeypatch.setenv("PORTAL_TEAM_WEBHOOKS", json.dumps({"team-a": f"mattermost:{receiver.url}",
                                                           "team-b": "https://10.0.0.9/hook"}))
    monkeypatch.setenv("PORTAL_TEAM_WEBHOOK_SECRET_FILE", str(tmp_path / "team.key"))
    portal = get_portal()
    with portal.jobs.session() as s:
        from services.notifications_teams import sync_team_channels

        sync_team_channels(s, portal.settings)
    (portal.settings.workspace_dir / "boom.py").write_text(FAILING)
    (portal.settings.workspace_dir / "fine.py").write_text(SUCCEEDING)
    ada, bob = User(name="ada", groups=("team-a",)), User(name="bob", groups=("team-b",))
    for who, script, notify in ((ada, "boom.py", "never"), (ada, "fine.py", ""), (bob, "boom.py", "")):
        run_to_end(portal, who, portal.jobs.submit(who, {"name": "run", "script": script, "notify": notify}))
    deliver_all(portal, rounds=5)
    [hook] = receiver.delivered()  # ada's failure (her own choice was never); not her success, not bob's team's
    assert hook.signed_with("team-secret")
    assert json.loads(hook.body)["text"].startswith("Job run of ada failed after")
    assert [n.event for n in portal.notifications.notifications(ada)] == ["succeeded"]  # her list: her choices
    with portal.jobs.session() as s:
        from services.store.notification_tables import NotificationChannel

        team_b = s.scalars(select(NotificationChannel).where(NotificationChannel.owner == "group:team-b")).one()
        assert not team_b.enabled and team_b.disabled_reason.startswith(
            "Not used: 10.0.0.9 is not on this portal's list of webhook hosts")
