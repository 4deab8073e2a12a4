"""EventPipeline: ordered application, back-pressure, batched call-log writes cut short by
drain(), agent/queue state published once per batch, failures isolated."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from callcenter.agents.service import (
    AgentEffect,
    AgentStateChanged,
    AgentStateTracker,
    QueueStatsChanged,
)
from callcenter.asterisk.events import AmiEvent
from callcenter.asterisk.message import AmiMessage
from callcenter.calls.model import CallRecord
from callcenter.calls.service import CallEffect, CallEnded, CallStarted, CallTracker
from callcenter.pipeline import EventPipeline, cancel_and_wait

T0 = datetime(2024, 5, 14, 10, 15, 2, tzinfo=UTC)
CALLER = "1715681702.12"
AGENT_LEG = "1715681710.20"


def _msg(event: str, **fields: str) -> AmiMessage:
    return AmiMessage((("Event", event), ("Privilege", "call,all"), *fields.items()))


def _snap(uniqueid: str, channel: str, state: str = "4") -> dict[str, str]:
    return {
        "Channel": channel,
        "ChannelState": state,
        "CallerIDNum": "13800138000",
        "CallerIDName": "张三",
        "Context": "from-trunk",
        "Exten": "5551000",
        "Uniqueid": uniqueid,
        "Linkedid": CALLER,
    }


def _call(uniqueid: str = CALLER) -> list[AmiMessage]:
    caller = _snap(uniqueid, "PJSIP/trunk-00000001")
    agent = {
        "DestChannel": "PJSIP/1001-00000002",
        "DestUniqueid": AGENT_LEG,
        "DestLinkedid": uniqueid,
        "Queue": "support",
        "Interface": "PJSIP/1001",
        "MemberName": "Alice",
    }
    member = {
        "Queue": "support",
        "MemberName": "Alice",
        "Interface": "PJSIP/1001",
        "Membership": "dynamic",
        "Status": "1",
        "Paused": "0",
    }
    return [
        _msg("QueueMemberStatus", **member),
        _msg("Newchannel", **caller),
        _msg("QueueCallerJoin", **caller, Queue="support", Position="1", Count="1"),
        _msg("AgentCalled", **caller, **agent),
        _msg("AgentConnect", **caller, **agent, HoldTime="3", RingTime="2"),
        _msg("QueueMemberStatus", **{**member, "Status": "2", "InCall": "1"}),
        _msg("AgentComplete", **caller, **agent, HoldTime="3", TalkTime="60", Reason="caller"),
        _msg("Hangup", **caller, Cause="16", **{"Cause-txt": "Normal Clearing"}),
    ]


class Log:
    def __init__(self, *, fail: bool = False) -> None:
        self.batches: list[list[CallRecord]] = []
        self.fail = fail

    async def save_calls(self, records: Sequence[CallRecord]) -> None:
        if self.fail:
            raise ConnectionRefusedError("database down")
        self.batches.append(list(records))


class Publisher:
    def __init__(self) -> None:
        self.calls: list[CallEffect] = []
        self.agents: list[list[AgentEffect]] = []

    async def publish(self, effects: Iterable[Any]) -> None:
        batch = list(effects)
        if all(isinstance(e, AgentStateChanged | QueueStatsChanged) for e in batch):
            self.agents.append(batch)
        else:
            self.calls.extend(batch)


def _pipeline(
    log: Log, pub: Publisher, calls: CallTracker | None = None, **options: Any
) -> EventPipeline:
    return EventPipeline(
        calls=calls if calls is not None else CallTracker(),
        agents=AgentStateTracker(),
        call_publisher=pub,
        agent_publisher=pub,
        call_log=log,
        clock=lambda: T0,
        **options,
    )


async def test_a_burst_is_applied_in_order_and_saved_in_one_transaction() -> None:
    log, pub = Log(), Publisher()
    pipeline = _pipeline(log, pub, save_delay=3600)  # only drain() makes the writer write
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
    for msg in [*_call(), _msg("AGIExecEnd", Channel="x"), AmiMessage((("Response", "Ok"),))]:
        await pipeline.feed(msg)
    async with asyncio.timeout(10):  # a hang guard: drain must not wait out save_delay
        await pipeline.drain()
    await cancel_and_wait(*tasks)
    assert pipeline.pending == 0
    assert type(pub.calls[0]) is CallStarted
    assert type(pub.calls[-1]) is CallEnded
    assert pub.calls[-1].record.talk_seconds == 60
    # started, queued, answered, ended: one transaction, in order
    assert len(log.batches) == 1
    assert [r.end_reason for r in log.batches[0]] == [None, None, None, "completed"]
    assert pipeline.stats.saved == 4
    assert (pipeline.stats.events, pipeline.stats.ignored) == (8, 2)


async def test_agent_state_is_published_once_per_batch_with_the_latest_state() -> None:
    log, pub = Log(), Publisher()
    pipeline = _pipeline(log, pub, save_delay=0)
    for msg in _call():  # queued before the consumer runs: one batch
        await pipeline.feed(msg)
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
    await pipeline.drain()
    await cancel_and_wait(*tasks)
    assert len(pub.agents) == 1
    states = [e for e in pub.agents[0] if isinstance(e, AgentStateChanged)]
    # ringing, on the call, done: only the state after the last event goes out
    assert [(s.agent.interface, s.agent.status) for s in states] == [("PJSIP/1001", "on_call")]
    assert states[0].previous is None
    assert states[0].agent.device_status == 2


async def test_without_linger_every_record_is_written() -> None:
    log, pub = Log(), Publisher()
    pipeline = _pipeline(log, pub, save_delay=0, save_batch=1)
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
    for msg in _call():
        await pipeline.feed(msg)
    await pipeline.drain()
    await cancel_and_wait(*tasks)
    assert [len(b) for b in log.batches] == [1, 1, 1, 1]


async def test_a_full_inbox_holds_the_producer_back() -> None:
    log, pub = Log(), Publisher()
    pipeline = _pipeline(log, pub, max_pending=2)
    messages = _call()
    await pipeline.feed(messages[0])
    await pipeline.feed(messages[1])
    blocked = asyncio.create_task(pipeline.feed(messages[2]))
    await asyncio.sleep(0)
    assert not blocked.done()
    assert pipeline.pending == 2
    pipeline.tick()  # a tick that does not fit is skipped, never queued past the bound
    assert pipeline.pending == 2
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
    await blocked
    await pipeline.drain()
    await cancel_and_wait(*tasks)
    assert pipeline.stats.events == 3


class BrokenTracker(CallTracker):
    def apply(self, event: AmiEvent, now: datetime) -> list[CallEffect]:
        if type(event).__name__ == "QueueCallerJoined":
            raise RuntimeError("tracker bug")
        return super().apply(event, now)


async def test_a_tracker_failure_loses_one_step_only(caplog: pytest.LogCaptureFixture) -> None:
    log, pub = Log(), Publisher()
    pipeline = _pipeline(log, pub, calls=BrokenTracker(), save_delay=0)
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
    for msg in _call():
        await pipeline.feed(msg)
    await pipeline.drain()
    await cancel_and_wait(*tasks)
    assert pipeline.stats.errors == 1
    assert type(pub.calls[-1]) is CallEnded  # later events still applied
    assert "tracker bug" in caplog.text


async def test_records_are_kept_while_the_database_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log, pub = Log(fail=True), Publisher()
    pipeline = _pipeline(log, pub, save_delay=0, retry_min=0.001, retry_max=0.01)
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
    for msg in _call():
        await pipeline.feed(msg)
    async with asyncio.timeout(10):
        while pipeline.stats.save_failures < 8:  # noqa: ASYNC110 - several attempts, all failed
            await asyncio.sleep(0.001)
    assert pipeline.stats.saved == 0
    assert pipeline.pending == 4
    log.fail = False  # the database is back
    async with asyncio.timeout(10):
        await pipeline.drain()
    await cancel_and_wait(*tasks)
    assert [r.end_reason for b in log.batches for r in b][-1] == "completed"
    assert pipeline.stats.saved == 4
    assert pipeline.stats.saves_dropped == 0
    assert caplog.text.count("could not save") == 1  # once per outage, not per attempt
    assert "the database is back" in caplog.text


class PickyLog(Log):
    """Refuses any batch holding a call that has ended (as a database refuses bad data)."""

    async def save_calls(self, records: Sequence[CallRecord]) -> None:
        if any(r.end_reason is not None for r in records):
            raise ValueError("column too long")
        await super().save_calls(records)


async def test_a_refused_record_is_dropped_alone(caplog: pytest.LogCaptureFixture) -> None:
    log, pub = PickyLog(), Publisher()
    pipeline = _pipeline(log, pub, save_delay=3600)
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
    for msg in _call():
        await pipeline.feed(msg)
    async with asyncio.timeout(10):
        await pipeline.drain()
    await cancel_and_wait(*tasks)
    assert [r.end_reason for b in log.batches for r in b] == [None, None, None]
    assert (pipeline.stats.saved, pipeline.stats.saves_dropped) == (3, 1)
    assert f"call {CALLER} refused" in caplog.text


async def test_a_burst_publishes_only_the_latest_update_of_a_call() -> None:
    log, pub = Log(), Publisher()
    pipeline = _pipeline(log, pub, save_delay=0)
    messages = _call()[:5]  # up to the answer: no end
    for msg in messages:  # queued before the consumer runs: one batch
        await pipeline.feed(msg)
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
    await pipeline.drain()
    one_batch = [(type(e).__name__, getattr(e, "change", None)) for e in pub.calls]
    pub.calls.clear()
    for msg in messages:  # the same again for another call, one event per batch
        uniqueid = "1715681799.50"
        await pipeline.feed(
            AmiMessage(tuple((k, uniqueid if v == CALLER else v) for k, v in msg.headers))
        )
        await pipeline.drain()
    await cancel_and_wait(*tasks)
    one_by_one = [(type(e).__name__, getattr(e, "change", None)) for e in pub.calls]
    assert one_by_one == [
        ("CallStarted", None),
        ("CallUpdated", "queued"),
        ("AgentRinging", None),
        ("CallUpdated", "answered"),
        ("AgentAnswered", None),
    ]
    # the same effects, without the updates a later one made stale
    assert one_batch == [
        ("CallStarted", None),
        ("AgentRinging", None),
        ("CallUpdated", "answered"),
        ("AgentAnswered", None),
    ]
    assert pub.calls[-1].record.answered_at is not None


async def test_drain_with_nothing_queued_returns() -> None:
    pipeline = _pipeline(Log(), Publisher())
    await pipeline.drain()


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        _pipeline(Log(), Publisher(), max_pending=0)


async def test_feed_many_is_feed_for_each_message() -> None:
    results = []
    for many in (False, True):
        log, pub = Log(), Publisher()
        pipeline = _pipeline(log, pub, save_delay=0)
        tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
        if many:
            await pipeline.feed_many(_call())
        else:
            for msg in _call():
                await pipeline.feed(msg)
        await pipeline.drain()
        await cancel_and_wait(*tasks)
        results.append(([type(e).__name__ for e in pub.calls], pipeline.stats.events))
    assert results[0] == results[1]
    assert results[1][1] == 8


class HangingLog(Log):
    """A database that takes the batches and never answers."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()

    async def save_calls(self, records: Sequence[CallRecord]) -> None:
        self.started.set()
        await asyncio.Event().wait()


async def test_a_stopped_writer_hands_over_the_batch_in_flight_and_the_queue() -> None:
    log, pub = HangingLog(), Publisher()
    pipeline = _pipeline(log, pub, save_delay=0, save_batch=2)
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
    for msg in _call():
        await pipeline.feed(msg)
    await log.started.wait()  # the first batch of 2 is being written, 2 more queue behind
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await pipeline.drain()
    await cancel_and_wait(*tasks)
    unsaved = pipeline.take_unsaved()
    assert [r.end_reason for r in unsaved] == [None, None, None, "completed"]  # oldest first
    assert pipeline.pending == 0 and pipeline.take_unsaved() == []
