"""The portal's front door, in front of everything the process serves (pages, their WebSocket, static files,
downloads, the REST API): a pure ASGI middleware wired into ``st.App`` in portal_app.py.

1. **Host allow-list** (``PORTAL_ALLOWED_HOSTS``). A page on ``http://attacker.example:8501/`` whose name resolves
   to 127.0.0.1 (DNS rebinding) is, to the browser, the same origin as the portal it reaches, so no Origin check
   can tell them apart: only the Host header it sends can. Any Host not on the list gets a 400 and nothing runs;
   a WebSocket is refused before it is accepted. ``GET /healthz`` is exempt: container and kubelet probes reach the
   portal by its loopback or pod address, and the route only says whether the portal is up (no user data, no login,
   no change).
2. **Browser protections** on every response: the pages may not be framed (clickjacking), a content security policy
   that lets only the portal's own scripts run and loads no image from another host (a tracker in a Markdown note),
   no MIME sniffing, no Referer (it would carry job ids and signed download links) to other sites.
3. **Request size** (``PORTAL_MAX_REQUEST_MB``): a body over the limit is refused while it streams: at once when
   Content-Length says so, otherwise as soon as the bytes read pass it, without reading (or keeping) the rest.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import streamlit

from services.config import Settings, get_settings

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Probes and Prometheus reach a pod by its IP. /metrics still needs a bearer token or a signed cookie, which a
# DNS-rebound page cannot send, so the host check adds nothing there.
EXEMPT_FROM_HOST_CHECK = frozenset({"/healthz", "/metrics"})
_HOST_RE = re.compile(r"^(?:\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::[0-9]{1,5})?$")


def _split(value: str) -> tuple[str, str]:
    """("name", "port") of a Host value (lower case, no trailing dot); the port is "" when absent."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        name, port = name + "]", rest[1:] if rest.startswith(":") else ""
    elif value.count(":") > 1:  # a bare IPv6 address in the allow-list
        name, port = f"[{value}]", ""
    else:
        name, _, port = value.partition(":")
    return name.rstrip("."), port


