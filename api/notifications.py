"""/api/v1/notifications: a user's notification settings (the default per-job choice, channels and their events),
the in-portal list with its unread count, "Send a test message", and an e-mail address's confirmation (the code its
mail carries, and that mail again). A webhook's secret is taken, never sent
back: a channel says only whether it has one (and a secret the portal made is in the answer that made it)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.common import endpoint, error, iso, path_int, query_int
from services.models import User
from services.notifications_confirm import TooManyMessages, send_again
from services.notifications_settings import CHANNEL_KINDS, EVENTS, ChannelView, NotificationService, NotificationView
from services.portal import get_portal


def service() -> NotificationService:
    return get_portal().notifications


def channel_json(c: ChannelView) -> dict[str, Any]:
    return {"id": c.id, "kind": c.kind, "target": c.target, "events": c.events, "enabled": c.enabled,
            "disabled_reason": c.disabled_reason, "last_result": c.last_result, "last_at": iso(c.last_at),
            "has_secret": c.has_secret, "confirmed": c.confirmed}


def notification_json(n: NotificationView) -> dict[str, Any]:
    return {"id": n.id, "event": n.event, "job_id": n.job_id, "sentence": n.sentence, "url": n.url,
            "created_at": iso(n.created_at), "read": n.read}


def settings_json(user: User, secrets: dict[int, str] | None = None) -> dict[str, Any]:
    pattern, rules = service().alerts(user)
    body: dict[str, Any] = {"default_notify": service().default_notify(user), "log_pattern": pattern,
                            "metric_rules": rules, "stuck_minutes": service().stuck_minutes(user),
                            "channels": [channel_json(c) for c in service().channels(user)],
                            "events": list(EVENTS), "kinds": list(CHANNEL_KINDS)}
    if secrets:  # made by the portal for new webhooks: shown this once
        body["new_secrets"] = {str(k): v for k, v in secrets.items()}
    return body


@endpoint()
def get_settings(request: Request, user: User) -> dict[str, Any]:
    return settings_json(user)


@endpoint(mutation=True)
def put_settings(request: Request, user: User, data: dict[str, Any]) -> dict[str, Any]:
    made = service().replace(user, data.get("default_notify"), data.get("channels"), data.get("log_pattern"),
                             data.get("metric_rules"), data.get("stuck_minutes"))
    return settings_json(user, made)


@endpoint()
def list_notifications(request: Request, user: User) -> dict[str, Any]:
    limit = query_int(request, "limit", 50, 1, 500)
    return {"unread": service().unread_count(user),
            "notifications": [notification_json(n) for n in service().notifications(user, limit)]}


@endpoint(mutation=True, body=False)
def mark_read(request: Request, user: User, data: dict[str, Any]) -> dict[str, Any]:
    return {"marked": service().mark_read(user), "unread": 0}


def too_many(exc: TooManyMessages) -> Response:
    response = error(429, str(exc))
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


@endpoint(mutation=True, body=False)
def send_test(request: Request, user: User, data: dict[str, Any]) -> Response:
    try:
        sent = service().send_test(user, path_int(request, "channel_id"))
    except TooManyMessages as exc:
        return too_many(exc)
    if sent == "confirm":
        message = ("The address is not confirmed yet: its confirmation is on its way again (nothing else is sent "
                   "there until the link in it is followed).")
    else:
        message = ("The test message is on its way; its result shows on the channel "
                   "(GET /api/v1/notifications/settings).")
    return JSONResponse({"queued": True, "sent": sent, "message": message}, status_code=202)


@endpoint(mutation=True)
def confirm_address(request: Request, user: User, data: dict[str, Any]) -> dict[str, Any]:
    """A wrong, expired or another user's code is a 422 (ValidationProblem, field "code") with its sentence."""
    confirmed = service().confirm(user, data.get("code"))  # type: ignore[arg-type] (checked there: not text)
    return channel_json(confirmed)


@endpoint(mutation=True, body=False)
def send_confirmation_again(request: Request, user: User, data: dict[str, Any]) -> Response:
    channel_id = path_int(request, "channel_id")
    try:
        address = send_again(service().sessions, service().settings, user.name, channel_id)
    except TooManyMessages as exc:
        return too_many(exc)
    channel = next((c for c in service().channels(user) if c.id == channel_id), None)
    if channel is None:  # removed in the moment since (another tab or client)
        return error(404, f"Channel {channel_id} was not found.")
    return JSONResponse({"queued": True, "channel": channel_json(channel),
                         "message": f"The confirmation is on its way to {address} again; POST its code to "
                                    "/api/v1/notifications/confirm (or open its link) to confirm the address."},
                        status_code=202)


ROUTES = [
    Route("/api/v1/notifications/settings", get_settings, methods=["GET"]),
    Route("/api/v1/notifications/settings", put_settings, methods=["PUT"]),
    Route("/api/v1/notifications", list_notifications, methods=["GET"]),
    Route("/api/v1/notifications/read", mark_read, methods=["POST"]),
    Route("/api/v1/notifications/channels/{channel_id}/test", send_test, methods=["POST"]),
    Route("/api/v1/notifications/confirm", confirm_address, methods=["POST"]),
    Route("/api/v1/notifications/channels/{channel_id}/confirmation", send_confirmation_again, methods=["POST"]),
]
