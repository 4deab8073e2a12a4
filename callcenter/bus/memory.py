"""In-process bus: fan-out to one bounded buffer per subscriber.

A publisher never waits: when a subscriber's buffer is full the oldest message in it is dropped
and counted (`MemorySubscription.dropped`, `MemoryBus.dropped`). Payloads travel as JSON text,
exactly like on the Redis bus, so a payload that Redis could not carry fails here too, and no
subscriber sees another's mutations. A payload is encoded once per publish, whatever the number
of subscribers; `publish_json` takes text a publisher already encoded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from math import isfinite
from typing import Any

import orjson

from callcenter.bus.base import Payload

__all__ = [
    "DEFAULT_BUFFER",
    "MemoryBus",
    "MemorySubscription",
    "decode_payload",
    "encode_payload",
    "encode_records",
]

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 1000


def encode_payload(payload: Payload) -> str:
    """JSON text of a payload; TypeError/ValueError for what JSON cannot carry."""
    if not isinstance(payload, dict):
        raise TypeError(f"a bus payload must be a dict, got {type(payload).__name__}")
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_records(message: dict[str, object], *numbers: object) -> str | None:
    """JSON text of a message whose values may be record dataclasses (orjson writes their
    fields in order, datetimes as isoformat() does, non-ASCII as is): the same JSON document
    that `encode_payload` makes of the equivalent dicts. None where only json.dumps decides:
    a non-finite float among `numbers` (orjson would write null where json.dumps refuses), an
    int beyond 64 bits or a type orjson does not know."""
    for number in numbers:
        if type(number) is float and not isfinite(number):
            return None
    try:
        return orjson.dumps(message).decode()
    except TypeError:  # orjson.JSONEncodeError
        return None


def decode_payload(text: str | bytes) -> Payload:
    """The payload in JSON text; ValueError if it is not a JSON object."""
    value: Any = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("a bus payload must be a JSON object")
    return value


class MemorySubscription:
    """An async iterator of (channel, payload) over a bounded buffer."""

    def __init__(self, channels: frozenset[str], maxsize: int) -> None:
        self.channels = channels
        self.maxsize = maxsize
        self.dropped = 0
        self._buffer: deque[tuple[str, str]] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def push(self, channel: str, text: str) -> None:
        if self._closed:
            return
        if len(self._buffer) >= self.maxsize:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append((channel, text))
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def __aiter__(self) -> MemorySubscription:
        return self

    async def __anext__(self) -> tuple[str, Payload]:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        channel, text = self._buffer.popleft()
        return channel, decode_payload(text)


class MemoryBus:
    """The in-process Bus. Subscribers see messages published after `subscribe` was entered."""

    def __init__(self, *, buffer_size: int = DEFAULT_BUFFER) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self._buffer_size = buffer_size
        self._subscriptions: set[MemorySubscription] = set()
        self._closed = False
        self._dropped_by_closed = 0
        self.published = 0

    @property
    def dropped(self) -> int:
        """Messages dropped so far because a subscriber was too slow (all subscribers, past and
        present)."""
        return self._dropped_by_closed + sum(s.dropped for s in self._subscriptions)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    async def publish(self, channel: str, payload: Payload) -> None:
        await self.publish_json(channel, encode_payload(payload))

    async def publish_json(self, channel: str, text: str) -> None:
        """Publish a payload already encoded as JSON text (a JSON object, as `encode_payload`
        makes it; not checked again). Subscribers decode it like any other message."""
        if self._closed:
            log.debug("bus closed: dropping message on %s", channel)
            return
        self.published += 1
        for subscription in self._subscriptions:
            if channel in subscription.channels:
                subscription.push(channel, text)

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[AsyncIterator[tuple[str, Payload]]]:
        if not channels:
            raise ValueError("subscribe to at least one channel")
        if self._closed:
            raise RuntimeError("the bus is closed")
        subscription = MemorySubscription(frozenset(channels), self._buffer_size)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            subscription.close()
            self._subscriptions.discard(subscription)
            self._dropped_by_closed += subscription.dropped

    async def close(self) -> None:
        """End every subscription (their iterators stop); later publishes are dropped."""
        self._closed = True
        for subscription in tuple(self._subscriptions):
            subscription.close()