@lru_cache(maxsize=8)
def _patterns(allowed: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(_split(entry) for entry in allowed if entry.strip())


def host_allowed(host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a Host header (``name``, ``name:port``, ``[::1]:port``) is on the allow-list.

    Entries are exact names (``portal.example.com``), names with a port (which must then match too), ``[::1]``,
    ``*.example.com`` (any subdomain, not example.com itself) or ``*`` (any host: the check is off)."""
    if not host or not _HOST_RE.match(host.strip().lower()):
        return False
    name, port = _split(host)
    for pattern, pattern_port in _patterns(tuple(allowed)):
        if pattern_port and pattern_port != port:
            continue
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
            return True
    return False


def _inline_script_hashes() -> list[str]:
    """CSP hashes of the inline scripts in Streamlit's own index.html (one line today), so no 'unsafe-inline'."""
    index = Path(streamlit.__file__).parent / "static" / "index.html"
    try:
        html = index.read_text(encoding="utf-8")
    except OSError:
        return []
    bodies = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", html, re.S)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies]


def content_security_policy() -> str:
    # Streamlit's frontend (Emotion) and Plotly set styles at run time, so styles need 'unsafe-inline'; scripts do
    # not. Images: the portal's own, and the data:/blob: URLs Streamlit and Plotly draw with; never a remote host.
    return "; ".join([
        "default-src 'self'",
        "script-src 'self' " + " ".join(_inline_script_hashes()),
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "media-src 'self' blob:",
        "worker-src 'self' blob:",
        "frame-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def tensorboard_policy() -> str:
    # /tensorboard/ only (api/tensorboard_proxy.py). TensorBoard's bundle builds functions at run time in a few
    # places (d3-dsv's CSV parser, the debugger's Monaco loader: `new Function`, `eval`), which its own policy
    # allows with 'unsafe-eval'; its scalars and time-series dashboards load without it (tests/e2e). Still no inline
    # script: a tag or run name a job wrote into its event files that TensorBoard would draw as HTML runs nothing.
    # Its dynamic plugins are iframes of itself, hence frames of the same origin (the pages stay unframeable).
    return CSP.replace("script-src 'self' ", "script-src 'self' 'unsafe-eval' ").replace(
        "frame-ancestors 'none'", "frame-ancestors 'self'")


CSP = content_security_policy()
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
TENSORBOARD_PATH = "/tensorboard/"
TENSORBOARD_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"content-security-policy", tensorboard_policy().encode()),
    *SECURITY_HEADERS[2:],
]


def _header(scope: Scope, name: bytes) -> str | None:
    values = [v for k, v in scope.get("headers", []) if k.lower() == name]
    if len(values) != 1:  # none, or two Host headers: either way not one name to check
        return None
    return values[0].decode("latin-1")


# Before the last byte of an early answer (a 413 while the client still sends), what the client sends is read
# and dropped for a moment. A client that reads while it sends (browsers, curl) stops at the answer's headers;
# closing on its unread bytes instead would make the kernel reset the connection and discard the answer before
# the client read it. Bounded: a client that goes on sending is cut off after these.
LINGER_IDLE_SECONDS = 0.3
LINGER_TOTAL_SECONDS = 2.0
LINGER_MAX_BYTES = 8 * 1024 * 1024


async def _linger(receive: Receive) -> None:
    loop = asyncio.get_running_loop()
    deadline, dropped = loop.time() + LINGER_TOTAL_SECONDS, 0
    while dropped < LINGER_MAX_BYTES and (left := deadline - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(receive(), timeout=min(LINGER_IDLE_SECONDS, left))
        except TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        dropped += len(message.get("body", b""))


async def _answer(scope: Scope, send: Send, status: int, sentence: str, *, unread: Receive | None = None) -> None:
    """A short refusal: JSON for the API (like its other errors), one line of text elsewhere. `unread`: the
    receive of a client still sending a body nobody will read; the connection ends after the answer."""
    if scope["path"].startswith("/api/"):
        body, ctype = json.dumps({"error": sentence}).encode(), b"application/json"
    else:
        body, ctype = (sentence + "\n").encode(), b"text/plain; charset=utf-8"
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]
    if unread is not None:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if unread is not None:
        await _linger(unread)
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: Host allow-list, browser protection headers, request size limit (see the module's doc)."""

    def __init__(self, app: ASGIApp, settings: Settings | None = None):
        self.app = app
        self._settings = settings

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        allowed = self.settings.allowed_hosts
        host, origin = _header(scope, b"host"), _header(scope, b"origin")
        problem = None
        if not host_allowed(host, allowed):
            problem = "This portal does not answer to this host name."
        elif origin is not None and origin.partition("://")[2].lower() != (host or "").lower():
            # Streamlit itself lets any page on localhost in, whatever its port (another local server's page
            # would drive the user's session): a browser's Origin must be the portal's own, as for the API.
            problem = "This portal does not accept connections from pages on other sites."
        if problem is None:
            await self.app(scope, receive, send)
            return
        log.warning("refused a WebSocket: Host %r, Origin %r", host, origin)
        if "websocket.http.response" in scope.get("extensions", {}):
            body = (problem + "\n").encode()
            await send({"type": "websocket.http.response.start", "status": 400, "headers": [
                (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # before accept: the server answers the handshake with 403
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.settings
        host = _header(scope, b"host")
        declared = _header(scope, b"content-length")
        # Whether the client may still be sending: then an answer (e.g. the API's own 413 at 256 KB) ends the
        # connection, instead of the server reading and dropping the other 200 MB so the connection can be reused.
        unread = (declared is not None and declared.strip() not in ("", "0")) or (
            _header(scope, b"transfer-encoding") is not None)
        if scope["path"] not in EXEMPT_FROM_HOST_CHECK and not host_allowed(host, settings.allowed_hosts):
            log.warning("refused %s %s for Host %r (not in PORTAL_ALLOWED_HOSTS)", scope["method"], scope["path"], host)
            await _answer(scope, send, 400, "This portal does not answer to this host name "
                          "(its admin lists the names it answers to in PORTAL_ALLOWED_HOSTS).",
                          unread=receive if unread else None)
            return
        limit = int(settings.max_request_mb * 1024 * 1024)
        too_large = f"The request body is larger than the portal's limit of {settings.max_request_mb:g} MB."
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _answer(scope, send, 413, too_large, unread=receive)
            return

        received = 0
        refused = False
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:  # the 413 has been sent: whatever the route makes of its cut-off body goes nowhere
                return
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                ours = TENSORBOARD_HEADERS if scope["path"].startswith(TENSORBOARD_PATH) else SECURITY_HEADERS
                headers += [(k, v) for k, v in ours if k not in names]
                if unread and b"connection" not in names:
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            elif message["type"] == "http.response.body" and unread and not message.get("more_body", False):
                await _linger(receive)  # the route answered before reading the whole body (the API's 256 KB)
            await send(message)

        async def counted_receive() -> Message:
            nonlocal received, refused, unread
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                unread = unread and message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > limit:
                    log.warning("refused %s %s: body over %s bytes", scope["method"], scope["path"], limit)
                    if not started:
                        await _answer(scope, send, 413, too_large, unread=receive)
                    refused = True
                    # The route sees the client go away (Starlette raises ClientDisconnect): it stops reading.
                    return {"type": "http.disconnect"}
            return message

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if refused:  # the route's reaction to the cut-off body; the client already has its 413
                return
            raise
