"""WebSocket hub: bus messages reach browsers; shutdown closes them with 1001."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from callcenter.bus.base import Bus
from callcenter.bus.memory import MemoryBus
from callcenter.users.service import redact_numbers
from callcenter.web.hub import WebSocketHub

HUB = web.AppKey("hub", WebSocketHub)


def _app(bus: Bus, *, outbox_size: int = 16) -> web.Application:
    app = web.Application()
    hub = WebSocketHub(bus=bus, channels=("calls", "agents"), outbox_size=outbox_size)
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
