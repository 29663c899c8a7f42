"""The sender: a worker of the sync loop that carries out the outbox's deliveries (services/notifications_outbox.py)
with retries and exponential backoff.

A delivery is claimed (status "sending", committed) before anything leaves, and marked "sent" once the receiver
said yes. A portal killed in between leaves it "sending": the next start sends it again under the same
Idempotency-Key (and e-mail Message-ID), so a receiver that saw it already can tell, and one that never answered
gets it once. A channel whose message fails notify_max_attempts times is disabled, and its owner is told why in
the portal."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import threading
import time
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.notifications_messages import Message, render, webhook_body
from services.notifications_outbox import CHANNEL_DISABLED, FAILED, PENDING, SENDING, SENT, record
from services.notifications_settings import webhook_problem
from services.notifications_teams import sync_team_channels
from services.notifications_watch import WATCH_SECONDS, watch_running
from services.store.notification_tables import Notification, NotificationChannel, NotificationDelivery
from services.store.orm import utcnow

log = logging.getLogger(__name__)
BATCH = 20
SEND_TIMEOUT_SECONDS = 15.0
MAX_BACKOFF_SECONDS = 6 * 3600.0
SIGNATURE_HEADER = "X-Portal-Signature-256"


class DeliveryFailed(Exception):
    """A sentence saying why a message did not arrive (shown on the channel)."""


def signature(secret: str, body: bytes) -> str:
    """The value of the signature header: receivers compute the same HMAC-SHA256 over the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class NotificationSender:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], interval: float = 1.0):
        self.settings = settings
        self.sessions = sessions
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self.recover()
        with self.sessions.begin() as s:
            sync_team_channels(s, self.settings)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="portal-notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        watched = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - watched >= WATCH_SECONDS:
                    watched = time.monotonic()
                    self.watch()
                while self.deliver_due() and not self._stop.is_set():
                    pass
            except Exception:  # a locked database: the next round tries again
                log.exception("notification delivery failed")
            self._stop.wait(self.interval)

    def watch(self) -> int:
        """The alerts about what running jobs have not done (services/notifications_watch.py)."""
        with self.sessions.begin() as s:
            return watch_running(s, self.settings)

    def recover(self) -> int:
        """Deliveries a dead process had claimed: due again now (they go out under their own key)."""
        with self.sessions.begin() as s:
            result = s.execute(update(NotificationDelivery).where(NotificationDelivery.status == SENDING)
                               .values(status=PENDING, next_attempt_at=utcnow()))
            return int(getattr(result, "rowcount", 0) or 0)

    def deliver_due(self) -> int:
        """Send every delivery that is due (a batch at a time); returns how many were tried."""
        now = utcnow()
        with self.sessions.begin() as s:
            rows = s.scalars(select(NotificationDelivery).where(
                NotificationDelivery.status == PENDING, NotificationDelivery.next_attempt_at <= now)
                .order_by(NotificationDelivery.id).limit(BATCH)).all()
            for d in rows:
                d.status, d.attempts = SENDING, d.attempts + 1
            claimed = [d.id for d in rows]
        for delivery_id in claimed:
            self._deliver(delivery_id)
        return len(claimed)

    def _deliver(self, delivery_id: int) -> None:
        with self.sessions() as s:
            d = s.get(NotificationDelivery, delivery_id)
            if d is None:  # its channel was removed meanwhile (the deliveries go with it)
                return
            channel = s.get(NotificationChannel, d.channel_id)
            note = s.get_one(Notification, d.notification_id)
            key, attempts, payload = d.idempotency_key, d.attempts, dict(note.payload)
            kind, target, secret = (channel.kind, channel.target, channel.secret) if channel else ("", "", None)
            enabled = bool(channel and (channel.enabled or note.event == "test"))
        error = None
        if not enabled:
            error = "the channel is disabled"
        else:
            try:
                result = self.send(kind, target, secret, render(payload, self.settings.public_url), key)
            except DeliveryFailed as exc:
                error = str(exc)
            except Exception as exc:  # a claim must not stay "sending" until the next start: retried like the rest
                log.exception("sending notification %s failed", key)
                error = f"the message could not be sent ({type(exc).__name__})"
        with self.sessions.begin() as s:
            found = s.get(NotificationDelivery, delivery_id)
            if found is None:
                return
            d, channel, now = found, s.get(NotificationChannel, found.channel_id), utcnow()
            if error is None:
                d.status, d.sent_at, d.last_error = SENT, now, None
                if channel is not None:
                    channel.last_result, channel.last_at = f"Delivered: {result}", now
                return
            d.last_error = error
            if not enabled:
                d.status = FAILED
                return
            if attempts >= self.settings.notify_max_attempts:
                d.status = FAILED
                if channel is not None:
                    self._disable(s, channel, attempts, error)
                return
            wait = min(self.settings.notify_retry_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
            d.status, d.next_attempt_at = PENDING, now + timedelta(seconds=wait)
            if channel is not None:
                channel.last_result, channel.last_at = f"Failed ({error}); trying again in {wait:g} s", now
        log.warning("notification %s to channel %s failed (attempt %s): %s", d.notification_id, d.channel_id,
                    attempts, error)

    def _disable(self, s: Session, channel: NotificationChannel, attempts: int, error: str) -> None:
        channel.enabled = False
        name = f"{channel.kind} ({channel.target})" if channel.kind == "email" else f"{channel.kind} webhook"
        channel.disabled_reason = (f"Disabled after {attempts} failed attempts to deliver: {error}. Fix it, then "
                                   "enable the channel again.")
        channel.last_result, channel.last_at = f"Failed ({error}); the channel is now disabled", utcnow()
        record(s, channel.owner, CHANNEL_DISABLED, {"event": CHANNEL_DISABLED, "channel": name, "attempts": attempts,
                                                    "error": error, "path": "/notifications"}, channels=[])
        # What still waits for it is not sent hours late once it is enabled again: the in-portal list has it.
        s.execute(update(NotificationDelivery).where(NotificationDelivery.channel_id == channel.id,
                                                     NotificationDelivery.status == PENDING).values(
            status=FAILED, last_error="the channel was disabled"))

    # Sending ----------------------------------------------------------------------------------------
    def send(self, kind: str, target: str, secret: str | None, msg: Message, key: str) -> str:
        """Deliver one message; returns what the receiver answered, or raises DeliveryFailed with a sentence."""
        if kind == "email":
            return self.send_email(target, msg, key)
        return self.send_webhook(kind, target, secret, msg, key)

    def send_webhook(self, kind: str, url: str, secret: str | None, msg: Message, key: str) -> str:
        problem = webhook_problem(url, self.settings.webhook_allowed_hosts)  # the admin may have changed the list
        if problem:
            raise DeliveryFailed(problem)
        body = json.dumps(webhook_body(kind, msg), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key, "X-Portal-Event": msg.event,
                   "User-Agent": "ml-job-portal"}
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret, body)
        try:
            # No redirects: a host on the allow-list must not hand the request on to one that is not.
            response = httpx.post(url, content=body, headers=headers, timeout=SEND_TIMEOUT_SECONDS,
                                  follow_redirects=False)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"the webhook could not be reached ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"the webhook answered HTTP {response.status_code}")
        return f"HTTP {response.status_code}"

    def send_email(self, to: str, msg: Message, key: str) -> str:
        st = self.settings
        if not st.smtp_host:
            raise DeliveryFailed("this portal has no SMTP server set up (PORTAL_SMTP_HOST)")
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = st.smtp_from, to, msg.subject
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = f"<{key}@ml-job-portal>"  # the idempotency key: mail clients drop a repeated id
        mail["Idempotency-Key"] = key
        mail.set_content(msg.text)
        mail.add_alternative(msg.html, subtype="html")
        try:
            with smtplib.SMTP(st.smtp_host, st.smtp_port, timeout=SEND_TIMEOUT_SECONDS) as smtp:
                if st.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if st.smtp_user:
                    smtp.login(st.smtp_user, self._smtp_password())
                smtp.send_message(mail)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(f"the SMTP server refused or could not be reached ({type(exc).__name__}: "
                                 f"{str(exc)[:200]})") from None
        return f"accepted by {st.smtp_host}"

    def _smtp_password(self) -> str:
        path = self.settings.smtp_password_file
        if not path:
            return ""
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise DeliveryFailed(f"the SMTP password file could not be read ({exc.strerror})") from None
