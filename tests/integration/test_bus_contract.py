"""One contract for every Bus implementation (in-process and the real Redis server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from callcenter.bus import keys
from callcenter.bus.base import Bus, Payload


async def take(messages: AsyncIterator[tuple[str, Payload]], n: int) -> list[tuple[str, Payload]]:
    got: list[tuple[str, Payload]] = []
    async with asyncio.timeout(10):  # a hang guard, not a timing assertion
        async for item in messages:
            got.append(item)
            if len(got) == n:
                break
    return got


async def test_subscriber_receives_what_is_published(bus: Bus) -> None:
    async with bus.subscribe(keys.CALLS) as messages:
        await bus.publish(keys.CALLS, {"event": "new", "uniqueid": "1700000000.1"})
        assert await take(messages, 1) == [
            (keys.CALLS, {"event": "new", "uniqueid": "1700000000.1"})
        ]


async def test_order_is_kept_per_channel(bus: Bus) -> None:
    async with bus.subscribe(keys.CALLS) as messages:
        for i in range(50):
            await bus.publish(keys.CALLS, {"n": i})
        got = await take(messages, 50)
    assert [p["n"] for _, p in got] == list(range(50))


async def test_only_subscribed_channels_arrive(bus: Bus) -> None:
    async with bus.subscribe(keys.AGENTS, keys.QUEUES) as messages:
        await bus.publish(keys.CALLS, {"skip": True})
        await bus.publish(keys.AGENTS, {"agent": "PJSIP/1001", "status": "paused"})
        await bus.publish(keys.QUEUES, {"queue": "general", "waiting": 2})
        got = await take(messages, 2)
    assert got == [
        (keys.AGENTS, {"agent": "PJSIP/1001", "status": "paused"}),
        (keys.QUEUES, {"queue": "general", "waiting": 2}),
    ]


async def test_every_subscriber_gets_every_message(bus: Bus) -> None:
    async with bus.subscribe(keys.CALLS) as first, bus.subscribe(keys.CALLS) as second:
        await bus.publish(keys.CALLS, {"n": 1})
        await bus.publish(keys.CALLS, {"n": 2})
        assert await take(first, 2) == [(keys.CALLS, {"n": 1}), (keys.CALLS, {"n": 2})]
        assert await take(second, 2) == [(keys.CALLS, {"n": 1}), (keys.CALLS, {"n": 2})]


async def test_payload_survives_json_with_chinese_text(bus: Bus) -> None:
    payload: Payload = {
        "caller_name": "王建国",
        "path": ["main", "1", "bookings"],
        "wait": 12.5,
        "key_customer": True,
        "agent": None,
        "nested": {"emoji": "📞", "n": [1, 2, 3]},
    }
    async with bus.subscribe(keys.CALLS) as messages:
        await bus.publish(keys.CALLS, payload)
        assert await take(messages, 1) == [(keys.CALLS, payload)]


async def test_subscribers_do_not_share_mutations(bus: Bus) -> None:
    async with bus.subscribe(keys.CALLS) as first, bus.subscribe(keys.CALLS) as second:
        await bus.publish(keys.CALLS, {"list": [1]})
        [(_, a)] = await take(first, 1)
        a["list"].append(2)
        [(_, b)] = await take(second, 1)
    assert b == {"list": [1]}


async def test_publish_without_subscribers_is_fine(bus: Bus) -> None:
    await bus.publish(keys.SYSTEM, {"ami": "up"})
    async with bus.subscribe(keys.SYSTEM) as messages:
        await bus.publish(keys.SYSTEM, {"ami": "down"})
        assert await take(messages, 1) == [(keys.SYSTEM, {"ami": "down"})]


async def test_messages_before_subscribing_are_not_delivered(bus: Bus) -> None:
    await bus.publish(keys.CALLS, {"n": "early"})
    async with bus.subscribe(keys.CALLS) as messages:
        await bus.publish(keys.CALLS, {"n": "late"})
        assert await take(messages, 1) == [(keys.CALLS, {"n": "late"})]


async def test_unserialisable_payload_is_a_clear_error(bus: Bus) -> None:
    with pytest.raises((TypeError, ValueError)):
        await bus.publish(keys.CALLS, {"when": object()})
    with pytest.raises((TypeError, ValueError)):
        await bus.publish(keys.CALLS, {"wait": float("nan")})


async def test_subscribe_needs_a_channel(bus: Bus) -> None:
    with pytest.raises(ValueError):
        async with bus.subscribe():
            pass


async def test_close_ends_open_subscriptions(bus: Bus) -> None:
    async with bus.subscribe(keys.CALLS) as messages:
        await bus.close()
        async with asyncio.timeout(10):
            leftovers = [item async for item in messages]
    assert leftovers == []
    await bus.publish(keys.CALLS, {"after": "close"})  # dropped, never raises
