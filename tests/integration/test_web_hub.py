"""WebSocket hub: bus messages reach browsers; shutdown closes them with 1001."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from callcenter.bus.base import Bus
from callcenter.bus.memory import MemoryBus
from callcenter.users.service import redact_numbers
from callcenter.web.hub import WebSocketHub

HUB = web.AppKey("hub", WebSocketHub)


def _app(bus: Bus, *, outbox_size: int = 16, close_timeout: float = 3.0) -> web.Application:
    app = web.Application()
    hub = WebSocketHub(
        bus=bus, channels=("calls", "agents"), outbox_size=outbox_size, close_timeout=close_timeout
    )
    app[HUB] = hub

    async def run_hub(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(hub.run())
        await hub.wait_subscribed()
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_hub(app: web.Application) -> None:
        await hub.close()

    app.cleanup_ctx.append(run_hub)
    app.on_shutdown.append(close_hub)
    app.router.add_get("/ws", hub.handle)

    async def masked(request: web.Request) -> web.WebSocketResponse:
        return await hub.handle(request, redact=redact_numbers)

    app.router.add_get("/ws-masked", masked)
    return app


async def _until(predicate: Any) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_published_message_reaches_the_browser(aiohttp_client: Any, bus: Bus) -> None:
    # `bus`: the in-process and the Redis bus (tests/conftest.py)
    app = _app(bus)
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/ws")
    await _until(lambda: app[HUB].client_count == 1)

    await bus.publish("system", {"ignored": True})  # not a channel the hub follows
    await bus.publish("calls", {"event": "started", "uniqueid": "1.1", "caller_name": "张三"})
    msg = await ws.receive_json(timeout=5)
    assert msg == {
        "channel": "calls",
        "payload": {"event": "started", "uniqueid": "1.1", "caller_name": "张三"},
    }
    await ws.close()
    await _until(lambda: app[HUB].client_count == 0)


async def test_shutdown_closes_clients_with_going_away(aiohttp_client: Any, bus: Bus) -> None:
    app = _app(bus)
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/ws")
    await _until(lambda: app[HUB].client_count == 1)

    await app.shutdown()
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == WSCloseCode.GOING_AWAY
    await ws.close()
    # a client arriving during shutdown is closed at once
    late = await client.ws_connect("/ws")
    msg = await late.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == WSCloseCode.GOING_AWAY


async def test_slow_client_is_dropped_not_buffered(aiohttp_client: Any) -> None:
    bus = MemoryBus()
    app = _app(bus, outbox_size=2)
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/ws")
    await _until(lambda: app[HUB].client_count == 1)
    hub = app[HUB]
    # fill the outbox faster than the writer can drain it: broadcast synchronously
    for i in range(50):
        hub.broadcast("calls", {"n": i})
    closed = None
    async with asyncio.timeout(5):
        while closed is None:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED):
                closed = ws.close_code
    assert closed == WSCloseCode.TRY_AGAIN_LATER
    await _until(lambda: hub.client_count == 0)


async def test_a_redacting_client_gets_masked_numbers_the_others_in_full(
    aiohttp_client: Any,
) -> None:
    bus = MemoryBus()
    client = await aiohttp_client(_app(bus))
    hub = client.app[HUB]
    full = await client.ws_connect("/ws")
    masked = await client.ws_connect("/ws-masked")
    await _until(lambda: hub.client_count == 2)
    payload = {
        "type": "agent.ringing",
        "caller_number": "13812348000",
        "call": {"caller_number": "13812348000", "caller_name": "张三", "queue": "general"},
        "callers": [{"caller_number": "12345678"}],
    }
    await bus.publish("agents", payload)
    got_full = await full.receive_json(timeout=5)
    got_masked = await masked.receive_json(timeout=5)
    assert got_full["payload"] == payload
    shown = got_masked["payload"]
    assert shown["caller_number"] == "138****8000"
    assert shown["call"] == {
        "caller_number": "138****8000",
        "caller_name": "张三",
        "queue": "general",
    }
    assert shown["callers"][0]["caller_number"] == "******78"
    assert "13812348000" not in str(shown)
    await full.close()
    await masked.close()


def _stuck_client(port: int, path: str = "/ws", cookie: str | None = None) -> socket.socket:
    """A WebSocket client that sends the handshake and then never reads (a frozen tab): once
    its small receive window is full, the server's writes stop going anywhere."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if cookie is not None:
        lines.append(f"Cookie: cc_session={cookie}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    sock.setblocking(False)
    return sock


async def _until_peer_gone(sock: socket.socket) -> None:
    """Read what the server sent until it drops the connection."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ConnectionResetError):
        while await loop.sock_recv(sock, 65536):
            pass


async def test_a_client_that_stopped_reading_cannot_hang_shutdown(aiohttp_client: Any) -> None:
    bus = MemoryBus()
    app = _app(bus, close_timeout=0.5)
    client = await aiohttp_client(app)
    hub = app[HUB]
    stuck = _stuck_client(client.port)
    await _until(lambda: hub.client_count == 1)
    good = await client.ws_connect("/ws")
    await _until(lambda: hub.client_count == 2)

    received = 0
    got = asyncio.Event()

    async def read() -> None:
        nonlocal received
        async for _ in good:
            received += 1
            got.set()

    reader = asyncio.create_task(read())
    note = "x" * 65536
    sent = 0
    # broadcast until the stuck client is dropped (kernel buffers + its outbox full); the
    # healthy one reads every frame before the next is sent, so it keeps up
    while hub.client_count == 2 and sent < 2000:
        got.clear()
        hub.broadcast("calls", {"note": note, "i": sent})
        sent += 1
        async with asyncio.timeout(30):
            await got.wait()
    # the dropped client leaves the hub at once, not when its connection finally ends
    assert hub.client_count == 1
    assert received == sent

    async with asyncio.timeout(30):  # bounded: it used to wait for the stuck close for ever
        await hub.close()
        await _until_peer_gone(stuck)  # the stuck connection was aborted
        await reader  # the healthy client got its close frame
    stuck.close()
    assert good.close_code == WSCloseCode.GOING_AWAY
