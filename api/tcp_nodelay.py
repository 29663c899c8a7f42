"""``TCP_NODELAY`` on every connection the portal accepts, so a kept-alive REST call costs what its route costs.

Why: uvicorn writes a response in two ``send()`` calls (the head, then the body). With Nagle's algorithm on, the
kernel holds the small second write until the client acknowledges the first, and the client delays that ACK for
its minimum (40 ms on Linux) in the hope of piggybacking it on data it never sends: every request on a kept-alive
connection after the first then costs ~40 ms more (``/healthz`` 48 ms instead of 2 ms; a new connection is in
TCP's quick-ACK mode and does not show it).

asyncio does set ``TCP_NODELAY`` on every socket it accepts, but only when the socket reports
``proto == IPPROTO_TCP``; an accepted socket inherits ``proto`` from the listener, and the listener that
``streamlit run`` binds itself and hands to uvicorn (``starlette_server._bind_socket``) is made with
``socket.socket(family)``, i.e. ``proto`` 0. The same bug in uvicorn's own pre-bound path is
https://github.com/Kludex/uvicorn/issues/3149.

Where: Streamlit binds the listener before it imports ``portal_app`` (uvicorn imports the app inside
``Server.run``), so a patch of its bind function would come too late. ``uvicorn.Server.startup(sockets=...)``,
the public entry Streamlit passes the listener to, runs after the import: :func:`install` wraps it so that each
listener it gets is re-labelled as TCP (same file descriptor, ``proto`` 6). asyncio's own rule then applies to
every accepted connection, pages' WebSockets included, on every platform, whatever HTTP protocol uvicorn picks.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Any

_MARK = "_portal_tcp_nodelay"


def as_tcp_listener(sock: socket.socket) -> socket.socket:
    """The same listening socket, labelled ``IPPROTO_TCP`` so that asyncio sets ``TCP_NODELAY`` on what it
    accepts; anything but a TCP socket (a Unix socket) comes back as it is."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return sock
    if sock.proto == socket.IPPROTO_TCP:
        return sock
    blocking = sock.getblocking()
    # The old object lets go of the descriptor (closing it later is then a no-op), the new one owns it.
    tcp = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    tcp.setblocking(blocking)
    # Linux also copies the listener's own TCP_NODELAY to accepted sockets: a second line of defence.
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return tcp


def install() -> None:
    """Make uvicorn's server accept with ``TCP_NODELAY`` (idempotent; called by portal_app.py at import)."""
    import uvicorn

    startup: Callable[..., Awaitable[None]] = uvicorn.Server.startup
    if getattr(startup, _MARK, False):
        return

    @functools.wraps(startup)
    async def startup_with_nodelay(self: Any, sockets: list[socket.socket] | None = None) -> None:
        if sockets is not None:
            sockets = [as_tcp_listener(s) for s in sockets]
        await startup(self, sockets=sockets)

    setattr(startup_with_nodelay, _MARK, True)
    uvicorn.Server.startup = startup_with_nodelay  # type: ignore[method-assign]
