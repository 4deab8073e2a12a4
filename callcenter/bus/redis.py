"""Redis bus: pub/sub with JSON payloads, for several server processes sharing live events.

Failure policy (telephony fails open): a publish never waits for Redis longer than
`publish_timeout` (a hung Redis - stopped, swapping, a half-open link - accepts connections and
never answers; callers such as the event pipeline await publish inline). A failed publish logs once,
counts the message in `publish_failures` and drops it, and so does every publish during the pause
that follows: the pause starts at `retry_interval` and doubles after each failed probe up to
`max_publish_backoff` (jittered into [pause/2, pause] so several servers do not probe in step);
only one publish probes at a time, and the first success resumes publishing and resets the pause
(redis-py reconnects its pool). A publish that timed out is counted as dropped, yet a Redis that
wakes up may still run it from the socket buffer. A subscriber whose connection breaks keeps its
iterator alive, resubscribes with capped exponential backoff, and goes on yielding what is
published after that.
Pub/sub has no history: messages published while a subscriber is disconnected are lost to it.
A subscriber that reads too slowly is cut off by Redis (client-output-buffer-limit pubsub) and
resubscribes the same way, losing what overflowed - like MemoryBus dropping the oldest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from callcenter.bus.base import Payload
from callcenter.bus.keys import DEFAULT_PREFIX, strip_prefix
from callcenter.bus.memory import decode_payload, encode_payload

__all__ = ["RedisBus", "RedisSubscription"]

log = logging.getLogger(__name__)

# What a dead, restarting or unreachable Redis raises through redis-py.
_DOWN = (RedisError, OSError, asyncio.TimeoutError)


class RedisSubscription:
    """An async iterator of (channel, payload) that survives Redis restarts."""

    def __init__(
        self,
        *,
        client: Redis,
        channels: tuple[str, ...],
        prefix: str,
        poll_interval: float,
        retry_interval: float,
        max_retry_interval: float,
        confirm_timeout: float,
    ) -> None:
        self._client = client
        self._logical = channels
        self._names = tuple(prefix + c for c in channels)
        self._prefix = prefix
        self._poll = poll_interval
        self._confirm_timeout = confirm_timeout
        self._retry_min = retry_interval
        self._retry_max = max_retry_interval
        self._pubsub: PubSub | None = None
        self._early: deque[tuple[str, Payload]] = deque()
        self._closed = False
        self._reading = False
        self._changed = asyncio.Event()
        self.reconnects = 0
        self.malformed = 0

    @property
    def connected(self) -> bool:
        return self._pubsub is not None

    async def wait_connected(self, *, reconnects: int = 0) -> None:
        """Wait until subscribed and resubscribed at least `reconnects` times (someone must be
        iterating for resubscription to happen)."""
        while self._pubsub is None or self.reconnects < reconnects:
            self._changed.clear()
            await self._changed.wait()

    async def start(self) -> None:
        """Subscribe and wait until Redis confirmed every channel; if Redis is down, log and
        leave it to the iterator to keep trying."""
        try:
            await self._connect()
        except _DOWN as exc:
            log.warning("redis bus: cannot subscribe to %s yet: %s", ", ".join(self._logical), exc)

    def __aiter__(self) -> RedisSubscription:
        return self

    async def __anext__(self) -> tuple[str, Payload]:
        self._reading = True
        try:
            return await self._next()
        finally:
            self._reading = False
            if self._closed:
                await self._drop_pubsub()

    async def aclose(self) -> None:
        self._closed = True
        if not self._reading:  # a reader in progress closes it when it wakes up
            await self._drop_pubsub()

    async def _next(self) -> tuple[str, Payload]:
        delay = self._retry_min
        while True:
            if self._early:
                return self._early.popleft()
            if self._closed:
                raise StopAsyncIteration
            if self._pubsub is None:
                try:
                    await self._connect()
                except _DOWN as exc:
                    log.debug("redis bus: resubscribe failed (%s); next try in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(max(delay * 2, 0.01), self._retry_max)
                    continue
                self.reconnects += 1
                self._changed.set()
                log.info("redis bus: resubscribed to %s", ", ".join(self._logical))
                delay = self._retry_min
                continue
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self._poll
                )
            except _DOWN as exc:
                log.warning("redis bus: subscription lost (%s); resubscribing", exc)
                await self._drop_pubsub()
                continue
            if message is not None:
                item = self._decode(message)
                if item is not None:
                    return item

    async def _connect(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(*self._names)
            # Wait for every confirmation: once Redis has confirmed, a publish made after
            # start() returned is guaranteed to reach us.
            pending = set(self._names)
            async with asyncio.timeout(self._confirm_timeout):
                while pending:
                    message = await pubsub.get_message(timeout=self._poll)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        pending.discard(_text(message["channel"]))
                    else:
                        item = self._decode(message)
                        if item is not None:
                            self._early.append(item)
        except BaseException:
            with contextlib.suppress(*_DOWN):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        self._pubsub = pubsub
        self._changed.set()

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*_DOWN):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _decode(self, message: dict[str, Any]) -> tuple[str, Payload] | None:
        if message.get("type") != "message":
            return None
        name = _text(message["channel"])
        channel = strip_prefix(name, self._prefix)
        try:
            return channel, decode_payload(message["data"])
        except ValueError as exc:  # someone else published non-JSON on our channel
            self.malformed += 1
            log.warning("redis bus: dropping malformed message on %s: %s", channel, exc)
            return None


class RedisBus:
    """The Redis Bus. Channels are prefixed with `prefix` (see callcenter.bus.keys)."""

    def __init__(
        self,
        *,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        connect_timeout: float = 1.0,
        socket_timeout: float = 2.0,
        retry_interval: float = 0.5,
        max_retry_interval: float = 5.0,
        poll_interval: float = 1.0,
        publish_connections: int = 16,
        publish_timeout: float = 0.5,
        max_publish_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """`publish_timeout` bounds one publish: waiting for a pooled connection, connecting
        and the command with its retry (keep it above the link's connect + round trip time).
        `clock` (monotonic seconds) and `rand` (uniform in [0, 1)) time the publish pauses."""
        if retry_interval < 0 or max_retry_interval < retry_interval:
            raise ValueError("need 0 <= retry_interval <= max_retry_interval")
        if max_publish_backoff < retry_interval:
            raise ValueError("need retry_interval <= max_publish_backoff")
        if publish_timeout <= 0:
            raise ValueError("publish_timeout must be positive")
        if publish_connections < 1:
            raise ValueError("publish_connections must be at least 1")
        # Publishing retries once at once: after a Redis restart the pooled connection is stale
        # and the first command on it fails although the server is back. The pool is bounded:
        # a burst of publishes waits for a connection (within publish_timeout), then drops.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=publish_connections,
            timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._client: Redis = Redis.from_pool(pool)
        # Subscriptions get no hidden retries: a broken connection must surface so the
        # subscription can resubscribe with backoff while the iterator stays alive.
        self._sub_client: Redis = Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._prefix = prefix
        self._retry_interval = retry_interval
        self._max_retry_interval = max_retry_interval
        self._poll = poll_interval
        # a half-open connection never confirms SUBSCRIBE: give up and retry after this long
        self._confirm_timeout = connect_timeout + socket_timeout
        self._subscriptions: set[RedisSubscription] = set()
        self._publish_timeout = publish_timeout
        self._max_publish_backoff = max_publish_backoff
        self._clock = clock
        self._rand = rand
        self._paused_until = 0.0
        self._failing = False
        self._probing = False
        self._closed = False
        self.published = 0
        self.publish_failures = 0
        # the current pause between probes while publishing fails (0.0 while Redis answers)
        self.publish_backoff = 0.0

    @property
    def client(self) -> Redis:
        """The underlying client, for code that needs plain Redis commands (same server)."""
        return self._client

    async def publish(self, channel: str, payload: Payload) -> None:
        text = encode_payload(payload)
        if self._closed:
            log.debug("redis bus closed: dropping message on %s", channel)
            return
        if self._failing and (self._probing or self._clock() < self._paused_until):
            self.publish_failures += 1
            return
        probe = self._failing
        self._probing = probe
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._client.publish(self._prefix + channel, text)
        except _DOWN as exc:
            self._publish_failed(exc, probe=probe)
            return
        finally:
            if probe:
                self._probing = False
        self.published += 1
        if self._failing:
            self._failing = False
            self.publish_backoff = 0.0
            log.info(
                "redis bus: publishing again (%d messages dropped so far)", self.publish_failures
            )

    def _publish_failed(self, exc: BaseException, *, probe: bool) -> None:
        self.publish_failures += 1
        if probe:
            self.publish_backoff = min(self.publish_backoff * 2, self._max_publish_backoff)
        else:  # publishes that were already under way when Redis failed pause once, not n times
            self.publish_backoff = max(self.publish_backoff, self._retry_interval)
        pause = self.publish_backoff / 2 + self._rand() * self.publish_backoff / 2
        self._paused_until = self._clock() + pause
        if not self._failing:
            log.warning(
                "redis bus: publish failed, dropping messages until Redis is back: %s",
                str(exc) or type(exc).__name__,
            )
        else:
            log.debug("redis bus: publish probe failed (%s); next in %.1fs", exc, pause)
        self._failing = True

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[AsyncIterator[tuple[str, Payload]]]:
        if not channels:
            raise ValueError("subscribe to at least one channel")
        if self._closed:
            raise RuntimeError("the bus is closed")
        subscription = RedisSubscription(
            client=self._sub_client,
            channels=channels,
            prefix=self._prefix,
            poll_interval=self._poll,
            retry_interval=self._retry_interval,
            max_retry_interval=self._max_retry_interval,
            confirm_timeout=self._confirm_timeout,
        )
        await subscription.start()
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            await subscription.aclose()

    async def ping(self) -> bool:
        """True if Redis answers now."""
        try:
            return bool(await self._client.ping())
        except _DOWN:
            return False

    async def close(self) -> None:
        """End every subscription and close the connection pool."""
        self._closed = True
        for subscription in tuple(self._subscriptions):
            await subscription.aclose()
        with contextlib.suppress(*_DOWN):
            await self._client.aclose()
        with contextlib.suppress(*_DOWN):
            await self._sub_client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
