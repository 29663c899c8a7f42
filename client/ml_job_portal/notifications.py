"""Notifications for notebooks: your settings (the default per-job choice and channels), the in-portal list, a
test message, and confirming an e-mail address with the code its confirmation mail carries. Per job, pass
``notify="end" | "failure" | "never"`` to ``submit_job``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class NotificationsMixin:
    """JobClient's notification calls (the Notifications page)."""

    _json: Any

    def notification_settings(self) -> dict[str, Any]:
        """``{"default_notify", "channels": [{"id", "kind", "target", "events", "enabled", "disabled_reason",
        "last_result", "last_at", "has_secret", "confirmed"}], "events", "kinds"}``. Webhook secrets are never sent
        back. An e-mail channel gets nothing but its confirmation until ``confirmed``."""
        return self._json("GET", "notifications/settings")

    def set_notification_settings(
        self, *, default_notify: str | None = None, channels: Sequence[Mapping[str, Any]] | None = None,
        log_pattern: str | None = None, metric_rules: str | None = None, stuck_minutes: float | None = None,
    ) -> dict[str, Any]:
        """Change the default per-job choice (``"end"``, ``"failure"``, ``"never"``) and/or replace the list of
        channels: ``{"kind": "slack", "target": URL, "events": [...], "secret": ...}`` adds one, ``{"id": 3,
        "events": [...], "enabled": True}`` keeps (and changes) channel 3, a channel left out is removed. The
        answer's ``new_secrets`` holds the secrets the portal made for new webhooks, this once. ``log_pattern``
        (``"CUDA out of memory|nan"``) and ``metric_rules`` (``"loss > 10, loss is nan"``) turn on alerts while a
        job runs, each said once per job; ``""`` turns one off. ``stuck_minutes``: a running job without log
        output this long "may be stuck" (``0``: off)."""
        body: dict[str, Any] = {}
        if log_pattern is not None:
            body["log_pattern"] = log_pattern
        if metric_rules is not None:
            body["metric_rules"] = metric_rules
        if stuck_minutes is not None:
            body["stuck_minutes"] = stuck_minutes
        if default_notify is not None:
            body["default_notify"] = default_notify
        if channels is not None:
            body["channels"] = [dict(c) for c in channels]
        return self._json("PUT", "notifications/settings", json_body=body)

    def add_notification_channel(self, kind: str, target: str, events: Sequence[str] | None = None,
                                 secret: str | None = None) -> dict[str, Any]:
        """Add one channel, keeping the others; returns the settings (with ``new_secrets`` if one was made)."""
        current = [{"id": c["id"]} for c in self.notification_settings()["channels"]]
        new: dict[str, Any] = {"kind": kind, "target": target}
        if events is not None:
            new["events"] = list(events)
        if secret is not None:
            new["secret"] = secret
        return self.set_notification_settings(channels=[*current, new])

    def notifications(self, limit: int = 50) -> dict[str, Any]:
        """The in-portal list, newest first: ``{"unread", "notifications": [{"id", "event", "job_id", "sentence",
        "url", "created_at", "read"}]}``."""
        return self._json("GET", "notifications", params={"limit": limit})

    def mark_notifications_read(self) -> int:
        """Mark every notification read; returns how many were unread."""
        return self._json("POST", "notifications/read")["marked"]

    def send_test_notification(self, channel_id: int) -> None:
        """Queue a test message to one of your channels; its result shows in ``notification_settings()``."""
        self._json("POST", f"notifications/channels/{int(channel_id)}/test")

    def confirm_notification_address(self, code: str) -> dict[str, Any]:
        """Confirm one of your e-mail channels with the code its confirmation mail carries (the ``confirm=`` of its
        link, good for 24 hours); returns the channel, now ``confirmed``. A wrong, expired or another user's code
        raises PortalError (422) with the portal's sentence."""
        return self._json("POST", "notifications/confirm", json_body={"code": code})

    def resend_confirmation(self, channel_id: int) -> dict[str, Any]:
        """Send an unconfirmed e-mail channel its confirmation again: ``{"queued", "channel", "message"}``. Counts
        towards the hourly limit of test and confirmation messages (past it: PortalError 429, saying when)."""
        return self._json("POST", f"notifications/channels/{int(channel_id)}/confirmation")
