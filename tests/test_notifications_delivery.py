"""A slow receiver holds up no one else: the sender serves channels side by side, each delivery within a wall-clock
deadline (PORTAL_NOTIFY_SEND_SECONDS), and a delivery cut off there is sent again under the same Idempotency-Key.
Real receivers on 127.0.0.1: one answering a byte a second (httpx's per-read timeout never trips on it)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import run_to_end, wait_until
from tests.notification_receivers import TricklingReceiver, WebhookReceiver

DEADLINE = 3


@pytest.fixture
def slow_env(monkeypatch: pytest.MonkeyPatch, data_dir) -> None:
    monkeypatch.setenv("PORTAL_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("PORTAL_NOTIFY_SEND_SECONDS", str(DEADLINE))
    monkeypatch.setenv("PORTAL_NOTIFY_RETRY_SECONDS", "0.5")
    monkeypatch.setenv("PORTAL_NOTIFY_MAX_ATTEMPTS", "5")


def test_a_trickling_receiver_delays_no_other_channel_and_is_cut_off_at_the_deadline(
        slow_env, portal, user, workspace_script) -> None:
    with TricklingReceiver() as slow, WebhookReceiver() as fast:
        notes = portal.notifications
        slow_channel, _ = notes.add_channel(user, "generic", slow.url)  # the older channel: its message is first
        notes.add_channel(user, "slack", fast.url)
        workspace_script("boom.py", "import sys\nsys.exit(3)\n")
        run_to_end(portal, user, portal.jobs.submit(user, {"name": "boom", "script": "boom.py", "epochs": 1}))

        sender = portal.sync.workers[0]
        started = time.monotonic()
        sender.start()
        try:
            wait_until(fast.delivered, timeout=DEADLINE + 30)
            # Before: one thread, the slow receiver's 89-byte answer first, a byte a second: well over a minute.
            assert fast.delivered()[0].at - started < DEADLINE - 0.5
            assert "boom" in fast.delivered()[0].body.decode()

            def cut_off() -> str | None:
                [channel] = [c for c in notes.channels(user) if c.id == slow_channel.id]
                return channel.last_result if channel.last_result and "within" in channel.last_result else None

            result = wait_until(cut_off, timeout=DEADLINE + 30)
            assert time.monotonic() - started < DEADLINE + 4
            assert result.startswith(f"Failed (the webhook did not answer within {DEADLINE} s); trying again")
            wait_until(lambda: len(slow.keys) >= 2, timeout=DEADLINE + 30)
            assert slow.keys[0] == slow.keys[1] and slow.keys[0]  # the same message again, as the receiver can tell
            assert len(fast.requests) == 1  # the fast channel got its message once
        finally:
            sender.stop()
