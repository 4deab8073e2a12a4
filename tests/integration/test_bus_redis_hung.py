"""RedisBus against a hung Redis: one that accepts connections and never answers (SIGSTOPped,
swapping, a half-open link). Publishing must never hold its caller (the event pipeline awaits it
inline) longer than `publish_timeout`, and after a failure it pauses with growing backoff, during
which it drops at once instead of probing again."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator

import pytest
from test_bus_redis import RedisProcess, redis_process  # noqa: F401 (the fixture used below)

from callcenter.bus import keys
from callcenter.bus.redis import RedisBus


class HungServer:
    """Accepts TCP connections and reads what they send, but never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self._changed = asyncio.Condition()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        async with self._changed:
            self.connections += 1
            self._changed.notify_all()
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    async def wait_for_connections(self, n: int) -> None:
        async with asyncio.timeout(20), self._changed:  # a hang guard, not a timing assertion
            await self._changed.wait_for(lambda: self.connections >= n)

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def hung() -> AsyncIterator[HungServer]:
    server = HungServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def stoppable_redis(request: pytest.FixtureRequest) -> Iterator[RedisProcess]:
    """A private redis-server (test_bus_redis's fixture) the test may SIGSTOP; continued
    before it is stopped."""
    server: RedisProcess = request.getfixturevalue("redis_process")
    try:
        yield server
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)


def freeze(server: RedisProcess) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)


def thaw(server: RedisProcess) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGCONT)


async def test_publish_to_a_hung_redis_is_bounded_by_publish_timeout(hung: HungServer) -> None:
    # socket timeouts of an hour: only the publish bound can end the wait
    bus = RedisBus(url=hung.url, connect_timeout=3600, socket_timeout=3600)
    try:
        async with asyncio.timeout(20):  # a hang guard, not a timing assertion
            await bus.publish(keys.CALLS, {"n": 1})
        assert bus.publish_failures == 1
        assert bus.published == 0
        assert hung.connections == 1
    finally:
        await bus.close()


async def test_a_hung_redis_is_probed_with_exponential_backoff(hung: HungServer) -> None:
    clock = FakeClock()
    bus = RedisBus(
        url=hung.url, retry_interval=1.0, max_publish_backoff=4.0, publish_timeout=0.05, clock=clock
    )
    try:
        await bus.publish(keys.CALLS, {"n": 0})
        assert bus.publish_backoff == 1.0
        failed_at = clock.now
        for grown in (2.0, 4.0, 4.0):
            before = bus.publish_backoff
            # the jittered pause lasts at least half the backoff: dropped without probing
            # (a probe would fail against the hung server and grow the backoff)
            clock.now = failed_at + before / 2 - 0.001
            await bus.publish(keys.CALLS, {"n": "paused"})
            assert bus.publish_backoff == before
            # and at most the whole backoff: then one publish probes, fails, and doubles it
            clock.now = failed_at + before
            await bus.publish(keys.CALLS, {"n": "probe"})
            assert bus.publish_backoff == grown
            failed_at = clock.now
        assert bus.publish_failures == 7
        assert bus.published == 0
        await hung.wait_for_connections(4)  # every probe tried afresh
    finally:
        await bus.close()


async def test_while_one_publish_probes_a_hung_redis_the_others_drop_at_once(
    hung: HungServer,
) -> None:
    clock = FakeClock()
    bus = RedisBus(url=hung.url, retry_interval=1.0, publish_timeout=0.2, clock=clock)
    try:
        await bus.publish(keys.CALLS, {"n": 0})
        assert bus.publish_failures == 1
        clock.now += 1.0
        probe = asyncio.create_task(bus.publish(keys.CALLS, {"n": "probe"}))
        await hung.wait_for_connections(2)  # the probe is waiting on the hung server
        await bus.publish(keys.AGENTS, {"n": "meanwhile"})
        assert not probe.done()  # the second publish did not wait for the probe
        assert bus.publish_failures == 2
        async with asyncio.timeout(20):  # a hang guard, not a timing assertion
            await probe
        assert bus.publish_failures == 3
        assert bus.publish_backoff == 2.0  # one failed probe, one doubling
    finally:
        await bus.close()


@pytest.mark.redis
async def test_publishing_resumes_and_the_backoff_resets_when_a_stopped_redis_continues(
    stoppable_redis: RedisProcess,
) -> None:
    clock = FakeClock()
    bus = RedisBus(url=stoppable_redis.url, retry_interval=1.0, publish_timeout=1.0, clock=clock)
    try:
        async with bus.subscribe(keys.CALLS) as messages:
            await bus.publish(keys.CALLS, {"n": 1})
            assert bus.published == 1

            freeze(stoppable_redis)
            await bus.publish(keys.CALLS, {"n": "lost"})
            clock.now += 1.0
            await bus.publish(keys.CALLS, {"n": "lost too"})
            assert (bus.publish_failures, bus.publish_backoff) == (2, 2.0)

            thaw(stoppable_redis)
            clock.now += 2.0
            await bus.publish(keys.CALLS, {"n": 2})
            assert (bus.published, bus.publish_backoff) == (2, 0.0)
            got: list[dict[str, object]] = []
            async with asyncio.timeout(20):  # a hang guard, not a timing assertion
                while not got or got[-1] != {"n": 2}:
                    got.append((await anext(messages))[1])
            # a timed-out PUBLISH sits in the socket buffer: the woken Redis may still run it
            assert got[0] == {"n": 1}
            assert all(p in ({"n": "lost"}, {"n": "lost too"}) for p in got[1:-1])

            freeze(stoppable_redis)
            await bus.publish(keys.CALLS, {"n": "lost again"})
            assert (bus.publish_failures, bus.publish_backoff) == (3, 1.0)  # started afresh
            thaw(stoppable_redis)
    finally:
        await bus.close()


def test_publish_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        RedisBus(url="redis://127.0.0.1:1/0", publish_timeout=0)
    with pytest.raises(ValueError):
        RedisBus(url="redis://127.0.0.1:1/0", retry_interval=1.0, max_publish_backoff=0.5)
