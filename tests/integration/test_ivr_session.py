"""The callback-driven IVR session (IvrRunner + AgiConnection.submit) against an oracle.

The oracle drives the same pure engine one awaited ``AgiConnection.command()`` at a time (the
runner's previous design). For many callers (every path of hotline.yaml, a hang-up during every
command, replies split into single bytes, EOF in the middle of a reply, 510/511/520 replies)
both must send the same commands, set the same variables and record the same steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ivr_support import ROOT, Customers, Recorder, hotline

from callcenter.asterisk.agi import (
    DEAD_ALLOWED,
    AgiCommandError,
    AgiConnection,
    AgiHangup,
    AgiServer,
    StaticRouter,
    command_words,
)
from callcenter.calls.model import IvrStep
from callcenter.ivr.engine import (
    HUNG_UP,
    MAX_NODE_VISITS,
    Ack,
    Digits,
    GetData,
    Hangup,
    HoursCheck,
    Lookup,
    LookupResult,
    Play,
    RecordCallback,
    Reply,
    SayDigits,
    SetVar,
    Step,
    WaitDigit,
    run_flow,
)
from callcenter.ivr.model import CustomerInfo
from callcenter.ivr.runner import IvrRunner
from callcenter.ivr.service import FlowRegistry

OPEN_NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
CLOSED_NOW = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
TIMEOUT = 5.0
VIP = CustomerInfo(customer_id="C42", name="王总", is_key_customer=True, language="zh")


@dataclass
class Caller:
    """A scripted res_agi. ``hangup_after``: the caller hangs up during that command (1-based);
    ``eof_after``: the socket closes after that command, with ``partial`` of a reply written;
    ``byte_by_byte``: every reply is written one byte at a time; ``error_on``: the reply to a
    command starting with that text."""

    keys: list[str]
    hangup_after: int | None = None
    eof_after: int | None = None
    partial: bytes = b""
    byte_by_byte: bool = False
    error_on: tuple[str, str] | None = None
    commands: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    dead: bool = False
    closed_by_server: bool = False

    def reply(self, line: str) -> str:
        name = command_words(line)
        args = shlex.split(line)[len(name.split()) :]
        if self.error_on is not None and line.startswith(self.error_on[0]):
            return self.error_on[1]
        if self.dead:
            if name not in DEAD_ALLOWED:
                return "511 Command Not Permitted on a dead channel or intercept routine\n"
        elif self.hangup_after is not None and len(self.commands) >= self.hangup_after:
            self.dead = True
            if name in DEAD_ALLOWED:
                return "HANGUP\n" + self.reply(line)
            if name in ("GET DATA", "WAIT FOR"):
                return "200 result=-1\nHANGUP\n"
            return "200 result=-1 endpos=4000\nHANGUP\n"
        match name:
            case "STREAM FILE" | "SAY DIGITS":
                escape = args[1] if len(args) > 1 else ""
                if escape and self.keys and self.keys[0][:1] in escape and self.keys[0]:
                    key = self.keys.pop(0)
                    return f"200 result={ord(key[0])} endpos=1200\n"
                return "200 result=0 endpos=8000\n"
            case "WAIT FOR":
                key = self.keys.pop(0) if self.keys else ""
                return f"200 result={ord(key[0]) if key else 0}\n"
            case "GET DATA":
                digits = self.keys.pop(0) if self.keys else ""
                return f"200 result={digits}\n" if digits else "200 result= (timeout)\n"
            case "SET VARIABLE":
                self.variables[args[0]] = args[1]
                return "200 result=1\n"
            case "HANGUP":
                self.dead = True
                return "200 result=1\nHANGUP\n"
        return "510 Invalid or unknown command\n"

    async def call(self, port: int, script: str = "hotline") -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                "agi_network: yes\n"
                f"agi_network_script: {script}\n"
                "agi_channel: PJSIP/trunk-00000007\n"
                "agi_uniqueid: 1764300000.7\n"
                "agi_callerid: 13800138000\n"
                "agi_calleridname: 张三\n"
                "\n"
            ).encode()
        )
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readline(), TIMEOUT)
                except ConnectionResetError:  # closed with our last bytes unread
                    raw = b""
                if not raw:
                    self.closed_by_server = True
                    return
                self.commands.append(raw.decode()[:-1])
                if self.eof_after is not None and len(self.commands) >= self.eof_after:
                    writer.write(self.partial)
                    writer.write_eof()
                    self.closed_by_server = await reader.read() == b""
                    return
                data = self.reply(self.commands[-1]).encode()
                # the server may close before reading a trailing HANGUP line
                with contextlib.suppress(ConnectionError):
                    if self.byte_by_byte:
                        for i in range(len(data)):
                            writer.write(data[i : i + 1])
                            await writer.drain()
                            await asyncio.sleep(0)
                    else:
                        writer.write(data)
                    await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


# ---------------------------------------------------------------------------------------------
# the oracle: the same engine, one awaited command() at a time


def oracle_handler(
    recorder: Recorder, customers: Customers, now: datetime, timeout: float
) -> Callable[[AgiConnection], object]:
    flows = FlowRegistry(directory=ROOT / "ivr_flows")
    assert flows.refresh() == []
    flow = flows.get("hotline")
    assert flow is not None

    async def perform(conn: AgiConnection, cmd: object) -> Reply:
        try:
            match cmd:
                case Play() | SayDigits():
                    if isinstance(cmd, Play):
                        reply = await conn.command("STREAM FILE", cmd.file, cmd.escape_digits)
                    else:
                        reply = await conn.command("SAY DIGITS", cmd.digits, "")
                    if reply.result_int == -1 and not conn.dead:
                        # a hang-up (the HANGUP line comes after this reply) or a missing
                        # file: CHANNEL STATUS gets 511 on a dead channel
                        with contextlib.suppress(AgiCommandError):
                            await conn.command("CHANNEL STATUS")
                    if reply.result_int == -1:
                        return HUNG_UP if conn.dead else Digits()
                    return Digits(reply.digit or "")
                case SetVar(name=n, value=v):
                    await conn.command("SET VARIABLE", n, v)
                    return Ack()
                case GetData(file=f, timeout_ms=t, max_digits=m):
                    reply = await conn.command("GET DATA", f, str(t), str(m))
                    if reply.result_int == -1:
                        return HUNG_UP
                    return Digits(reply.result.strip(), reply.timed_out)
                case WaitDigit(timeout_ms=t):
                    reply = await conn.command("WAIT FOR DIGIT", str(t))
                    if reply.result_int == -1:
                        return HUNG_UP
                    return Digits(reply.digit or "", reply.result_int == 0)
                case Hangup():
                    with contextlib.suppress(AgiHangup):
                        if not conn.dead:
                            await conn.command("HANGUP")
                    return Ack()
                case HoursCheck():
                    return now
                case Lookup(number=number):
                    try:
                        async with asyncio.timeout(timeout):
                            return LookupResult(await customers.lookup(number))
                    except Exception:
                        return LookupResult(None, failed=True)
                case RecordCallback():
                    return Ack()
        except AgiHangup:
            return HUNG_UP
        except AgiCommandError:
            return (
                Digits() if isinstance(cmd, Play | SayDigits | GetData | WaitDigit) else Ack(False)
            )
        raise AssertionError(cmd)

    async def handler(conn: AgiConnection) -> None:
        engine = run_flow(
            flow,
            calendar=flows.calendar,
            caller=conn.env.callerid,
            default_queue="general",
            operator_queue="operator",
            variables={"UNIQUEID": conn.env.uniqueid, "CALLER_NAME": "", "DNID": ""},
        )
        seq = 0
        reply: Reply = None
        with contextlib.suppress(StopIteration):
            while True:
                cmd = engine.send(reply)
                if isinstance(cmd, Step):
                    seq += 1
                    step = IvrStep(
                        conn.env.uniqueid, seq, now, cmd.node, cmd.kind, cmd.input, cmd.result
                    )
                    recorder.steps.append(step)
                    reply = Ack()
                else:
                    reply = await perform(conn, cmd)

    return handler


async def settle(server: AgiServer) -> None:
    for _ in range(500):
        if server.stats.sessions_active == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("session did not end")


async def both(
    make_caller: Callable[[], Caller],
    *,
    now: datetime = OPEN_NOW,
    customer: CustomerInfo | None = None,
) -> tuple[tuple[Caller, Recorder], tuple[Caller, Recorder]]:
    """Run a fresh caller against IvrRunner, then against the oracle."""
    ours, ours_rec = make_caller(), Recorder()
    async with hotline(recorder=ours_rec, customers=Customers(customer=customer), now=now) as (
        server,
        runner,
    ):
        await ours.call(server.port)
        await settle(server)
        assert runner.calls_failed == 0
    ref, ref_rec = make_caller(), Recorder()
    handler = oracle_handler(ref_rec, Customers(customer=customer), now, 0.05)
    server = AgiServer(router=StaticRouter({"hotline": handler}), operator_queue="op", port=0)  # type: ignore[dict-item]
    async with server:
        await ref.call(server.port)
        await settle(server)
    return (ours, ours_rec), (ref, ref_rec)


def same(a: tuple[Caller, Recorder], b: tuple[Caller, Recorder]) -> None:
    (ca, ra), (cb, rb) = a, b
    assert ca.commands == cb.commands
    assert ca.variables == cb.variables
    assert ca.closed_by_server and cb.closed_by_server
    strip = [(s.seq, s.node, s.kind, s.input, s.result) for s in ra.steps]
    assert strip == [(s.seq, s.node, s.kind, s.input, s.result) for s in rb.steps]


# every path through hotline.yaml that the scripted keys reach
PATHS: list[tuple[list[str], datetime, CustomerInfo | None]] = [
    (["1", "2"], OPEN_NOW, None),  # zh, complaints
    (["2", "3"], OPEN_NOW, None),  # en, general
    (["1", "0"], OPEN_NOW, None),  # operator key
    (["1", "*", "2"], OPEN_NOW, None),  # replay, then complaints
    (["1", "7", "8", "5"], OPEN_NOW, None),  # invalid keys until exhausted
    ([], OPEN_NOW, None),  # timeouts everywhere
    (["1", "1", "2", "20261128"], OPEN_NOW, None),  # bookings: collect an order number
    (["2", "1", "2", "12"], OPEN_NOW, None),  # bookings: too short, then timeouts
    (["1", "4", "1"], OPEN_NOW, None),  # technical
    (["1", "9", "1"], OPEN_NOW, None),  # callback to the caller's number
    (["1", "9", "2", "02155550123"], OPEN_NOW, None),  # callback to another number
    (["1", "1"], CLOSED_NOW, None),  # out of hours: callback
    (["1", "2"], CLOSED_NOW, None),  # out of hours: goodbye (hangup node)
    (["2", "3"], OPEN_NOW, VIP),  # key customer, language known
]


@pytest.mark.parametrize(("keys", "now", "customer"), PATHS)
async def test_every_path_matches_the_oracle(
    keys: list[str], now: datetime, customer: CustomerInfo | None
) -> None:
    ours, ref = await both(lambda: Caller(keys=list(keys)), now=now, customer=customer)
    same(ours, ref)
    assert not ours[0].dead or ours[0].commands[-1] == "HANGUP"


@pytest.mark.parametrize(("keys", "now", "customer"), PATHS)
async def test_hangup_during_every_command_matches_the_oracle(
    keys: list[str], now: datetime, customer: CustomerInfo | None
) -> None:
    full = Caller(keys=list(keys))
    async with hotline(now=now, customers=Customers(customer=customer)) as (server, _):
        await full.call(server.port)
    for after in range(1, len(full.commands) + 1):
        ours, ref = await both(
            lambda a=after: Caller(keys=list(keys), hangup_after=a),  # type: ignore[misc]
            now=now,
            customer=customer,
        )
        same(ours, ref)
        caller = ours[0]
        assert caller.dead
        after_hangup = caller.commands[after + 1 :]
        assert all(command_words(c) in DEAD_ALLOWED for c in after_hangup), after_hangup


@pytest.mark.parametrize("keys", [["1", "2"], ["1", "1", "2", "20261128"], ["1", "9", "1"]])
async def test_replies_one_byte_at_a_time(keys: list[str]) -> None:
    ours, ref = await both(lambda: Caller(keys=list(keys), byte_by_byte=True))
    same(ours, ref)
    whole, _ = await both(lambda: Caller(keys=list(keys)))
    assert ours[0].commands == whole[0].commands


@pytest.mark.parametrize("partial", [b"", b"200 res", b"200 result=0 endpos=8000"])
@pytest.mark.parametrize("after", [1, 2, 4])
async def test_eof_in_the_middle_of_a_reply_ends_as_a_hangup(partial: bytes, after: int) -> None:
    recorder = Recorder()
    caller = Caller(keys=["1", "2"], eof_after=after, partial=partial)
    async with hotline(recorder=recorder) as (server, runner):
        await caller.call(server.port)
        await settle(server)
        assert runner.calls_completed == 1 and runner.calls_failed == 0
    assert len(caller.commands) == after  # nothing is written after the EOF
    assert caller.closed_by_server
    assert recorder.steps[-1].result == "hangup"


@pytest.mark.parametrize(
    "error",
    [
        "510 Invalid or unknown command\n",
        "520 Invalid command syntax.  Proper usage not available.\n",
        "520-Invalid command syntax.  Proper usage follows:\n usage\n520 End of proper usage.\n",
        "511 Command Not Permitted on a dead channel or intercept routine\n",
    ],
)
@pytest.mark.parametrize("on", ['STREAM FILE zh/hotline/welcome ""', "SET VARIABLE IVR_QUEUE"])
async def test_error_replies_match_the_oracle(error: str, on: str) -> None:
    ours, ref = await both(lambda: Caller(keys=["1", "2"], error_on=(on, error)))
    same(ours, ref)


async def test_server_close_during_a_command_ends_the_session() -> None:
    recorder = Recorder()
    async with hotline(recorder=recorder, shutdown_grace=0.01) as (server, runner):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network_script: hotline\nagi_callerid: 13800138000\n\n")
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert line == b"STREAM FILE hotline/choose-language 12\n"
        # the session is cancelled while its command is in flight, which is never answered:
        # after the grace, nothing more is sent
        await server.close()
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.write(b"200 result=49 endpos=100\n")  # too late: must be ignored
        writer.close()
        assert server.stats.sessions_active == 0
        assert runner.calls_completed == 0
    # flushed after the cancellation
    assert [(s.node, s.result) for s in recorder.steps] == [
        ("lookup", "unknown"),
        ("lookup", "shutdown"),
    ]


async def test_next_command_only_after_the_reply() -> None:
    """Never pipelined: res_agi reads the socket through a buffered stream after poll(), so a
    command written before the previous reply could sit unread."""
    caller = Caller(keys=["1", "9", "1"])
    async with hotline() as (server, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network_script: hotline\nagi_callerid: 13800138000\n\n")
        while True:
            raw = await asyncio.wait_for(reader.readline(), TIMEOUT)
            if not raw:
                break
            caller.commands.append(raw.decode()[:-1])
            with pytest.raises(TimeoutError):  # nothing more until we have answered
                await asyncio.wait_for(reader.readline(), 0.02)
            writer.write(caller.reply(caller.commands[-1]).encode())
        writer.close()
        await settle(server)
    assert caller.commands[-1] == "HANGUP" and len(caller.commands) > 8


async def test_replies_sent_ahead_do_not_nest_callbacks(tmp_path: Path) -> None:
    """A peer that writes all its replies at once (a protocol violation) gets them matched
    one per command, as the awaited API would, without one nested callback per command."""
    (tmp_path / "spin.yaml").write_text(
        "name: spin\nstart: m\nnodes:\n"
        '  m: {type: menu, prompt: p, options: {"1": s, "2": q}}\n'
        "  s: {type: set, var: X, value: v, channel: true, next: m}\n"
        "  q: {type: queue, queue: general}\n"
    )
    flows = FlowRegistry(directory=tmp_path)
    assert flows.refresh() == []
    runner = IvrRunner(
        flows=flows,
        customers=Customers(),
        recorder=Recorder(),
        calendar=None,
        clock=lambda: OPEN_NOW,
        lookup_timeout=0.05,
        default_queue="general",
        operator_queue="operator",
    )
    rounds = MAX_NODE_VISITS  # far more nested callbacks than the recursion limit allows
    async with AgiServer(router=runner, operator_queue="operator", port=0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"agi_network_script: spin\n\n"
            + b"200 result=49 endpos=1\n200 result=1\n" * rounds
            + b"200 result=1\n" * 4
        )
        received = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        await settle(server)
    commands = received.decode().splitlines()
    assert commands[-4:-1] == [
        "SET VARIABLE IVR_QUEUE general",
        "SET VARIABLE QUEUE_PRIO 0",
        "SET VARIABLE IVR_CHOICE 1",
    ]
    assert runner.calls_completed == 1 and runner.calls_failed == 0


async def test_a_finished_session_is_freed_without_the_cyclic_collector() -> None:
    # no reference cycle through the session, its connection or its socket: they go with
    # their last reference, at once
    async with hotline() as (server, _runner):
        await Caller(keys=["1", "2"]).call(server.port)
        await settle(server)
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                await Caller(keys=["1", "2"]).call(server.port)
            await settle(server)
            kinds = {"_FlowSession", "AgiConnection", "_AgiSocket"}
            left = [type(o).__name__ for o in gc.get_objects() if type(o).__name__ in kinds]
        finally:
            gc.enable()
    assert left == []
