"""The emulator's call flow and actions against ami_transcripts/04-08, byte for byte.

Clock, uniqueid/channel counters, bridge ids, SIP call-ids and the RNG are injected; a real AMI
client socket reads the events and a scripted FastAGI server plays agi_transcripts/01's script.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC

import pytest
from pbxsim_support import split_messages
from shared_asterisk import AMI_DIR

from callcenter.pbxsim.callers import CallerModel, KeyPlan
from callcenter.pbxsim.emulator import Emulator, EmulatorConfig
from callcenter.pbxsim.pbx import STATE_UP, Ids, VirtualClock
from callcenter.pbxsim.queues import AgentProfile, QueueConfig, QueueEntry

pytestmark = pytest.mark.skipif(not AMI_DIR.is_dir(), reason="transcripts not available")

IVR_SCRIPT = [
    b"ANSWER\n",
    b'STREAM FILE custom/welcome ""\n',
    b"GET DATA custom/main-menu 5000 1\n",
    b"SET VARIABLE IVR_CHOICE 2\n",
    b"SET VARIABLE IVR_QUEUE support\n",
]


async def ivr_server(script: list[bytes]) -> tuple[asyncio.Server, int]:
    """A FastAGI server that sends `script`, one line per reply, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\n\n")
            for line in script:
                writer.write(line)
                await writer.drain()
                reply = await reader.readline()
                if not reply or reply == b"HANGUP\n":
                    break
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class AmiTap:
    """A logged-in AMI client socket that collects raw messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> AmiTap:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        writer.write(
            b"Action: Login\r\nUsername: callcenter\r\nSecret: secret\r\n"
            b"Events: call,dialplan,agi,agent,dtmf,cdr\r\n\r\n"
        )
        tap = cls(reader, writer)
        assert b"Authentication accepted" in await tap.next()
        return tap

    async def next(self) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)

    async def until(self, marker: bytes) -> list[bytes]:
        out = []
        while True:
            m = await self.next()
            out.append(m)
            if m.startswith(marker):
                return out

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


def fixed(values: list[str]) -> Iterator[str]:
    return iter(values)


@pytest.fixture
async def agi_port() -> AsyncIterator[int]:
    server, port = await ivr_server(IVR_SCRIPT)
    yield port
    server.close()
    await server.wait_closed()


def make_emulator(
    *,
    start: float,
    agi_port: int,
    uniqueids: list[int],
    channels: list[int],
    agents: list[AgentProfile],
    queue: QueueConfig,
    call_ids: dict[str, str] | None = None,
    bridge_ids: list[str] | None = None,
) -> Emulator:
    bridges = iter(bridge_ids or [])
    ids = Ids(
        uniqueid_numbers=iter(uniqueids),
        channel_numbers=iter(channels),
        uuid_factory=lambda: next(bridges, "00000000-0000-4000-8000-000000000000"),
        call_id_factory=lambda name: (call_ids or {}).get(name.rsplit("-", 1)[0], "x@y"),
    )
    cfg = EmulatorConfig(
        agi_port=4573,
        agi_script="ivr",
        queues=[queue],
        agents=agents,
        members={queue.name: []},
        tz=UTC,
        agi_address_map={("127.0.0.1", 4573): ("127.0.0.1", agi_port)},
        prompts=__import__("callcenter.pbxsim.agi_client", fromlist=["Prompts"]).Prompts(
            durations={"custom/main-menu": 24.5}
        ),
    )
    return Emulator(config=cfg, clock=VirtualClock(start=start), ids=ids)


async def test_04_inbound_ivr_queue_agent_call(agi_port: int) -> None:
    alice = AgentProfile(
        "PJSIP/1001", "Alice Agent", answer_delay=(7.0, 7.0), talk_time=(900, 900), forced="answer"
    )
    emu = make_emulator(
        start=1715681702.0,
        agi_port=agi_port,
        uniqueids=[12, 13],
        channels=[0, 1],
        agents=[alice],
        queue=QueueConfig("support", member_delay=1.0),
        call_ids={
            "PJSIP/trunk": "a84b4c76e66710@198.51.100.7",
            "PJSIP/1001": "5f0c1e4a-7d2b-4c8e-9a1f-3b6d8e2c4f10",
        },
        bridge_ids=["a6d1b5f2-3c0e-4c1a-9b0c-7e5d2f9c1a44"],
    )
    emu.acd.add_member(
        "support", "PJSIP/1001", calls_taken=12, last_call=1715680001, login_time=1715650000
    )
    async with emu:
        tap = await AmiTap.connect(emu.ami_address[1])
        caller = CallerModel(
            number="15551234567",
            name="John Smith",
            keys=[KeyPlan("2", delay=24.0)],
            talk_limit=147.0,
        )
        summary = await emu.inbound_call(caller)
        got = await tap.until(b"Event: Cdr")
        tap.close()
    want = split_messages((AMI_DIR / "raw/04_inbound_ivr_queue_agent_call.ast.raw").read_bytes())
    assert [m.split(b"\r\n")[0] for m in got] == [m.split(b"\r\n")[0] for m in want]
    for g, w in zip(got, want, strict=True):
        assert g == w
    assert summary.outcome == "answered"
    assert summary.agent == "PJSIP/1001"
    assert summary.agi_status == "SUCCESS"


async def test_05_queue_abandon(agi_port: int) -> None:
    bob = AgentProfile("PJSIP/1002", "Bob Agent", forced="noanswer")
    emu = make_emulator(
        start=1715682000.0,
        agi_port=agi_port,
        uniqueids=[20, 22],
        channels=[4, 5],
        agents=[bob],
        queue=QueueConfig("support", member_timeout=300.0),
    )
    emu.acd.add_member(
        "support",
        "PJSIP/1002",
        membership="dynamic",
        calls_taken=4,
        last_call=1715679000,
        login_time=1715670000,
    )
    async with emu:
        tap = await AmiTap.connect(emu.ami_address[1])
        caller = CallerModel(
            number="15559876543", name="Mary Jones", keys=[KeyPlan("2", delay=26.0)], patience=22.0
        )
        summary = await emu.inbound_call(caller)
        got = await tap.until(b"Event: Cdr")
        tap.close()
    raw = (AMI_DIR / "raw/05_queue_abandon.ast.raw").read_bytes()
    want = split_messages(raw)[:-2]  # the ring-no-answer variant is checked below
    start = next(i for i, m in enumerate(got) if b"Application: Queue\r\n" in m)
    got = got[start:-1]  # from Newexten(Queue), without the Cdr (omitted in the transcript)
    assert [m.split(b"\r\n")[0] for m in got] == [m.split(b"\r\n")[0] for m in want]
    for g, w in zip(got, want, strict=True):
        assert g == w
    assert summary.outcome == "abandoned"


async def test_05_variant_ring_no_answer(agi_port: int) -> None:
    bob = AgentProfile("PJSIP/1002", "Bob Agent", forced="noanswer")
    emu = make_emulator(
        start=1715682000.0,
        agi_port=agi_port,
        uniqueids=[20, 22],
        channels=[4, 5, 6],
        agents=[bob],
        queue=QueueConfig("support", member_timeout=15.0, autopause=True),
    )
    emu.acd.add_member(
        "support", "PJSIP/1002", membership="dynamic", calls_taken=4, last_call=1715679000
    )
    async with emu:
        tap = await AmiTap.connect(emu.ami_address[1])
        caller = CallerModel(
            number="15559876543", name="Mary Jones", keys=[KeyPlan("2", delay=26.0)], patience=40.0
        )
        summary = await emu.inbound_call(caller)
        got = await tap.until(b"Event: Cdr")
        tap.close()
    want = split_messages((AMI_DIR / "raw/05_queue_abandon.ast.raw").read_bytes())[-2:]
    i = next(i for i, m in enumerate(got) if m.startswith(b"Event: AgentRingNoAnswer"))
    assert got[i : i + 2] == want
    pause = [m for m in got if m.startswith(b"Event: QueueMemberPause")]
    assert len(pause) == 1 and b"PausedReason: Auto-Pause\r\n" in pause[0]
    assert summary.outcome == "abandoned"


async def test_06_originate_async_success(agi_port: int) -> None:
    alice = AgentProfile("PJSIP/1001", "Alice Agent", answer_delay=(3, 3), forced="answer")
    bob = AgentProfile("PJSIP/1002", "Bob Agent", answer_delay=(0, 0), forced="answer")
    emu = make_emulator(
        start=1715683000.0,
        agi_port=agi_port,
        uniqueids=[30, 31],
        channels=[7, 9, 8],  # the first call's trunk leg (elided in the transcript) takes 9
        agents=[alice, bob],
        queue=QueueConfig("support"),
    )
    clock = emu.clock
    assert isinstance(clock, VirtualClock)
    app_raw = split_messages((AMI_DIR / "raw/06_originate_async_success.app.raw").read_bytes())
    want = split_messages((AMI_DIR / "raw/06_originate_async_success.ast.raw").read_bytes())
    async with emu:
        tap = await AmiTap.connect(emu.ami_address[1])
        await tap.send(app_raw[0])
        got = await tap.until(b"Event: OriginateResponse")
        clock.freeze(at=1715683010.0)
        assert got == want[: len(got)]
        await tap.send(app_raw[1])
        resp = await tap.until(b"Response: ")  # the first call's Dial events may come first
        assert resp[-1] == want[len(got)]
        tail = await tap.until(b"Event: OriginateResponse")
        while b"ActionID: orig-0002" not in tail[-1]:
            tail += await tap.until(b"Event: OriginateResponse")
        assert tail[-1] == want[-1]
        clock.thaw()
        tap.close()


async def test_07_originate_failures(agi_port: int) -> None:
    agents = [
        AgentProfile("PJSIP/1002", "Bob Agent", forced="busy"),
        AgentProfile("PJSIP/1003", "Carol Agent", forced="noanswer"),
        AgentProfile("PJSIP/1004", "Dan Agent", answer_delay=(4, 4), forced="reject"),
        AgentProfile("PJSIP/1001", "Alice Agent", answer_delay=(5, 5), forced="answer"),
    ]
    emu = make_emulator(
        start=1715683100.0,
        agi_port=agi_port,
        uniqueids=[40, 44, 45, 46, 47],
        channels=[9, 10, 11, 12, 13, 14],
        agents=agents,
        queue=QueueConfig("support"),
    )
    app = split_messages((AMI_DIR / "raw/07_originate_failures.app.raw").read_bytes())
    want = split_messages((AMI_DIR / "raw/07_originate_failures.ast.raw").read_bytes())
    clock = emu.clock
    assert isinstance(clock, VirtualClock)
    got: list[bytes] = []
    async with emu:
        tap = await AmiTap.connect(emu.ami_address[1])
        # A-D: async originates, each until its OriginateResponse
        for i, start in enumerate((1715683100.0, 1715683200.0, 1715683300.0, 1715683400.0)):
            clock.set_time(start)
            await tap.send(app[i])
            got += await tap.until(b"Event: OriginateResponse")
        # E: immediate errors
        for i in range(4, 8):
            await tap.send(app[i])
            got.append(await tap.next())
        assert got == want[:27]
        # F: synchronous originates: the response is the outcome, events only after it
        await tap.send(app[8])
        first = await tap.next()
        assert first == want[27]
        await tap.send(app[9])
        rest = await tap.until(b"Response: ")
        assert rest[-1] == want[28]
        events = [m.split(b"\r\n")[0] for m in rest[:-1]]
        assert events == [
            b"Event: Newchannel",
            b"Event: DialBegin",
            b"Event: DialEnd",
            b"Event: Hangup",
        ]
        assert not any(m.startswith(b"Event: OriginateResponse") for m in rest)
        tap.close()


async def test_08_queue_actions(agi_port: int) -> None:
    agents = [
        AgentProfile("PJSIP/1001", "Alice Agent"),
        AgentProfile("PJSIP/1002", "Bob Agent", registered=False),
        AgentProfile("PJSIP/1003", "Carol Agent"),
    ]
    emu = make_emulator(
        start=1715682600.0,
        agi_port=agi_port,
        uniqueids=[50],
        channels=[6],
        agents=agents,
        queue=QueueConfig("support"),
    )
    q = emu.acd.queues["support"]
    q.holdtime, q.talktime, q.completed, q.abandoned, q.completed_in_sl = 9, 151, 13, 2, 12
    emu.acd.add_member(
        "support", "PJSIP/1001", calls_taken=13, last_call=1715681885, login_time=1715650000
    )
    emu.acd.add_member(
        "support",
        "PJSIP/1002",
        membership="dynamic",
        calls_taken=4,
        last_call=1715679000,
        last_pause=1715682500,
        login_time=1715670000,
        paused=True,
        paused_reason="lunch",
    )
    # a caller that has waited 41 s in the queue, 63 s after its channel was created
    ch = emu.pbx.new_channel(
        endpoint="trunk",
        context="from-trunk",
        exten="5551000",
        state=STATE_UP,
        caller_num="15552223333",
    )
    ch.priority, ch.application, ch.app_data = 4, "Queue", "support,t,,,300"
    q.entries.append(QueueEntry(ch, 0, 1715682622.0))
    app = split_messages((AMI_DIR / "raw/08_lists_command_queue_actions.app.raw").read_bytes())
    want = split_messages((AMI_DIR / "raw/08_lists_command_queue_actions.ast.raw").read_bytes())
    clock = emu.clock
    assert isinstance(clock, VirtualClock)
    clock.freeze(at=1715682663.0)
    got: list[bytes] = []
    async with emu:
        tap = await AmiTap.connect(emu.ami_address[1])
        for i, stop in enumerate(
            (
                b"Event: QueueStatusComplete",
                b"Event: QueueSummaryComplete",
                b"Event: CoreShowChannelsComplete",
            )
        ):
            await tap.send(app[i])
            got += await tap.until(stop)
        # the Command section describes the queue at 1715682600, without the caller
        q.entries.clear()
        emu.pbx.channels.clear()
        clock._now = 1715682600.0
        for i in (3, 4, 5):
            await tap.send(app[i])
            got.append(await tap.next())
        clock._now = 1715683500.0
        for i, n in ((6, 2), (7, 1), (8, 1)):
            await tap.send(app[i])
            for _ in range(n):
                got.append(await tap.next())
        clock._now = 1715683560.0
        for i, n in ((9, 2), (10, 2), (11, 1), (12, 2), (13, 1)):
            await tap.send(app[i])
            for _ in range(n):
                got.append(await tap.next())
        bob = emu.acd.agents["PJSIP/1002"]
        bob.profile.registered = True
        emu.acd.set_registered("PJSIP/1002", False)
        got.append(await tap.next())
        clock.thaw()
        tap.close()
    assert [m.split(b"\r\n")[0] for m in got] == [m.split(b"\r\n")[0] for m in want]
    for g, w in zip(got, want, strict=True):
        assert g == w


def test_counter_iterators() -> None:
    ids = Ids(uniqueid_numbers=iter([5]), channel_numbers=itertools.count(10))
    assert ids.uniqueid(1.9) == "1.5"
    assert ids.uniqueid(2.0) == "2.1"
    assert ids.channel_suffix() == "0000000a"


async def test_09_async_agi(agi_port: int) -> None:
    alice = AgentProfile("PJSIP/1001", "Alice Agent")
    bob = AgentProfile("PJSIP/1002", "Bob Agent")
    emu = make_emulator(
        start=1715684000.0,
        agi_port=agi_port,
        uniqueids=[60, 61],
        channels=[13, 14],
        agents=[alice, bob],
        queue=QueueConfig("support"),
    )
    emu.pbx.ids.thread_ids = iter([140245853312576])
    for _ in range(7):  # CommandIds continue glibc's random() sequence
        emu.pbx.ids.command_ids.next()
    emu.config.prompts.durations["hello-world"] = 1.72
    app = split_messages((AMI_DIR / "raw/09_async_agi.app.raw").read_bytes())
    want = split_messages((AMI_DIR / "raw/09_async_agi.ast.raw").read_bytes())
    async with emu:
        tap = await AmiTap.connect(emu.ami_address[1])
        call = asyncio.ensure_future(emu.internal_call("PJSIP/1001", "700"))
        got = await tap.until(b"Event: AsyncAGIStart")
        got = got[next(i for i, m in enumerate(got) if m.startswith(b"Event: Newexten")) :]
        # the transcript's channel had IVR_CHOICE=2 from earlier dialplan steps
        emu.pbx.channels["PJSIP/1001-0000000d"].variables["IVR_CHOICE"] = "2"
        for i in range(3):
            await tap.send(app[i])
            got += await tap.until(b"Event: AsyncAGIExec")
        got += await tap.until(b"Event: VarSet")
        n = len(got)
        assert got == want[:n]
        summary = await call
        assert summary.agi_status == "SUCCESS"
        emu.pbx.new_channel(endpoint="1002", context="from-internal", exten="s", state=STATE_UP)
        for i in range(3, 6):
            await tap.send(app[i])
            resp = await tap.until(b"Response: ")
            assert resp[-1] == want[n + i - 3]
        tap.close()
