"""The post-login resync against the real pipeline and trackers: a call whose events arrive
while the resync lists are being fetched is followed like any other call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from ami_manager_support import Manager, client_for, frame

from callcenter.agents.service import AgentEffect, AgentStateTracker
from callcenter.asterisk.ami import AmiClient
from callcenter.calls.model import CallRecord
from callcenter.calls.service import CallEffect, CallTracker
from callcenter.pipeline import EventPipeline

CALL = "1700000000.1"


def channel_event(name: str, uniqueid: str, state: str, *extra: tuple[str, str]) -> bytes:
    return frame(
        ("Event", name),
        ("Privilege", "call,all"),
        ("Channel", f"PJSIP/trunk-{uniqueid[-1]:0>8}"),
        ("ChannelState", state),
        ("ChannelStateDesc", {"4": "Ring", "6": "Up"}[state]),
        ("CallerIDNum", "13800138000"),
        ("CallerIDName", "张三"),
        ("ConnectedLineNum", ""),
        ("ConnectedLineName", ""),
        ("Language", "en"),
        ("AccountCode", ""),
        ("Context", "from-trunk"),
        ("Exten", "100"),
        ("Priority", "1"),
        ("Uniqueid", uniqueid),
        ("Linkedid", CALL),
        *extra,
    )


@dataclass
class CallLog:
    records: list[CallRecord] = field(default_factory=list)
    saved: asyncio.Event = field(default_factory=asyncio.Event)

    async def save_calls(self, records: Sequence[CallRecord]) -> None:
        self.records += records
        self.saved.set()

    async def wait_for(self, pred: Callable[[list[CallRecord]], bool]) -> None:
        async with asyncio.timeout(5):
            while not pred(self.records):
                self.saved.clear()
                await self.saved.wait()


class Quiet:
    async def publish(self, effects: Iterable[CallEffect] | Iterable[AgentEffect]) -> None:
        return None


@dataclass
class Stack:
    manager: Manager
    client: AmiClient
    calls: CallTracker
    pipeline: EventPipeline
    log: CallLog
    resynced: asyncio.Event


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    manager = Manager()
    port = await manager.start()
    calls = CallTracker()
    call_log = CallLog()
    pipeline = EventPipeline(
        calls=calls,
        agents=AgentStateTracker(),
        call_publisher=Quiet(),
        agent_publisher=Quiet(),
        call_log=call_log,
        clock=lambda: datetime.now(UTC),
        save_delay=0,
    )
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
    client, resynced = client_for(pipeline, port)
    yield Stack(manager, client, calls, pipeline, call_log, resynced)
    await client.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await manager.stop()


async def start_and_resync(stack: Stack) -> None:
    await stack.client.start()
    async with asyncio.timeout(5):
        await stack.resynced.wait()
        await stack.pipeline.drain()


async def test_call_starting_between_the_resync_lists_is_followed_to_its_end(
    stack: Stack,
) -> None:
    stack.manager.after_channels = channel_event("Newchannel", CALL, "4")
    await start_and_resync(stack)
    # the call was not in the channel list, which was taken before it started: it goes on
    assert stack.log.records[-1].uniqueid == CALL
    assert [r.ended_at for r in stack.log.records] == [None]
    assert len(stack.calls) == 1
    await stack.manager.push(
        channel_event("Newstate", CALL, "6")
        + channel_event("Hangup", CALL, "6", ("Cause", "16"), ("Cause-txt", "Normal Clearing"))
    )
    await stack.log.wait_for(lambda records: any(r.ended_at for r in records))
    ended = [r for r in stack.log.records if r.ended_at is not None]
    assert [r.uniqueid for r in ended] == [CALL]
    assert ended[0].end_reason != "ended_while_disconnected"
    assert ended[0].hangup_cause == 16 and not ended[0].adopted
    assert len(stack.calls) == 0


async def test_after_a_reconnect_calls_gone_end_and_calls_starting_between_the_lists_go_on(
    stack: Stack,
) -> None:
    await start_and_resync(stack)
    await stack.manager.push(channel_event("Newchannel", CALL, "4"))
    await stack.log.wait_for(lambda records: len(records) == 1)
    # the link drops; the call ends meanwhile, another starts while the lists are taken
    later = "1700000001.7"
    stack.manager.after_channels = channel_event("Newchannel", later, "4").replace(
        f"Linkedid: {CALL}".encode(), f"Linkedid: {later}".encode()
    )
    stack.resynced.clear()
    stack.manager.writers[-1].transport.abort()
    async with asyncio.timeout(5):
        await stack.resynced.wait()
        await stack.pipeline.drain()
    ended = [r for r in stack.log.records if r.ended_at is not None]
    assert [(r.uniqueid, r.end_reason) for r in ended] == [(CALL, "ended_while_disconnected")]
    live = stack.calls.active_calls()
    assert [(r.uniqueid, r.adopted) for r in live] == [(later, False)]
