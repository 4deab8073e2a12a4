"""The IVR steps' bus announcement (`IVR_STEPS`) the screen-pops wait for instead of polling the
call log: sent once the steps are in the call log (a session's write, or held steps flushed
after an outage), never for steps only held or spooled, and never failing or slowing the
write; a pop service of another process gets the digits over Redis without a database read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from callcenter.bus.base import Bus, Payload
from callcenter.bus.keys import IVR_STEPS
from callcenter.bus.memory import MemoryBus
from callcenter.bus.redis import RedisBus
from callcenter.calls.model import IvrStep, ivr_step_from_json
from callcenter.calls.repository import CallRepository
from callcenter.console.notifier import StepsAnnouncer
from callcenter.console.service import PopEnricher, ScreenPopService
from callcenter.db.availability import Database, DeferredIvrRecorder
from callcenter.db.spool import Spool
from tests.integration.test_failopen_database import FAST, FlakyMigrations
from tests.unit.test_console_screenpop_steps import UpdateSink, updates
from tests.unit.test_console_service import payload

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
PATH = ["lookup", "language", "hours", "main", "2", "complaints_queue"]
DIGITS = [
    {"seq": 2, "node": "language", "kind": "language", "input": "1", "result": "zh"},
    {"seq": 3, "node": "main", "kind": "menu", "input": "2", "result": "complaints"},
]


def session(uniqueid: str) -> list[IvrStep]:
    return [
        IvrStep(uniqueid, 1, T0, "lookup", "lookup", input="13800138000", result="known"),
        IvrStep(uniqueid, 2, T0, "language", "language", input="1", result="zh"),
        IvrStep(uniqueid, 3, T0, "main", "menu", input="2", result="complaints"),
        IvrStep(uniqueid, 4, T0, "complaints_queue", "queue", result="complaints"),
    ]


@contextlib.asynccontextmanager
async def listening(bus: Bus) -> AsyncIterator[asyncio.Queue[Payload]]:
    heard: asyncio.Queue[Payload] = asyncio.Queue()
    async with bus.subscribe(IVR_STEPS) as messages:

        async def pump() -> None:
            async for _channel, message in messages:
                heard.put_nowait(message)

        task = asyncio.create_task(pump())
        try:
            yield heard
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def next_message(heard: asyncio.Queue[Payload]) -> Payload:
    async with asyncio.timeout(10):
        return await heard.get()


async def test_written_steps_are_announced_once_they_are_in_the_call_log(
    db_url: str, bus: Bus
) -> None:
    db = Database(db_url, retry=FAST)
    calls = CallRepository(session_factory=db.sessions)
    announcer = StepsAnnouncer(bus=bus)
    recorder = DeferredIvrRecorder(recorder=calls, database=db, on_written=announcer.written)
    db.on_ready(recorder.flush)
    try:
        assert await db.start()
        async with listening(bus) as heard:
            await recorder.record_steps(session("5.1"))
            message = await next_message(heard)
            assert message == {"uniqueid": "5.1", "digits": DIGITS}
            assert len(await calls.get_steps("5.1")) == 4  # written before it was announced
            await recorder.record_steps([*session("5.2"), *session("5.3")])
            got = [await next_message(heard), await next_message(heard)]
            assert [m["uniqueid"] for m in got] == ["5.2", "5.3"]  # one message per call
        assert announcer.published == 3 and announcer.dropped == 0
    finally:
        await announcer.close()
        await recorder.close()
        await db.close()


async def test_steps_held_in_an_outage_are_announced_when_written_not_before(
    sqlite_url: str, tmp_path: Path
) -> None:
    bus_ = MemoryBus()
    db = Database(sqlite_url, retry=FAST, migrate=FlakyMigrations(failures=1))
    calls = CallRepository(session_factory=db.sessions)
    announcer = StepsAnnouncer(bus=bus_)
    recorder = DeferredIvrRecorder(
        recorder=calls,
        database=db,
        spool=Spool(tmp_path / "ivr_steps.jsonl", decode=ivr_step_from_json),
        on_written=announcer.written,
    )
    db.on_ready(recorder.flush)
    try:
        async with listening(bus_) as heard:
            assert not await db.start()  # down: the steps are held and spooled
            await recorder.record_steps(session("7.1"))
            assert recorder.held == 4 and (tmp_path / "ivr_steps.jsonl").exists()
            await announcer.idle()
            assert announcer.published == 0 and heard.empty()
            async with asyncio.timeout(30):  # back: the on_ready flush writes them
                await db.wait_until_ready()
            assert await next_message(heard) == {"uniqueid": "7.1", "digits": DIGITS}
            assert recorder.held == 0 and len(await calls.get_steps("7.1")) == 4
    finally:
        await announcer.close()
        await recorder.close()
        await db.close()
        await bus_.close()


class BrokenBus:
    def __init__(self) -> None:
        self.published = asyncio.Event()

    async def publish(self, channel: str, payload: Payload) -> None:
        self.published.set()
        raise RuntimeError("bus broken")

    def subscribe(self, *channels: str) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class StuckBus(BrokenBus):
    async def publish(self, channel: str, payload: Payload) -> None:
        self.published.set()
        await asyncio.Event().wait()  # a backend that never answers


@pytest.mark.parametrize("bus_class", [BrokenBus, StuckBus])
async def test_a_failing_bus_neither_fails_nor_holds_up_the_write(
    sqlite_url: str, bus_class: type[BrokenBus], caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(sqlite_url, retry=FAST)
    calls = CallRepository(session_factory=db.sessions)
    bus_ = bus_class()
    announcer = StepsAnnouncer(bus=bus_, close_timeout=0.01)
    recorder = DeferredIvrRecorder(recorder=calls, database=db, on_written=announcer.written)
    try:
        assert await db.start()
        with caplog.at_level(logging.WARNING):
            async with asyncio.timeout(10):  # a write that waited for the stuck bus would hang
                await recorder.record_steps(session("8.1"))
                await recorder.record_steps(session("8.2"))
                await bus_.published.wait()
            assert recorder.held == 0 and len(await calls.get_steps("8.2")) == 4
            await announcer.close()  # bounded, whatever the bus does
        if bus_class is BrokenBus:
            assert "IVR steps of 8.1 not announced" in caplog.text
    finally:
        await recorder.close()
        await db.close()


async def test_a_failing_hook_leaves_the_write_standing(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(sqlite_url, retry=FAST)
    calls = CallRepository(session_factory=db.sessions)

    def broken(steps: Sequence[IvrStep]) -> None:
        raise RuntimeError("hook broken")

    recorder = DeferredIvrRecorder(recorder=calls, database=db, on_written=broken)
    try:
        assert await db.start()
        with caplog.at_level(logging.ERROR):
            await recorder.record_steps(session("9.1"))
        assert recorder.held == 0 and len(await calls.get_steps("9.1")) == 4
        assert "the hook after a write failed" in caplog.text
    finally:
        await recorder.close()
        await db.close()


class CountedCalls(CallRepository):
    reads = 0

    async def get_steps(self, uniqueid: str) -> list[IvrStep]:
        self.reads += 1
        return await super().get_steps(uniqueid)


@pytest.mark.redis
async def test_a_pop_in_another_process_gets_the_digits_over_redis(
    sqlite_url: str, redis_url: str, redis_prefix: str
) -> None:
    """The web process pops the call; the IVR process (another Redis bus) writes its steps."""
    web_bus = RedisBus(url=redis_url, prefix=redis_prefix, retry_interval=0.05)
    ivr_bus = RedisBus(url=redis_url, prefix=redis_prefix, retry_interval=0.05)
    db = Database(sqlite_url, retry=FAST)
    calls = CountedCalls(session_factory=db.sessions)
    announcer = StepsAnnouncer(bus=ivr_bus)
    recorder = DeferredIvrRecorder(recorder=calls, database=db, on_written=announcer.written)
    service = ScreenPopService(
        bus=web_bus,
        enricher=PopEnricher(customers=None, calls=calls, timeout=5.0),
        clock=lambda: T0,
    )
    follow = asyncio.create_task(service.run())
    try:
        assert await db.start()
        async with asyncio.timeout(10):
            await service.wait_subscribed()
        tab = UpdateSink()
        service.attach(tab, interface="PJSIP/1001", user_id=1)
        service.feed(payload("agent.ringing", "PJSIP/1001", "6.1", ivr_path=PATH))
        await tab.until(lambda t: updates(t) == 1)  # looked up: not stored yet
        assert tab.pops()[0]["pop"]["digits_pending"] is True
        await recorder.record_steps(session("6.1"))
        async with asyncio.timeout(10):
            await service.drain()
        data = tab.pops()[0]["pop"]
        assert data["digits_pending"] is False
        assert [(d["node"], d["input"]) for d in data["digits"]] == [
            ("language", "1"),
            ("main", "2"),
        ]
        assert calls.reads == 1  # the lookup's only
    finally:
        await service.close()
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
        await announcer.close()
        await recorder.close()
        await db.close()
        await web_bus.close()
        await ivr_bus.close()


async def test_a_call_whose_held_steps_straddle_two_flush_batches_pops_all_its_digits(
    sqlite_url: str,
) -> None:
    bus_ = MemoryBus()
    db = Database(sqlite_url, retry=FAST, migrate=FlakyMigrations(failures=1))
    calls = CountedCalls(session_factory=db.sessions)
    announcer = StepsAnnouncer(bus=bus_)
    # batches of 3: 3.0's first three steps; 3.0's last, 3.1's lookup and language; 3.1's rest
    recorder = DeferredIvrRecorder(
        recorder=calls, database=db, batch=3, on_written=announcer.written
    )
    db.on_ready(recorder.flush)
    service = ScreenPopService(
        bus=bus_,
        enricher=PopEnricher(customers=None, calls=calls, timeout=5.0),
        clock=lambda: T0,
    )
    follow = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(10):
            await service.wait_subscribed()
        assert not await db.start()  # down: the steps are held
        await recorder.record_steps([*session("3.0"), *session("3.1")])
        assert recorder.held == 8
        tab = UpdateSink()
        service.attach(tab, interface="PJSIP/1001", user_id=1)
        service.feed(payload("agent.ringing", "PJSIP/1001", "3.1", ivr_path=PATH))
        await tab.until(lambda t: updates(t) == 1)  # looked up (the database is down)
        assert tab.pops()[0]["pop"]["digits_pending"] is True
        async with asyncio.timeout(30):  # back: the on_ready flush writes three batches
            await db.wait_until_ready()
        await announcer.idle()
        want = [("language", "1"), ("main", "2")]
        await tab.until(
            lambda t: [(d["node"], d["input"]) for d in t.pops()[0]["pop"]["digits"]] == want
        )
        assert tab.pops()[0]["pop"]["digits_pending"] is False
        assert announcer.published == 4  # 3.0 twice, 3.1 twice: one per call and write
    finally:
        await service.close()
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
        await announcer.close()
        await recorder.close()
        await db.close()
        await bus_.close()


async def test_a_burst_of_announcements_does_not_overflow_an_in_process_subscriber() -> None:
    bus_ = MemoryBus()  # no Redis: the subscribers' buffers (1000 messages) are all there is
    announcer = StepsAnnouncer(bus=bus_)
    try:
        async with listening(bus_) as heard:
            # a flush after an outage: 1200 short sessions written at once
            announcer.written([step for n in range(1200) for step in session(f"4.{n}")[:2]])
            await announcer.idle()
            assert announcer.published == 1200
            assert bus_.dropped == 0  # the subscriber read along
            got = [(await next_message(heard))["uniqueid"] for _ in range(1200)]
            assert got == [f"4.{n}" for n in range(1200)]
    finally:
        await announcer.close()
        await bus_.close()
