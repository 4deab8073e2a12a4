"""The event bus: one small interface, two implementations (in-process and Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

Payload = dict[str, Any]  # JSON-serialisable


class Bus(Protocol):
    async def publish(self, channel: str, payload: Payload) -> None:
        """Deliver `payload` to every current subscriber of `channel`. Never raises for a
        down backend: it logs and drops (telephony fails open)."""

    def subscribe(
        self, *channels: str
    ) -> AbstractAsyncContextManager[AsyncIterator[tuple[str, Payload]]]:
        """Usage: `async with bus.subscribe("calls", "agents") as messages:` then
        `async for channel, payload in messages`."""

    async def close(self) -> None: ...
