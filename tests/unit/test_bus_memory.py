"""MemoryBus specifics: bounded buffers that drop the oldest, publishers that never wait."""

from __future__ import annotations

import pytest

from callcenter.bus import keys
from callcenter.bus.factory import make_bus
from callcenter.bus.memory import MemoryBus, MemorySubscription
from callcenter.bus.redis import RedisBus


async def test_slow_subscriber_loses_the_oldest_and_counts_them() -> None:
    bus = MemoryBus(buffer_size=3)
    async with bus.subscribe(keys.CALLS) as messages:
        for i in range(10):
            await bus.publish(keys.CALLS, {"n": i})  # never blocks, nobody is reading
        assert isinstance(messages, MemorySubscription)
        assert messages.dropped == 7
        assert bus.dropped == 7
        got = [await anext(messages) for _ in range(3)]
    assert [p["n"] for _, p in got] == [7, 8, 9]
    assert bus.dropped == 7  # still counted after the subscriber left
    await bus.close()


async def test_a_slow_subscriber_does_not_affect_a_fast_one() -> None:
    bus = MemoryBus(buffer_size=2)
    async with bus.subscribe(keys.CALLS) as slow, bus.subscribe(keys.CALLS) as fast:
        received = []
        for i in range(5):
            await bus.publish(keys.CALLS, {"n": i})
            received.append((await anext(fast))[1]["n"])
        assert received == [0, 1, 2, 3, 4]
        assert isinstance(slow, MemorySubscription) and isinstance(fast, MemorySubscription)
        assert (slow.dropped, fast.dropped) == (3, 0)
    await bus.close()


async def test_leaving_unsubscribes() -> None:
    bus = MemoryBus()
    async with bus.subscribe(keys.CALLS):
        assert bus.subscriber_count == 1
    assert bus.subscriber_count == 0
    await bus.publish(keys.CALLS, {"n": 1})
    assert bus.published == 1


async def test_subscribe_after_close_is_refused() -> None:
    bus = MemoryBus()
    await bus.close()
    with pytest.raises(RuntimeError):
        async with bus.subscribe(keys.CALLS):
            pass


def test_buffer_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryBus(buffer_size=0)


async def test_payload_must_be_an_object() -> None:
    bus = MemoryBus()
    with pytest.raises(TypeError):
        await bus.publish(keys.CALLS, ["not", "a", "dict"])  # type: ignore[arg-type]


async def test_factory_picks_the_implementation() -> None:
    assert isinstance(make_bus(None), MemoryBus)
    assert isinstance(make_bus(""), MemoryBus)
    redis_bus = make_bus("redis://127.0.0.1:1/0", prefix="x:")
    assert isinstance(redis_bus, RedisBus)
    await redis_bus.close()
    with pytest.raises(ValueError):
        make_bus("http://127.0.0.1:6379")


def test_keys_are_prefixed_and_stripped() -> None:
    assert keys.key(keys.CALLS) == "callcenter:calls"
    assert keys.key("agent", "PJSIP/1001", prefix="t:") == "t:agent:PJSIP/1001"
    assert keys.strip_prefix("callcenter:queues") == keys.QUEUES
    assert set(keys.ALL_CHANNELS) >= {"calls", "agents", "queues"}
    with pytest.raises(ValueError):
        keys.key("")
