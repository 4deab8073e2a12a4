"""WebSocket fan-out: every message published on the bus channels the hub follows goes to every
connected browser as one JSON text frame `{"channel": ..., "payload": ...}`.

Memory is bounded: each client has a fixed-size outbox; a client too slow to keep up is
disconnected (close code 1013, try again later) rather than buffered without limit. On shutdown
`close()` sends every client a close frame (1001, going away) so browsers reconnect cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from callcenter.bus.base import Bus, Payload

log = logging.getLogger(__name__)

# Rewrites a payload for one kind of viewer (e.g. masks caller numbers); applied once per
# broadcast per distinct function, however many clients share it.
Redactor = Callable[[Payload], Payload]


def encode(channel: str, payload: Payload) -> str:
    return json.dumps(
        {"channel": channel, "payload": payload},
        ensure_ascii=False,
        default=str,
        separators=(",", ":"),
    )


async def follow_bus(
    bus: Bus,
    channels: Sequence[str],
    deliver: Callable[[str, Payload], None],
    *,
    subscribed: asyncio.Event,
    stopping: Callable[[], bool],
    what: str,
) -> None:
    """Hand every message on `channels` to `deliver` until cancelled or the subscription ends
    while `stopping()`. `subscribed` is set once messages can no longer be missed. A broken
    backend is retried with backoff (0.5 s doubling up to 10 s)."""
    backoff = 0.5
    while not stopping():
        try:
            async with bus.subscribe(*channels) as messages:
                subscribed.set()
                backoff = 0.5
                async for channel, payload in messages:
                    deliver(channel, payload)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: bus subscription failed; retrying in %.1fs", what, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


@dataclass(eq=False)
class _Client:
    ws: web.WebSocketResponse
    outbox: asyncio.Queue[str]
    redact: Redactor | None = None
    dropped: bool = False


class WebSocketHub:
    """Follows `channels` on the bus (`run()`) and serves `/ws` (`handle()`)."""

    def __init__(
        self,
        *,
        bus: Bus,
        channels: Sequence[str],
        outbox_size: int = 256,
        heartbeat: float | None = 20.0,
    ) -> None:
        self._bus = bus
        self._channels = tuple(channels)
        self._outbox_size = outbox_size
        self._heartbeat = heartbeat
        self._clients: set[_Client] = set()
        self._closing = False
        self._subscribed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def client_count(self) -> int:
        return len(self._clients)

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    async def wait_subscribed(self) -> None:
        """Returns once `run()` is subscribed: from then on no published message is missed."""
        await self._subscribed.wait()

    async def run(self) -> None:
        """Forward bus messages to clients until cancelled. A broken backend is retried."""
        await follow_bus(
            self._bus,
            self._channels,
            self.broadcast,
            subscribed=self._subscribed,
            stopping=lambda: self._closing,
            what="websocket hub",
        )

    def broadcast(self, channel: str, payload: Payload) -> None:
        texts: dict[Redactor | None, str] = {}
        for client in list(self._clients):
            if client.dropped:
                continue
            text = texts.get(client.redact)
            if text is None:
                shown = payload if client.redact is None else client.redact(payload)
                text = texts[client.redact] = encode(channel, shown)
            try:
                client.outbox.put_nowait(text)
            except asyncio.QueueFull:
                client.dropped = True
                log.warning("websocket client too slow, disconnecting it")
                self._spawn(client.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow"))

    async def handle(
        self, request: web.Request, *, redact: Redactor | None = None
    ) -> web.WebSocketResponse:
        """The `/ws` handler. `redact`, if given, rewrites every payload this client gets."""
        ws = web.WebSocketResponse(heartbeat=self._heartbeat)
        await ws.prepare(request)
        if self._closing:
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
            return ws
        client = _Client(ws=ws, outbox=asyncio.Queue(maxsize=self._outbox_size), redact=redact)
        self._clients.add(client)
        writer = asyncio.create_task(self._write_loop(client))
        try:
            async for msg in ws:
                # Clients have nothing to say yet; a text "ping" gets a pong for liveness checks.
                if msg.type is WSMsgType.TEXT and msg.data == "ping":
                    with contextlib.suppress(asyncio.QueueFull):
                        client.outbox.put_nowait(json.dumps({"channel": "hub", "payload": "pong"}))
        finally:
            self._clients.discard(client)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _write_loop(self, client: _Client) -> None:
        while True:
            text = await client.outbox.get()
            if client.ws.closed:
                return
            try:
                await client.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    async def close(self) -> None:
        """Close every client with 1001 (going away) and refuse new ones. Idempotent."""
        self._closing = True
        clients = list(self._clients)
        await asyncio.gather(
            *(c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for c in clients),
            return_exceptions=True,
        )
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
