"""A user's notification settings: the default per-job choice, the channels (an e-mail address; Slack, Teams,
Mattermost or generic JSON webhooks by URL, each with its own signing secret) and which events go where; the
in-portal list of notifications; "Send a test message".

Every check happens at save time with a sentence per field: a webhook host outside the admin's allow-list, an
e-mail address on a portal without SMTP. Secrets are kept, never given back (only whether there is one)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.models import NotFound, User, ValidationProblem
from services.notifications_alerts import ALERT_EVENTS, parse_rules, pattern_problem
from services.notifications_confirm import TooManyMessages, check_rate, confirm, needs_confirming, send_confirmation
from services.notifications_messages import render
from services.notifications_outbox import (
    CHANNEL_DISABLED,
    END_EVENTS,
    NOTIFY_CHOICES,
    QUIET_EVENTS,
    STARTED,
    TEST,
    default_notify,
    record,
)
from services.notifications_watch import GPU_IDLE, STUCK
from services.store.notification_tables import Notification, NotificationChannel, NotificationSettings
from services.store.orm import utcnow

WEBHOOK_KINDS = ("slack", "teams", "mattermost", "generic")
CHANNEL_KINDS = ("email", *WEBHOOK_KINDS)
EVENTS = (*END_EVENTS, STARTED, *ALERT_EVENTS, STUCK, GPU_IDLE)
EVENT_LABELS = {"succeeded": "Succeeded", "failed": "Failed", "stopped": "Stopped", "max_runtime": "Hit max runtime",
                "started": "Started after waiting in the queue", "log_match": "Log line matches my pattern",
                "metric_threshold": "Metric crosses my rules", "stuck": "No log output (may be stuck)",
                "gpu_idle": "GPUs idle"}
MAX_STUCK_MINUTES = 7 * 24 * 60
CHOICE_LABELS = {"end": "When it ends", "failure": "Only if it fails", "never": "Never"}
MAX_CHANNELS = 20
EMAIL_RE = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")


@dataclass(frozen=True)
class ChannelView:
    id: int
    kind: str
    target: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    last_result: str | None
    last_at: datetime | None
    has_secret: bool
    confirmed: bool  # an e-mail address whose owner followed the link sent there (a webhook always is)


@dataclass(frozen=True)
class NotificationView:
    id: int
    event: str
    job_id: int | None
    sentence: str
    url: str
    created_at: datetime
    read: bool


def host_on_list(host: str, patterns: list[str]) -> bool:
    """Exact names, or '*.example.com' for any subdomain (not example.com itself)."""
    host = host.lower().rstrip(".")
    for pattern in (p.strip().lower() for p in patterns):
        if pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]):
            return True
    return False


def webhook_problem(url: str, allowed: list[str]) -> str | None:
    """Why a webhook URL is refused, or None. Checked at save time and again before each send."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is not one: 'https://host:99999/')
    except ValueError:  # 'https://[::1/x': an unclosed IPv6 literal
        return "enter the webhook's full URL, starting with https://"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "enter the webhook's full URL, starting with https://"
    if parts.username or parts.password:
        return "a webhook URL must not hold a user name or password"
    if not host_on_list(parts.hostname, allowed):
        listed = ", ".join(allowed) if allowed else "none"
        return (f"{parts.hostname} is not on this portal's list of webhook hosts ({listed}); ask your admin to add "
                "it (PORTAL_WEBHOOK_ALLOWED_HOSTS)")
    return None


def events_problem(events: Any) -> str | None:
    if not isinstance(events, list) or not all(isinstance(e, str) and e in EVENTS for e in events):
        return f"events are some of {', '.join(EVENTS)}"
    return None


def shown_target(kind: str, target: str) -> str:
    """A webhook's URL is a credential of its own (Slack's holds its token): shown as its host and last characters."""
    if kind == "email":
        return target
    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.netloc}/…{target[-4:]}"


def to_channel_view(c: NotificationChannel) -> ChannelView:
    return ChannelView(c.id, c.kind, shown_target(c.kind, c.target), list(c.events or []), c.enabled,
                       c.disabled_reason, c.last_result, c.last_at, bool(c.secret), not needs_confirming(c))


