"""FastAGI client behaviour: hang-ups at every command, unreachable server, run_agi_call."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence

import pytest

from callcenter.pbxsim.agi_client import AgiSession, AgiUrl, find_command, parse_args, run_agi_call
from callcenter.pbxsim.callers import CallerModel, IvrHangup, KeyPlan
from callcenter.pbxsim.emulator import Emulator, EmulatorConfig
from callcenter.pbxsim.pbx import STATE_UP, Ids, Pbx, VirtualClock
from callcenter.pbxsim.queues import AgentProfile, QueueConfig

SCRIPT = [
    b"ANSWER\n",
    b'STREAM FILE custom/welcome ""\n',
    b"GET DATA custom/main-menu 5000 1\n",
    b"SET VARIABLE IVR_CHOICE 2\n",
    b"SET VARIABLE IVR_QUEUE support\n",
]


class IvrServer:
    """Sends `script` line by line; records what it read (replies and HANGUP lines)."""

    def __init__(self, script: Sequence[bytes]) -> None:
        self.script = list(script)
        self.sessions: list[list[bytes]] = []
        self.done = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen: list[bytes] = []
        self.sessions.append(seen)
        try:
            await reader.readuntil(b"\n\n")
            for line in self.script:
                writer.write(line)
                await writer.drain()
                reply = await reader.readline()
                seen.append(reply)
                if not reply or reply == b"HANGUP\n":
                    break
            if seen and seen[-1] != b"HANGUP\n":
                # half-close: Asterisk still writes its final HANGUP
                writer.write_eof()
                seen.append(await reader.read())
        finally:
            writer.close()
            self.done.set()


@pytest.fixture
async def ivr() -> AsyncIterator[tuple[IvrServer, int]]:
    srv = IvrServer(SCRIPT)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    yield srv, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, list[tuple[str, str]]]] = []

    def __call__(self, name: str, klass: str, fields: Sequence[tuple[str, str]]) -> None:
        self.items.append((name, list(fields)))

    def names(self) -> list[str]:
        return [n for n, _ in self.items]

    def values(self, name: str, key: str) -> list[str]:
        return [v for n, f in self.items if n == name for k, v in f if k == key]


def emulator(port: int, events: Events, **kw: object) -> Emulator:
    cfg = EmulatorConfig(
        agi_port=port,
        queues=[QueueConfig("support"), QueueConfig("general")],
        agents=[AgentProfile("PJSIP/1001", "Alice", answer_delay=(2, 2), forced="answer")],
        **kw,  # type: ignore[arg-type]
    )
    return Emulator(config=cfg, clock=VirtualClock(), publish=events)


async def test_run_agi_call_without_pbx(ivr: tuple[IvrServer, int]) -> None:
    srv, port = ivr
    events = Events()
    result = await run_agi_call(
        host="127.0.0.1",
        port=port,
        script="hotline",
        caller=CallerModel(number="13800138000", name="张三", keys=["2"]),
        publish=events,
        clock=VirtualClock(),
    )
    assert result.status == "SUCCESS"
    assert result.variables == {"IVR_CHOICE": "2", "IVR_QUEUE": "support"}
    assert [c.split()[0] for c in result.commands] == ["ANSWER", "STREAM", "GET", "SET", "SET"]
    assert "AGIExecStart" in events.names() and "DTMFBegin" in events.names()
    await srv.done.wait()
    assert srv.sessions[0][-1] == b"HANGUP\n"  # the final HANGUP seen through the half-close


@pytest.mark.parametrize("command", [0, 1, 2, 3, 4])
async def test_caller_hangs_up_at_each_command(ivr: tuple[IvrServer, int], command: int) -> None:
    srv, port = ivr
    events = Events()
    emu = emulator(port, events)
    caller = CallerModel(
        number="15550001111", keys=["2"], ivr_hangup=IvrHangup(command=command, after=0.5)
    )
    summary = await emu.inbound_call(caller)
    await emu.stop()
    await srv.done.wait()
    assert summary.outcome == "ivr_hangup"
    assert summary.agi_status == "HANGUP"
    assert "QueueCallerJoin" not in events.names()
    assert events.names()[-2:] == ["Hangup", "Cdr"]
    assert "HangupRequest" in events.names()
    seen = srv.sessions[0]
    assert seen[-1].startswith(b"HANGUP\n")
    assert len(seen) == command + 2  # replies up to the interrupted command, then HANGUP


async def test_unreachable_agi_goes_to_default_queue() -> None:
    events = Events()
    emu = emulator(free_port(), events)
    summary = await emu.inbound_call(CallerModel(number="15550002222", talk_limit=30.0))
    await emu.stop()
    assert summary.agi_status == "FAILURE"
    assert summary.outcome == "answered"
    assert ("AGISTATUS", "FAILURE") in [
        (v, w) for n, f in events.items if n == "VarSet" for (k, v), (k2, w) in [f[-2:]]
    ]
    assert events.values("QueueCallerJoin", "Queue") == ["general"]
    assert "AGIExecStart" not in events.names()


async def test_a_live_caller_left_without_a_queue_goes_to_the_default_queue() -> None:
    """The AGI server closed the socket without setting IVR_QUEUE (it stopped or died): like the
    shipped dialplan, the caller is queued in the default queue, not hung up."""
    srv = IvrServer([b"ANSWER\n", b"SET VARIABLE IVR_RESULT callback\n"])
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    events = Events()
    emu = emulator(server.sockets[0].getsockname()[1], events)
    summary = await emu.inbound_call(CallerModel(number="15550003333", talk_limit=30.0))
    await emu.stop()
    server.close()
    assert summary.agi_status == "SUCCESS"
    assert summary.outcome == "answered"
    assert events.values("QueueCallerJoin", "Queue") == ["general"]


async def test_idle_hangup_via_ami_while_server_thinks() -> None:
    """A hang-up while no command is pending: HANGUP line, then 511 for STREAM FILE."""
    got: list[bytes] = []
    hung = asyncio.Event()
    ready = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\n\n")
        writer.write(b"ANSWER\n")
        got.append(await reader.readline())
        ready.set()
        got.append(await reader.readline())  # the unsolicited HANGUP
        hung.set()
        writer.write(b'STREAM FILE custom/x ""\n')
        got.append(await reader.readline())
        writer.write(b"GET VARIABLE NOPE\n")
        got.append(await reader.readline())
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pbx = Pbx(publish=lambda *a: None, clock=VirtualClock(), ids=Ids())
    ch = pbx.new_channel(endpoint="trunk", context="from-trunk", exten="1", state=STATE_UP)
    session = AgiSession(pbx=pbx, channel=ch, url=AgiUrl("127.0.0.1", port, "x", "agi://x"))
    task = asyncio.ensure_future(session.run())
    await ready.wait()
    pbx.request_hangup(ch, 16)
    result = await task
    server.close()
    assert got == [
        b"200 result=0\n",
        b"HANGUP\n",
        b"511 Command Not Permitted on a dead channel or intercept routine\n",
        b"200 result=0\n",
    ]
    assert result.status == "HANGUP"


def test_parse_args_like_asterisk() -> None:
    assert parse_args('STREAM FILE custom/welcome ""') == ["STREAM", "FILE", "custom/welcome", ""]
    assert parse_args('VERBOSE "IVR step 3" 1') == ["VERBOSE", "IVR step 3", "1"]
    assert parse_args("SET  VARIABLE\tX a\\ b") == ["SET", "VARIABLE", "X", "a b"]
    assert find_command(["get", "FULL", "variable", "x"]) == "get full variable"
    assert find_command(["ANSWER\r"]) is None
    assert find_command(["PLAY", "FILE"]) is None


async def test_get_data_partial_input_times_out() -> None:
    """GET DATA: '12' then silence -> '12 (timeout)'; KeyPlan timings drive the result."""
    replies: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\n\n")
        for line in (b"GET DATA x 3000 4\n", b"GET DATA x 3000 4\n"):
            writer.write(line)
            replies.append(await reader.readline())
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    res = await run_agi_call(
        host="127.0.0.1",
        port=port,
        caller=CallerModel(number="1", keys=[KeyPlan("12", delay=1.0), KeyPlan("1#", delay=9.0)]),
        clock=VirtualClock(),
    )
    server.close()
    assert replies == [b"200 result=12 (timeout)\n", b"200 result= (timeout)\n"]
    assert res.status == "SUCCESS"


async def test_malformed_commands_get_clear_replies() -> None:
    lines = [
        b'SAY NUMBER forty-two ""\n',
        b"EXEC Wait abc\n",
        b"\xff\xfe garbage\n",
        b"SET AUTOHANGUP soon\n",
        b"CHANNEL STATUS PJSIP/none-00000000\n",
        b"DATABASE DEL fam nokey\n",
    ]
    replies: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\n\n")
        for line in lines:
            writer.write(line)
            replies.append(await reader.readline())
            if replies[-1].startswith(b"520-"):  # multi-line usage block
                while not replies[-1].endswith(b"520 End of proper usage.\n"):
                    more = await reader.readline()
                    if not more:
                        break
                    replies[-1] += more
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    res = await run_agi_call(
        host="127.0.0.1",
        port=server.sockets[0].getsockname()[1],
        caller=CallerModel(number="1"),
        clock=VirtualClock(),
    )
    server.close()
    assert replies[0].startswith(b"520-Invalid command syntax.  Proper usage follows:\n")
    assert replies[0].endswith(b"\n520 End of proper usage.\n")
    assert replies[1:] == [
        b"200 result=0\n",
        b"510 Invalid or unknown command\n",
        replies[3],
        b"200 result=-1\n",
        b"200 result=0\n",
    ]
    assert replies[3].startswith(b"520-") and replies[3].endswith(b"520 End of proper usage.\n")
    assert res.status == "SUCCESS"
