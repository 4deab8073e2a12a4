"""Calls left open in the call log by an earlier run (or a long outage) are closed when the
AMI client's channel list shows they are gone: real SQLite/PostgreSQL, the real pipeline and
AMI client against a fake manager session."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ami_manager_support import Manager, client_for, frame
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.agents.service import AgentEffect, AgentStateTracker
from callcenter.asterisk.ami import AmiClient
from callcenter.calls.model import CallRecord
from callcenter.calls.repository import CallRepository
from callcenter.calls.service import CallEffect, CallTracker
from callcenter.db.availability import Database
from callcenter.pipeline import EventPipeline, OpenCallSweeper

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # the pipeline's clock: when a list is applied
GONE = "1764330000.1"  # saved open by the previous process; hung up while it was stopped
LIVE = "1764330000.2"  # still up: in the channel list
LEG_OF = "1764330000.3"  # its first channel is gone, but a channel of the call is listed
TRACKED = "1764330000.4"  # starts right after the list: the tracker follows it
LATE = "1764330000.5"  # started after the list (saved by another server instance)


def new_channel(uniqueid: str) -> bytes:
    return frame(
        ("Event", "Newchannel"),
        ("Privilege", "call,all"),
        ("Channel", f"PJSIP/trunk-{uniqueid[-1]:0>8}"),
        ("ChannelState", "4"),
        ("ChannelStateDesc", "Ring"),
        ("CallerIDNum", "13800138000"),
        ("CallerIDName", ""),
        ("ConnectedLineNum", ""),
        ("ConnectedLineName", ""),
        ("Language", "en"),
        ("AccountCode", ""),
        ("Context", "from-trunk"),
        ("Exten", "100"),
        ("Priority", "1"),
        ("Uniqueid", uniqueid),
        ("Linkedid", uniqueid),
    )


@dataclass
class MemoryLog:
    """The pipeline's own call log (the tracker's records), kept apart from the database the
    sweep works on, so a row can stay as the previous process left it."""

    records: list[CallRecord] = field(default_factory=list)
    saved: asyncio.Event = field(default_factory=asyncio.Event)

    async def save_calls(self, records: Sequence[CallRecord]) -> None:
        self.records += records
        self.saved.set()

    async def wait_for(self, uniqueid: str, *, ended: bool = False) -> None:
        async with asyncio.timeout(5):
            while not any(
                r.uniqueid == uniqueid and (r.ended_at is not None or not ended)
                for r in self.records
            ):
                self.saved.clear()
                await self.saved.wait()


class Quiet:
    async def publish(self, effects: Iterable[CallEffect] | Iterable[AgentEffect]) -> None:
        return None


class Held:
    """A sweeper that waits for `release` before it goes on (entered: it was called)."""

    def __init__(self, inner: OpenCallSweeper | None) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def close_open_calls(self, **kwargs: Any) -> int:
        self.entered.set()
        await self.release.wait()
        return 0 if self.inner is None else await self.inner.close_open_calls(**kwargs)


def record(uniqueid: str, started_at: datetime, **changes: Any) -> CallRecord:
    base = CallRecord(
        uniqueid=uniqueid,
        linkedid=uniqueid,
        channel=f"PJSIP/trunk-{uniqueid[-1]:0>8}",
        started_at=started_at,
        caller_number="13800138000",
        caller_name="",
        dialed_number="100",
        direction="inbound",
    )
    return replace(base, **changes)


@pytest.fixture
def repo(session_factory: async_sessionmaker[AsyncSession]) -> CallRepository:
    return CallRepository(session_factory=session_factory)


@dataclass
class Stack:
    manager: Manager
    client: AmiClient
    calls: CallTracker
    pipeline: EventPipeline
    log: MemoryLog
    resynced: asyncio.Event


async def make_stack(sweeper: OpenCallSweeper, *, sweep_timeout: float = 30.0) -> Stack:
    manager = Manager()
    port = await manager.start()
    calls = CallTracker()
    pipeline = EventPipeline(
        calls=calls,
        agents=AgentStateTracker(),
        call_publisher=Quiet(),
        agent_publisher=Quiet(),
        call_log=(log := MemoryLog()),
        clock=lambda: NOW,
        save_delay=0,
        sweeper=sweeper,
        sweep_timeout=sweep_timeout,
    )
    client, resynced = client_for(pipeline, port)
    return Stack(manager, client, calls, pipeline, log, resynced)


async def start(stack: Stack, tasks: list[asyncio.Task[None]]) -> None:
    p = stack.pipeline
    tasks.extend(asyncio.create_task(c) for c in (p.run(), p.write(), p.sweep()))
    await stack.client.start()
    async with asyncio.timeout(5):
        await stack.resynced.wait()
        await p.drain()


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[None]]]:
    started: list[asyncio.Task[None]] = []
    yield started
    for task in started:
        task.cancel()
    await asyncio.gather(*started, return_exceptions=True)


async def stop(stack: Stack) -> None:
    await stack.client.close()
    await stack.manager.stop()


# --- the repository ----------------------------------------------------------------------------


async def test_open_rows_not_kept_are_closed_with_the_reason_and_nothing_else(
    repo: CallRepository,
) -> None:
    answered = NOW - timedelta(minutes=9)
    await repo.save_calls(
        [
            record(
                GONE,
                NOW - timedelta(minutes=10),
                queue="support",
                answered_at=answered,
                agent="agent1001",
                wait_seconds=60.0,
            ),
            record(LIVE, NOW - timedelta(minutes=10)),
            record(LATE, NOW + timedelta(seconds=1)),
        ]
    )
    closed = await repo.close_open_calls(
        started_before=NOW - timedelta(seconds=5), ended_at=NOW, keep={LIVE}.__contains__
    )
    assert closed == 1
    gone = await repo.get_call(GONE)
    assert gone is not None
    assert (gone.ended_at, gone.end_reason) == (NOW, "ended_while_disconnected")
    assert (gone.answered_at, gone.agent, gone.wait_seconds) == (answered, "agent1001", 60.0)
    assert gone.talk_seconds is None and gone.hangup_cause is None and not gone.abandoned
    for uniqueid in (LIVE, LATE):
        kept = await repo.get_call(uniqueid)
        assert kept is not None and kept.ended_at is None and kept.end_reason is None
    # idempotent: a second pass finds nothing left to close, and an ended call is not touched
    again = await repo.close_open_calls(
        started_before=NOW, ended_at=NOW + timedelta(hours=1), keep={LIVE}.__contains__
    )
    assert again == 0
    gone_again = await repo.get_call(GONE)
    assert gone_again is not None and gone_again.ended_at == NOW


async def test_thousands_of_open_rows_and_live_channels(repo: CallRepository) -> None:
    started = NOW - timedelta(hours=1)
    rows = [record(f"1764000000.{n}", started) for n in range(2500)]
    await repo.save_calls(rows)
    live = {f"1764000000.{n}" for n in range(0, 2500, 2)} | {f"9.{n}" for n in range(5000)}
    closed = await repo.close_open_calls(started_before=NOW, ended_at=NOW, keep=live.__contains__)
    assert closed == 1250
    assert (await repo.get_call("1764000000.1")) is not None
    odd = await repo.get_call("1764000000.1")
    even = await repo.get_call("1764000000.2")
    assert odd is not None and odd.end_reason == "ended_while_disconnected"
    assert even is not None and even.ended_at is None


# --- the pipeline -------------------------------------------------------------------------------


async def test_restart_closes_the_calls_that_ended_while_the_server_was_stopped(
    repo: CallRepository, tasks: list[asyncio.Task[None]]
) -> None:
    before = NOW - timedelta(minutes=3)
    # what the previous process saved while these calls were live
    await repo.save_calls(
        [
            record(GONE, before, queue="support"),
            record(LIVE, before, queue="support"),
            record(LEG_OF, before),
            record(TRACKED, before),  # another instance's clock, say: before the list
            record(LATE, NOW + timedelta(seconds=2)),
        ]
    )
    held = Held(repo)
    stack = await make_stack(held)
    stack.manager.listed = [(LIVE, LIVE), ("1764330000.9", LEG_OF)]
    stack.manager.after_channels = new_channel(TRACKED)
    try:
        await start(stack, tasks)
        await stack.log.wait_for(TRACKED)  # the tracker follows it (not in the list)
        held.release.set()
        async with asyncio.timeout(5):
            await stack.pipeline.sweep_idle()
    finally:
        await stop(stack)
    assert stack.calls.get(TRACKED) is not None
    gone = await repo.get_call(GONE)
    assert gone is not None
    assert (gone.ended_at, gone.end_reason) == (NOW, "ended_while_disconnected")
    assert gone.queue == "support" and gone.hangup_cause is None
    for uniqueid in (LIVE, LEG_OF, TRACKED, LATE):
        kept = await repo.get_call(uniqueid)
        assert kept is not None and kept.ended_at is None, uniqueid
    assert stack.pipeline.stats.swept == 1


async def test_every_channel_list_sweeps(
    repo: CallRepository, tasks: list[asyncio.Task[None]]
) -> None:
    stack = await make_stack(repo)
    stack.manager.listed = [(LIVE, LIVE)]
    try:
        await start(stack, tasks)
        async with asyncio.timeout(5):
            await stack.pipeline.sweep_idle()
        # meanwhile another instance saved a call that ended while our link was down
        await repo.save_calls([record(GONE, NOW - timedelta(minutes=1))])
        stack.resynced.clear()
        stack.manager.writers[-1].transport.abort()
        async with asyncio.timeout(5):
            await stack.resynced.wait()
            await stack.pipeline.drain()
            await stack.pipeline.sweep_idle()
    finally:
        await stop(stack)
    gone = await repo.get_call(GONE)
    assert gone is not None and gone.end_reason == "ended_while_disconnected"


async def test_a_database_down_does_not_stall_or_crash_the_pipeline(
    tmp_path: Path, tasks: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/never-started.db")  # gate closed
    held = Held(CallRepository(session_factory=database.sessions))
    stack = await make_stack(held)
    try:
        await start(stack, tasks)
        async with asyncio.timeout(5):
            await held.entered.wait()
        # the sweep is stuck on the database: events go on being followed meanwhile
        await stack.manager.push(new_channel(TRACKED))
        await stack.log.wait_for(TRACKED)
        with caplog.at_level(logging.WARNING, logger="callcenter.pipeline"):
            held.release.set()
            async with asyncio.timeout(5):
                await stack.pipeline.sweep_idle()
        await stack.manager.push(
            new_channel(LIVE)
            + frame(
                ("Event", "Hangup"),
                ("Channel", "PJSIP/trunk-00000002"),
                ("ChannelState", "4"),
                ("Uniqueid", LIVE),
                ("Linkedid", LIVE),
                ("Cause", "16"),
            )
        )
        await stack.log.wait_for(LIVE, ended=True)
    finally:
        await stop(stack)
        await database.close()
    assert stack.pipeline.stats.sweep_failures == 1
    assert any("database unavailable" in r.getMessage() for r in caplog.records)


async def test_a_hung_sweep_is_bounded_by_its_timeout(
    tasks: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    held = Held(None)  # never released: a database that does not answer
    stack = await make_stack(held, sweep_timeout=0.01)
    try:
        with caplog.at_level(logging.WARNING, logger="callcenter.pipeline"):
            await start(stack, tasks)
            async with asyncio.timeout(5):
                await stack.pipeline.sweep_idle()
    finally:
        await stop(stack)
    assert held.entered.is_set() and not held.release.is_set()
    assert stack.pipeline.stats.sweep_failures == 1
    assert any("database unavailable" in r.getMessage() for r in caplog.records)
