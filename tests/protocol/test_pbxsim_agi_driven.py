"""The emulator's callback-driven FastAGI session (the benchmarks' load generator) against the
task-driven one: the same bytes reach the server and the same results come back, for hang-ups
at every command, key plans, both clocks, AGIEXITONHANGUP and both ways a server may end."""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest

from callcenter.pbxsim.agi_client import AgiSession, AgiUrl, HangupEvent
from callcenter.pbxsim.callers import CallerModel, IvrHangup, KeyPlan
from callcenter.pbxsim.pbx import STATE_UP, Ids, Pbx, RealClock, VirtualClock, null_sink

SCRIPT = [
    "ANSWER",
    'STREAM FILE hotline/choose-language "12"',
    "SET VARIABLE CALLCENTER_LANGUAGE zh",
    'STREAM FILE zh/hotline/welcome ""',
    "GET DATA zh/enter-number 3000 4",
    "STREAM FILE zh/hotline/main-menu 0123456789*#",
    "WAIT FOR DIGIT 2000",
    "NOOP",
    "GET OPTION zh/x 12 1500",
    "SAY DIGITS 123 #",
    "RECORD FILE /tmp/x wav # 3000",
    'STREAM FILE no-such-file ""',
    "BOGUS CMD",
    "SET VARIABLE",
    "STREAM FILE a b c d e f",
    "SET VARIABLE IVR_QUEUE general",
    'STREAM FILE zh/after ""',
    "SET VARIABLE AFTER 1",
]
FINAL = (b"200", b"510", b"511", b"520 ")

Log = list[tuple[str, bytes]]
KeyStep = KeyPlan | str | None


async def _server(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    log: Log,
    tail: str,
    done: asyncio.Event,
) -> None:
    try:
        await _serve(reader, writer, log, tail)
    except ConnectionError as exc:
        log.append(("reset", type(exc).__name__.encode()))
    finally:
        done.set()


async def _serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: Log, tail: str
) -> None:
    env = b""
    while not env.endswith(b"\n\n"):
        chunk = await reader.readline()
        if not chunk:
            return
        env += chunk
    log.append(("env", env))
    for command in SCRIPT:
        writer.write(command.encode() + b"\n")
        try:
            await writer.drain()
        except ConnectionError:
            break
        line = b""
        while True:
            line = await reader.readline()
            log.append(("in", line))
            if not line or line.startswith(FINAL):
                break
        if not line:
            break
    if tail == "close":
        writer.close()
    else:
        with contextlib.suppress(OSError):
            writer.write_eof()
    while line := await reader.readline():  # what the client still sends (HANGUP lines)
        log.append(("tail", line))
    writer.close()


async def _run(
    driven: bool, caller: CallerModel, clock_kind: str, exit_on_hangup: bool, tail: str
) -> tuple[Log, tuple[object, ...]]:
    log: Log = []
    done = asyncio.Event()
    server = await asyncio.start_server(lambda r, w: _server(r, w, log, tail, done), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clock = RealClock(speed=100_000.0, start=1.7e9) if clock_kind == "real" else VirtualClock()
    pbx = Pbx(publish=null_sink, clock=clock, ids=Ids())
    channel = pbx.new_channel(
        endpoint="trunk",
        context="from-trunk",
        exten="5551000",
        state=STATE_UP,
        caller_num=caller.number,
        caller_name=caller.name,
        dnid="5551000",
    )
    if driven:
        channel.hangup_requested = HangupEvent()
    session = AgiSession(
        pbx=pbx,
        channel=channel,
        url=AgiUrl("127.0.0.1", port, "hotline", "agi://x/hotline"),
        caller=caller,
        exit_on_hangup=exit_on_hangup,
        callback_driven=driven,
    )
    async with asyncio.timeout(10):
        result = await session.run()
        await done.wait()  # the server's side of the call, whole
    server.close()
    await server.wait_closed()
    replies = [_same(r.encode(), clock_kind).decode() for r in result.replies]
    return [(kind, _same(data, clock_kind)) for kind, data in log], (
        result.status, result.variables, result.commands, replies, result.hung_up, result.goto
    )  # fmt: skip


def _same(data: bytes, clock_kind: str) -> bytes:
    """Without what differs between two runs anyway (fresh ids; real-clock play positions)."""
    data = re.sub(rb"agi_(uniqueid|threadid): [0-9.]+", rb"agi_\1: X", data)
    if clock_kind == "real":
        data = re.sub(rb"(result=-1|\(hangup\)) endpos=\d+", rb"\1 endpos=X", data)
    return data


KEYS: list[tuple[KeyStep, ...]] = [
    (),
    (KeyPlan("1", delay=0.5), "12", KeyPlan("3", delay=0.2), KeyPlan("5", delay=1.0), None, "#"),
]
HANGUPS: list[IvrHangup | None] = [None] + [
    IvrHangup(command=k, after=a) for k in range(0, len(SCRIPT), 2) for a in (0.0, 0.3, 2.0)
]


@pytest.mark.parametrize("tail", ["close", "eof"])
@pytest.mark.parametrize("exit_on_hangup", [False, True])
@pytest.mark.parametrize("clock_kind", ["real", "virtual"])
@pytest.mark.parametrize("keys", KEYS, ids=["no-keys", "keys"])
@pytest.mark.parametrize("hangup", HANGUPS, ids=str)
async def test_callback_driven_session_is_wire_identical(
    hangup: IvrHangup | None,
    keys: tuple[KeyStep, ...],
    clock_kind: str,
    exit_on_hangup: bool,
    tail: str,
) -> None:
    caller = CallerModel(number="13800000001", name="张三", keys=keys, ivr_hangup=hangup)
    awaited = await _run(False, caller, clock_kind, exit_on_hangup, tail)
    driven = await _run(True, caller, clock_kind, exit_on_hangup, tail)
    assert driven == awaited
