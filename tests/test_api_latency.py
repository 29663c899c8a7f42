"""A kept-alive REST call costs what its route costs: no ~40 ms wait on a delayed ACK (issue 14, api/tcp_nodelay.py)."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time

import httpx

from api.tcp_nodelay import as_tcp_listener
from tests.conftest import PortalServer


def test_kept_alive_requests_do_not_wait_for_a_delayed_ack(server: PortalServer):
    # Without TCP_NODELAY every request after the first on a connection takes >= 40 ms (Linux's minimum
    # delayed ACK), whatever the load; with it /healthz takes ~2 ms here, so 20 ms leaves room for a busy machine.
    with httpx.Client(base_url=server.url) as client:
        client.get("/healthz").raise_for_status()
        times = []
        for _ in range(20):
            t = time.perf_counter()
            client.get("/healthz").raise_for_status()
            times.append((time.perf_counter() - t) * 1000)
    assert statistics.median(times) < 20, f"kept-alive GET /healthz took {sorted(times)} ms"


def test_a_listener_bound_like_streamlits_accepts_with_tcp_nodelay():
    # Streamlit binds with socket.socket(family): proto 0, for which asyncio leaves Nagle on.
    listener = socket.socket(socket.AF_INET)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    assert listener.proto == 0
    fixed = as_tcp_listener(listener)
    assert fixed.proto == socket.IPPROTO_TCP
    assert fixed.getblocking() is False
    assert as_tcp_listener(fixed) is fixed

    seen: list[int] = []

    class Record(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def accept_one() -> None:
        server = await asyncio.get_running_loop().create_server(Record, sock=fixed)
        port = fixed.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(accept_one())
    assert seen and seen[0] != 0

