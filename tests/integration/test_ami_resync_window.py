"""The post-login resync against the real pipeline and trackers: a call whose events arrive
while the resync lists are being fetched is followed like any other call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from callcenter.agents.service import AgentEffect, AgentStateTracker
from callcenter.asterisk.ami import AmiClient
from callcenter.asterisk.events import SUBSCRIBED_EVENTS, is_tracked_variable
from callcenter.asterisk.message import AmiMessage
from callcenter.calls.model import CallRecord
from callcenter.calls.service import CallEffect, CallTracker
from callcenter.pipeline import EventPipeline

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
CALL = "1700000000.1"


def frame(*headers: tuple[str, str]) -> bytes:
    return AmiMessage(headers).to_bytes()


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


def listed_channel(aid: str, uniqueid: str) -> bytes:
    return frame(
        ("Event", "CoreShowChannel"),
        ("ActionID", aid),
        ("Channel", f"PJSIP/trunk-{uniqueid[-1]:0>8}"),
        ("ChannelState", "6"),
        ("ChannelStateDesc", "Up"),
        ("CallerIDNum", "13800138000"),
        ("CallerIDName", ""),
        ("Context", "from-trunk"),
        ("Exten", "100"),
        ("Priority", "1"),
        ("Uniqueid", uniqueid),
        ("Linkedid", CALL),
        ("Application", "AGI"),
        ("ApplicationData", "agi://127.0.0.1/hotline"),
        ("Duration", "00:00:05"),
        ("BridgeId", ""),
    )


def list_reply(aid: str, complete: str, items: Sequence[bytes] = ()) -> bytes:
    return (
        frame(("Response", "Success"), ("ActionID", aid), ("EventList", "start"))
        + b"".join(items)
        + frame(
            ("Event", complete),
            ("ActionID", aid),
            ("EventList", "Complete"),
            ("ListItems", str(len(items))),
        )
    )


@dataclass
class Manager:
    """Asterisk's manager session as far as the resync goes: it answers the actions of a
    session one at a time and writes the events queued meanwhile between two replies.
    `after_channels` is written right after the channel list (a call that starts while
    CoreShowChannels runs); `listed` are the channels up when the list is taken."""

    after_channels: bytes = b""
    listed: list[str] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def push(self, data: bytes) -> None:
        self.writers[-1].write(data)
        await self.writers[-1].drain()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(BANNER)
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                fields = dict(line.split(": ", 1) for line in raw.decode().split("\r\n") if line)
                aid = fields.get("ActionID", "")
                action = fields["Action"]
                if action == "CoreShowChannels":
                    items = [listed_channel(aid, u) for u in self.listed]
                    writer.write(list_reply(aid, "CoreShowChannelsComplete", items))
                    writer.write(self.after_channels)
                elif action == "QueueStatus":
                    writer.write(list_reply(aid, "QueueStatusComplete"))
                else:
                    writer.write(frame(("Response", "Success"), ("ActionID", aid)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


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
    resynced = asyncio.Event()

    async def on_resync(snapshot: object) -> None:
        await pipeline.resync(snapshot)  # type: ignore[arg-type]
        if getattr(snapshot, "stage", "queues") == "queues":
            resynced.set()

    client = AmiClient(
        host="127.0.0.1",
        port=port,
        username="u",
        secret="s",
        on_message=pipeline.feed,
        on_messages=pipeline.feed_many,
        on_resync=on_resync,
        only_events=SUBSCRIBED_EVENTS,
        only_variables=is_tracked_variable,
        ping_interval=60.0,
    )
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