class NotificationService:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]):
        self.settings = settings
        self.sessions = sessions

    # Settings -------------------------------------------------------------------------------------
    def default_notify(self, user: User) -> str:
        with self.sessions() as s:
            return default_notify(s, user.name)

    def set_default_notify(self, user: User, choice: str) -> None:
        if choice not in NOTIFY_CHOICES:
            raise ValidationProblem({"default_notify": "choose 'end', 'failure' or 'never'"})
        with self.sessions.begin() as s:
            self._mine(s, user).default_notify = choice

    def _mine(self, s: Session, user: User) -> NotificationSettings:
        row = s.get(NotificationSettings, user.name)
        if row is None:
            row = NotificationSettings(owner=user.name, default_notify=default_notify(s, user.name))
            s.add(row)
        row.updated_at = utcnow()
        return row

    def alerts(self, user: User) -> tuple[str, str]:
        """The user's log pattern and metric rules ("" when off)."""
        with self.sessions() as s:
            row = s.get(NotificationSettings, user.name)
            return (row.log_pattern or "", row.metric_rules or "") if row else ("", "")

    def stuck_minutes(self, user: User) -> float:
        """After how many minutes without log output a running job "may be stuck" (0: never said)."""
        with self.sessions() as s:
            row = s.get(NotificationSettings, user.name)
            return float(row.stuck_minutes or 0) if row else 0.0

    @staticmethod
    def alert_problems(log_pattern: Any, metric_rules: Any, stuck_minutes: Any = None) -> dict[str, str]:
        problems: dict[str, str] = {}
        if stuck_minutes is not None and (isinstance(stuck_minutes, bool) or not isinstance(stuck_minutes, int | float)
                                          or not 0 <= stuck_minutes <= MAX_STUCK_MINUTES):
            problems["stuck_minutes"] = f"a number of minutes from 0 (off) to {MAX_STUCK_MINUTES:,}"
        if log_pattern is not None:
            problem = "a pattern is text" if not isinstance(log_pattern, str) else pattern_problem(log_pattern)
            if problem and (not isinstance(log_pattern, str) or log_pattern.strip()):
                problems["log_pattern"] = problem
        if metric_rules is not None:
            if not isinstance(metric_rules, str) or len(metric_rules) > 500:
                problems["metric_rules"] = "rules are text of at most 500 characters, e.g. 'loss > 10, loss is nan'"
            else:
                try:
                    parse_rules(metric_rules)
                except ValueError as exc:
                    problems["metric_rules"] = str(exc)
        return problems

    def set_alerts(self, user: User, log_pattern: str | None = None, metric_rules: str | None = None,
                   stuck_minutes: float | None = None) -> None:
        """Any of them; an empty one (0 minutes) turns its alert off."""
        problems = self.alert_problems(log_pattern, metric_rules, stuck_minutes)
        if problems:
            raise ValidationProblem(problems)
        with self.sessions.begin() as s:
            row = self._mine(s, user)
            if log_pattern is not None:
                row.log_pattern = log_pattern.strip() or None
            if metric_rules is not None:
                row.metric_rules = metric_rules.strip() or None
            if stuck_minutes is not None:
                row.stuck_minutes = float(stuck_minutes) or None

    def channels(self, user: User) -> list[ChannelView]:
        with self.sessions() as s:
            rows = s.scalars(select(NotificationChannel).where(NotificationChannel.owner == user.name)
                             .order_by(NotificationChannel.id))
            return [to_channel_view(c) for c in rows]

    def channel_problems(self, kind: Any, target: Any, events: Any, secret: Any = None) -> dict[str, str]:
        problems: dict[str, str] = {}
        if kind not in CHANNEL_KINDS:
            problems["kind"] = f"choose one of {', '.join(CHANNEL_KINDS)}"
        if not isinstance(target, str) or not target.strip() or len(target) > 2000:
            problems["target"] = "enter an e-mail address" if kind == "email" else "enter the webhook's URL"
        elif kind == "email":
            if not EMAIL_RE.match(target.strip()):
                problems["target"] = f"'{target.strip()}' is not an e-mail address"
            elif not self.settings.smtp_host:
                problems["target"] = ("this portal sends no e-mail (no SMTP server is set up); ask your admin "
                                      "(PORTAL_SMTP_HOST), or use a webhook")
        elif kind in WEBHOOK_KINDS:
            problem = webhook_problem(target.strip(), self.settings.webhook_allowed_hosts)
            if problem:
                problems["target"] = problem
        if events_problem(events):
            problems["events"] = events_problem(events)  # type: ignore[assignment]
        if secret is not None and (not isinstance(secret, str) or len(secret) > 200):
            problems["secret"] = "a secret is text of at most 200 characters"  # noqa: S105 (a sentence)
        return problems

    def add_channel(self, user: User, kind: str, target: str, events: list[str] | None = None,
                    secret: str | None = None) -> tuple[ChannelView, str | None]:
        """The new channel, and the webhook secret when the portal made it (shown once, then never again). A new
        e-mail address gets its confirmation and nothing else until its owner follows the link in it."""
        events = list(EVENTS) if events is None else events
        problems = self.channel_problems(kind, target, events, secret)
        if problems:
            raise ValidationProblem(problems)
        made = None
        if kind in WEBHOOK_KINDS and not secret:
            secret = made = secrets.token_urlsafe(32)
        with self.sessions.begin() as s:
            count = s.scalar(select(func.count()).where(NotificationChannel.owner == user.name)) or 0
            if count >= MAX_CHANNELS:
                raise ValidationProblem({"target": f"you have {MAX_CHANNELS} channels already; remove one first"})
            now = utcnow()
            row = NotificationChannel(owner=user.name, kind=kind, target=target.strip(), secret=secret or None,
                                      events=list(dict.fromkeys(events)), enabled=True, created_at=now,
                                      confirmed_at=None if kind == "email" else now)
            s.add(row)
            s.flush()
            if kind == "email":
                try:
                    send_confirmation(s, self.settings, row)
                except TooManyMessages as exc:  # the whole transaction goes: no channel without its confirmation
                    raise ValidationProblem({"target": str(exc)}) from None
            return to_channel_view(row), made

    def _own(self, s: Session, user: User, channel_id: int) -> NotificationChannel:
        row = s.get(NotificationChannel, channel_id) if 0 < channel_id < 2**62 else None
        if row is None or row.owner != user.name:
            raise NotFound(f"Channel {channel_id} was not found.")
        return row

    def update_channel(self, user: User, channel_id: int, events: list[str] | None = None,
                       enabled: bool | None = None) -> ChannelView:
        with self.sessions.begin() as s:
            row = self._own(s, user, channel_id)
            if events is not None:
                problem = events_problem(events)
                if problem:
                    raise ValidationProblem({"events": problem})
                row.events = list(dict.fromkeys(events))
            if enabled is not None:
                row.enabled = enabled
                if enabled:
                    row.disabled_reason = None
            return to_channel_view(row)

    def replace(self, user: User, default: Any = None, channels: Any = None, log_pattern: Any = None,
                metric_rules: Any = None, stuck_minutes: Any = None) -> dict[int, str]:
        """The API's PUT: the default choice and the whole list of channels at once. A listed id keeps its channel
        (its events and enabled may change, its kind and target not); one without an id is added; one not listed is
        removed. Every problem is found before anything changes. Returns the secrets the portal made for new
        webhooks, by channel id."""
        problems = self.alert_problems(log_pattern, metric_rules, stuck_minutes)
        if default is not None and default not in NOTIFY_CHOICES:
            problems["default_notify"] = "choose 'end', 'failure' or 'never'"
        if channels is not None and (not isinstance(channels, list) or len(channels) > MAX_CHANNELS
                                     or not all(isinstance(c, dict) for c in channels)):
            problems["channels"] = f"a list of at most {MAX_CHANNELS} channel objects"
        mine = {c.id: c for c in self.channels(user)}
        confirmations = 0  # each new address sends one: together within the hourly limit, or none is written
        for i, c in enumerate(channels if "channels" not in problems and channels else []):
            if "enabled" in c and not isinstance(c["enabled"], bool):
                problems[f"channels[{i}].enabled"] = "enabled is true or false"
            if c.get("id") is not None:
                if not isinstance(c["id"], int) or isinstance(c["id"], bool) or c["id"] not in mine:
                    problems[f"channels[{i}].id"] = f"you have no channel {c['id']}"
                elif "events" in c and events_problem(c["events"]):
                    problems[f"channels[{i}].events"] = events_problem(c["events"])  # type: ignore[assignment]
                continue
            found = self.channel_problems(c.get("kind"), c.get("target"), c.get("events", list(EVENTS)),
                                          c.get("secret"))
            if not found and c.get("kind") == "email":  # its confirmation must be allowed to go
                try:
                    with self.sessions() as s:
                        check_rate(s, self.settings, user.name, also=confirmations)
                    confirmations += 1
                except TooManyMessages as exc:
                    found["target"] = str(exc)
            problems |= {f"channels[{i}].{k}": v for k, v in found.items()}
        if problems:
            raise ValidationProblem(problems)
        if default is not None:
            self.set_default_notify(user, default)
        if log_pattern is not None or metric_rules is not None or stuck_minutes is not None:
            self.set_alerts(user, log_pattern, metric_rules, stuck_minutes)
        if channels is None:
            return {}
        kept = {c["id"] for c in channels if c.get("id") is not None}
        for channel_id in set(mine) - kept:
            self.remove_channel(user, channel_id)
        made: dict[int, str] = {}
        for c in channels:
            if c.get("id") is not None:
                self.update_channel(user, c["id"], c.get("events"), c.get("enabled"))
            else:
                view, secret = self.add_channel(user, c["kind"], c["target"], c.get("events"), c.get("secret"))
                if secret:
                    made[view.id] = secret
        return made

    def remove_channel(self, user: User, channel_id: int) -> None:
        with self.sessions.begin() as s:
            s.delete(self._own(s, user, channel_id))

    def send_test(self, user: User, channel_id: int) -> str:
        """A test message to one channel, delivered by the sender like any other (its result shows on the channel);
        to an address not confirmed yet, its confirmation again instead. Returns which ("test" or "confirm").
        Raises TooManyMessages past the hourly limit."""
        with self.sessions.begin() as s:
            row = self._own(s, user, channel_id)
            if needs_confirming(row):
                send_confirmation(s, self.settings, row)
                return "confirm"
            check_rate(s, self.settings, user.name)
            record(s, user.name, TEST, {"event": TEST, "owner": user.name, "path": "/notifications"}, channels=[row],
                   read=True)
            row.last_result, row.last_at = "Test message queued", utcnow()
            return TEST

    def confirm(self, user: User, code: str) -> ChannelView:
        """Confirms the address of the link's (or pasted code's) channel; a ValidationProblem says why not."""
        if not isinstance(code, str) or not code.strip() or len(code) > 1000:
            raise ValidationProblem({"code": "paste the code from the confirmation message"})
        with self.sessions.begin() as s:
            return to_channel_view(confirm(s, self.settings, user.name, code))

    # The in-portal list ------------------------------------------------------------------------------
    def notifications(self, user: User, limit: int = 50) -> list[NotificationView]:
        with self.sessions() as s:
            rows = s.scalars(select(Notification).where(Notification.owner == user.name,
                                                        Notification.event.notin_(QUIET_EVENTS))
                             .order_by(Notification.id.desc()).limit(limit)).all()
        out = []
        for n in rows:
            msg = render(n.payload, "")
            out.append(NotificationView(n.id, n.event, n.job_id, msg.sentence, msg.url, n.created_at,
                                        n.read_at is not None))
        return out

    def unread_count(self, user: User) -> int:
        """Every page's navigation asks: counted from ix_notifications_unread alone (test and confirmation messages
        are born read), never by loading the rows."""
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(Notification).where(
                Notification.owner == user.name, Notification.read_at.is_(None))) or 0

    def mark_read(self, user: User) -> int:
        with self.sessions.begin() as s:
            result = s.execute(update(Notification).where(
                Notification.owner == user.name, Notification.read_at.is_(None)).values(read_at=utcnow()))
            return int(getattr(result, "rowcount", 0) or 0)


__all__ = ["CHANNEL_DISABLED", "ChannelView", "NotificationService", "NotificationView", "host_on_list"]
