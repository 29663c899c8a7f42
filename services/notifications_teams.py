"""Team channels: the admin's team_webhooks (group -> webhook) as channels owned by "group:NAME", which hear of
every failure of the group's members (services/notifications_outbox.py). Made again from the settings at each
start of the sender: a group no longer listed keeps its channel disabled (its past deliveries stay), one whose
host is not on the webhook allow-list is disabled saying so."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.config import Settings
from services.notifications_outbox import FAILURE_EVENTS, TEAM
from services.notifications_settings import WEBHOOK_KINDS, host_on_list, webhook_problem
from services.store.notification_tables import NotificationChannel
from services.store.orm import utcnow
from services.store.team_tables import Team

log = logging.getLogger(__name__)
GONE = "Not in PORTAL_TEAM_WEBHOOKS any more."


def kind_and_url(spec: str) -> tuple[str, str]:
    """'slack:https://…' -> ('slack', 'https://…'); without a kind, the host says it (Slack's, Teams'), else generic."""
    kind, _, rest = spec.partition(":")
    if kind in WEBHOOK_KINDS and rest:
        return kind, rest.strip()
    try:
        host = urlsplit(spec.strip()).hostname or ""
    except ValueError:  # not a URL ('https://[::1'): webhook_problem says so and the channel is not used
        host = ""
    if host == "hooks.slack.com":
        return "slack", spec.strip()
    if host_on_list(host, ["*.webhook.office.com", "*.logic.azure.com"]):
        return "teams", spec.strip()
    return "generic", spec.strip()


def team_secret(settings: Settings) -> str | None:
    if not settings.team_webhook_secret_file:
        return None
    try:
        return Path(settings.team_webhook_secret_file).read_text().strip() or None
    except OSError as exc:
        log.warning("team webhooks go unsigned: %s cannot be read (%s)", settings.team_webhook_secret_file, exc)
        return None


def sync_team_channels(s: Session, settings: Settings) -> None:
    teams = select(NotificationChannel).where(NotificationChannel.owner.startswith(TEAM))
    rows = {c.owner: c for c in s.scalars(teams)}
    secret = team_secret(settings)
    # The teams' own channels (the Teams page), then the settings', which win for a team in both.
    channels = dict(s.execute(select(Team.name, Team.notify_channel).where(Team.notify_channel.is_not(None))).all())
    for group, spec in (channels | settings.team_webhooks).items():
        kind, url = kind_and_url(spec)
        row = rows.pop(TEAM + group, None)
        if row is None:
            row = NotificationChannel(owner=TEAM + group, kind=kind, target=url, created_at=utcnow())
            s.add(row)
        problem = webhook_problem(url, settings.webhook_allowed_hosts)
        row.kind, row.target, row.secret, row.events = kind, url, secret, list(FAILURE_EVENTS)
        row.enabled, row.disabled_reason = problem is None, f"Not used: {problem}." if problem else None
        if problem:
            log.warning("the team webhook of %s is not used: %s", group, problem)
    for row in rows.values():
        row.enabled, row.disabled_reason = False, GONE
