"""The sender: a worker of the sync loop that carries out the outbox's deliveries (services/notifications_outbox.py)
with retries and exponential backoff.

A delivery is claimed (status "sending", committed) before anything leaves, and marked "sent" once the receiver
said yes. A portal killed in between leaves it "sending": the next start sends it again under the same
Idempotency-Key (and e-mail Message-ID), so a receiver that saw it already can tell, and one that never answered
gets it once. A channel whose message fails notify_max_attempts times is disabled, and its owner is told why in
the portal.

Channels are served side by side by a small pool (notify_parallel), one message per channel at a time, each within
notify_send_seconds of wall clock (services/notifications_transport.py): a receiver that trickles its answer holds
its own channel's messages for that long, no one else's."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.notifications_messages import Message, render, webhook_body
from services.notifications_outbox import CHANNEL_DISABLED, CONFIRM, FAILED, PENDING, SENDING, SENT, TEST, record
from services.notifications_settings import webhook_problem
from services.notifications_teams import sync_team_channels
from services.notifications_transport import SIGNATURE_HEADER, DeliveryFailed, post_json, send_email, signature
from services.notifications_watch import WATCH_SECONDS, watch_running
from services.store.notification_tables import Notification, NotificationChannel, NotificationDelivery
from services.store.orm import utcnow

log = logging.getLogger(__name__)
BATCH = 20  # messages one channel's turn sends before the others' come first again
CLAIM_SLACK_SECONDS = 5.0  # past a delivery's deadline, before its claim counts as its sender's death
RECOVER_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 6 * 3600.0


class NotificationSender:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], interval: float = 1.0):
        self.settings = settings
        self.sessions = sessions
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()  # a channel's turn ended: what waits for it can go now
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._busy: set[int] = set()  # channels being served now (one turn per channel at a time)
        self._turns: set[Future[int]] = set()

    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self.recover()
        with self.sessions.begin() as s:
            sync_team_channels(s, self.settings)
        self._stop.clear()
        with self._lock:
            self._busy.clear()  # turns a stop cancelled before they ran
        self._thread = threading.Thread(target=self._run, name="portal-notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops taking new messages; one in flight ends within its deadline (a later start sends it again if not)."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        with self._lock:
            pool, turns, self._pool = self._pool, set(self._turns), None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            wait(turns, timeout=self.settings.notify_send_seconds + 1)

    def _run(self) -> None:
        watched = recovered = time.monotonic()
        while not self._stop.is_set():
            self._wake.clear()
            try:
                if time.monotonic() - watched >= WATCH_SECONDS:
                    watched = time.monotonic()
                    self.watch()
                if time.monotonic() - recovered >= RECOVER_SECONDS:  # a claim of a process that died since
                    recovered = time.monotonic()
                    self.recover()
                self.deliver_due(wait_for_them=False)
            except Exception:  # a locked database: the next round tries again
                log.exception("notification delivery failed")
            self._wake.wait(self.interval)

    def watch(self) -> int:
        """The alerts about what running jobs have not done (services/notifications_watch.py)."""
        with self.sessions.begin() as s:
            return watch_running(s, self.settings)

    def recover(self) -> int:
        """Deliveries a dead process had claimed: due again now (they go out under their own key). Only claims older
        than a delivery's deadline: a younger one may still be in flight in another replica (one that led until a
        moment ago), and sending it here as well would be the double message the claim is there to prevent."""
        now = utcnow()
        stale = now - timedelta(seconds=self.settings.notify_send_seconds + CLAIM_SLACK_SECONDS)
        with self.sessions.begin() as s:
            result = s.execute(update(NotificationDelivery).where(
                NotificationDelivery.status == SENDING, NotificationDelivery.next_attempt_at <= stale)
                .values(status=PENDING, next_attempt_at=now))
            return int(getattr(result, "rowcount", 0) or 0)

    def deliver_due(self, wait_for_them: bool = True) -> int:
        """Start a turn for each channel with a message due that is not being served already, as many as the pool
        has room for; with `wait_for_them`, wait for those turns and return how many messages they tried."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.settings.notify_parallel, thread_name_prefix="portal-notify-send")
            room, busy = self.settings.notify_parallel - len(self._busy), set(self._busy)
        if room <= 0:
            return 0
        with self.sessions() as s:
            due = select(NotificationDelivery.channel_id).where(
                NotificationDelivery.status == PENDING, NotificationDelivery.next_attempt_at <= utcnow())
            if busy:
                due = due.where(NotificationDelivery.channel_id.notin_(busy))
            channels = list(s.scalars(due.group_by(NotificationDelivery.channel_id)
                                      .order_by(func.min(NotificationDelivery.id)).limit(room)))
        turns = []
        with self._lock:
            for channel_id in channels:
                if self._pool is None or channel_id in self._busy:
                    continue
                self._busy.add(channel_id)
                turn = self._pool.submit(self._turn, channel_id)
                self._turns.add(turn)
                turn.add_done_callback(self._turns.discard)
                turns.append(turn)
        if not wait_for_them:
            return len(turns)
        return sum(t.result() for t in turns)

    def _turn(self, channel_id: int) -> int:
        """One channel's due messages, oldest first, each claimed just before it is sent."""
        sent = 0
        try:
            while sent < BATCH and not self._stop.is_set():
                delivery_id = self._claim(channel_id)
                if delivery_id is None:
                    break
                self._deliver(delivery_id)
                sent += 1
            return sent
        finally:
            with self._lock:
                self._busy.discard(channel_id)
            self._wake.set()

    def _claim(self, channel_id: int) -> int | None:
        """Marks the channel's oldest due delivery "sending" (committed before anything leaves); None when none is
        due. The update is conditional: a second sender (a replica that still thinks it leads) cannot claim it too."""
        with self.sessions.begin() as s:
            for delivery_id in s.scalars(select(NotificationDelivery.id).where(
                    NotificationDelivery.channel_id == channel_id, NotificationDelivery.status == PENDING,
                    NotificationDelivery.next_attempt_at <= utcnow()).order_by(NotificationDelivery.id).limit(3)):
                # While "sending", next_attempt_at says when it was claimed (recover() goes by it).
                claimed = s.execute(update(NotificationDelivery).where(
                    NotificationDelivery.id == delivery_id, NotificationDelivery.status == PENDING).values(
                    status=SENDING, attempts=NotificationDelivery.attempts + 1, next_attempt_at=utcnow()))
                if getattr(claimed, "rowcount", 0) == 1:
                    return delivery_id
        return None

    def _deliver(self, delivery_id: int) -> None:
        with self.sessions() as s:
            d = s.get(NotificationDelivery, delivery_id)
            if d is None:  # its channel was removed meanwhile (the deliveries go with it)
                return
            channel = s.get(NotificationChannel, d.channel_id)
            note = s.get_one(Notification, d.notification_id)
            key, attempts, payload = d.idempotency_key, d.attempts, dict(note.payload)
            kind, target, secret = (channel.kind, channel.target, channel.secret) if channel else ("", "", None)
            refused = None  # a message that must not go at all (not retried, not counted against the channel)
            if not (channel and (channel.enabled or note.event in (TEST, CONFIRM))):
                refused = "the channel is disabled"
            elif channel.kind == "email" and channel.confirmed_at is None and note.event != CONFIRM:
                refused = "the address is not confirmed yet"  # checked again here: it may have been recorded before
        error = refused
        if refused is None:
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
                    channel.last_result = (f"Confirmation delivered ({result}): open the link in it"
                                           if payload["event"] == CONFIRM else f"Delivered: {result}")
                    channel.last_at = now
                return
            d.last_error = error
            if refused is not None:
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
            return send_email(self.settings, target, msg, key, self.settings.notify_send_seconds)
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
        status = post_json(url, body, headers, self.settings.notify_send_seconds)
        if not 200 <= status < 300:
            raise DeliveryFailed(f"the webhook answered HTTP {status}")
        return f"HTTP {status}"
