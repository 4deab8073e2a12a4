"""hotline.yaml end to end: AgiServer + IvrRunner over a real socket, a scripted caller,
and customer lookups / recorders that fail (the IVR fails open)."""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from ivr_support import Customers, Recorder, hotline
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.asterisk.agi import DEAD_ALLOWED, AgiServer, command_words
from callcenter.calls.model import IvrStep
from callcenter.calls.repository import CallRepository
from callcenter.db.models import IvrStepRow
from callcenter.ivr.model import CustomerInfo

CLOSED_NOW = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai
TIMEOUT = 5.0


# ---------------------------------------------------------------------------------------------
# fakes


@dataclass
class Caller:
    """A scripted Asterisk channel: answers the server's commands like res_agi would."""

    keys: list[str]
    hangup_after: int | None = None  # hang up during the Nth command (1-based)
    hangup_on: str | None = None  # hang up during the first command that is exactly this
    missing: tuple[str, ...] = ()  # prompt files that do not exist (STREAM FILE fails)
    number: str = "13800138000"
    commands: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    dead: bool = False
    closed_by_server: bool = False

    def env(self, script: str) -> bytes:
        return (
            "agi_network: yes\n"
            f"agi_network_script: {script}\n"
            f"agi_request: agi://127.0.0.1/{script}\n"
            "agi_channel: PJSIP/trunk-00000007\n"
            "agi_language: en\n"
            "agi_uniqueid: 1764300000.7\n"
            f"agi_callerid: {self.number}\n"
            "agi_calleridname: 张三\n"
            "agi_dnid: 4008001234\n"
            "\n"
        ).encode()

    def reply(self, line: str) -> str:
        name = command_words(line)
        args = shlex.split(line)[len(name.split()) :]
        if self.dead:
            if name not in DEAD_ALLOWED:
                return "511 Command Not Permitted on a dead channel or intercept routine\n"
        elif (
            self.hangup_after is not None and len(self.commands) >= self.hangup_after
        ) or line == self.hangup_on:
            self.dead = True
            if name in DEAD_ALLOWED:
                return "HANGUP\n" + self.reply(line)
            return "200 result=-1 endpos=4000\nHANGUP\n"
        match name:
            case "STREAM FILE" if args[0] in self.missing:
                return "200 result=-1 endpos=0\n"  # PLAYBACKSTATUS=FAILED, the channel is up
            case "STREAM FILE" | "SAY DIGITS":
                return "200 result=0 endpos=8000\n"
            case "CHANNEL STATUS":
                return "200 result=6\n"  # AST_STATE_UP
            case "WAIT FOR":
                key = self.keys.pop(0) if self.keys else ""
                return f"200 result={ord(key) if key else 0}\n"
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
        writer.write(self.env(script))
        await writer.drain()
        try:
            while True:
                raw = await asyncio.wait_for(reader.readline(), TIMEOUT)
                if not raw:
                    self.closed_by_server = True
                    return
                assert raw.endswith(b"\n") and not raw.endswith(b"\r\n")
                line = raw.decode()[:-1]
                self.commands.append(line)
                writer.write(self.reply(line).encode())
                await writer.drain()
        finally:
            writer.close()
            with suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def settle(server: AgiServer) -> None:
    for _ in range(500):
        if server.stats.sessions_active == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("session did not end")


# ---------------------------------------------------------------------------------------------
# tests


async def test_key_customer_bookings_with_order_number() -> None:
    vip = CustomerInfo(customer_id="C42", name="王总", is_key_customer=True, language="zh")
    recorder = Recorder()
    caller = Caller(keys=["1", "2", "20261128"])
    async with hotline(customers=Customers(customer=vip), recorder=recorder) as (server, _):
        await caller.call(server.port)
        await settle(server)
    assert caller.closed_by_server
    assert caller.variables["IVR_QUEUE"] == "bookings"
    assert caller.variables["QUEUE_PRIO"] == "10"
    assert caller.variables["CALLCENTER_ORDER_NUMBER"] == "20261128"
    assert caller.variables["CALLCENTER_CUSTOMER_ID"] == "C42"
    assert caller.variables["CALLCENTER_IVR_PATH"] == (
        "lookup,language,hours,main,1,bookings,2,order_number,bookings_queue"
    )
    assert 'STREAM FILE zh/hotline/welcome ""' in caller.commands
    assert "STREAM FILE hotline/choose-language 12" not in caller.commands  # language known
    assert [s.seq for s in recorder.steps] == list(range(1, len(recorder.steps) + 1))
    assert recorder.steps[0].kind == "lookup" and recorder.steps[0].result == "key"
    assert recorder.steps[-1].node == "bookings_queue" and recorder.steps[-1].result == "bookings"
    assert all(s.call_uniqueid == "1764300000.7" for s in recorder.steps)


@pytest.mark.parametrize("mode", ["raise", "hang"])
async def test_lookup_failure_fails_open(mode: str) -> None:
    recorder = Recorder()
    customers = Customers(mode=mode)
    caller = Caller(keys=["2", "3"])  # English, general service
    async with hotline(customers=customers, recorder=recorder) as (server, _):
        await caller.call(server.port)
        await settle(server)
    assert customers.calls == ["13800138000"]
    assert caller.variables["IVR_QUEUE"] == "general"
    assert caller.variables["QUEUE_PRIO"] == "0"
    assert recorder.steps[0].result == "failed"
    assert "STREAM FILE en/hotline/main-menu 0123456789*#" in caller.commands


async def test_recorder_failure_does_not_stop_the_call() -> None:
    caller = Caller(keys=["1", "4", "1"])
    async with hotline(recorder=Recorder(fail=True)) as (server, runner):
        await caller.call(server.port)
        await settle(server)
    assert caller.variables["IVR_QUEUE"] == "technical"
    assert caller.variables["CALLCENTER_TECH_TOPIC"] == "app"
    assert runner.calls_completed == 1


async def test_callback_recorder_failure_goes_to_general_queue() -> None:
    caller = Caller(keys=["1", "9", "1"])
    async with hotline(recorder=Recorder(fail=True)) as (server, _):
        await caller.call(server.port)
        await settle(server)
    assert caller.variables["IVR_QUEUE"] == "general"
    assert 'SAY DIGITS 13800138000 ""' in caller.commands
    assert not any(c.startswith("HANGUP") for c in caller.commands)


async def test_callback_recorded_and_call_hung_up() -> None:
    recorder = Recorder()
    caller = Caller(keys=["1", "9", "1"])
    async with hotline(recorder=recorder) as (server, _):
        await caller.call(server.port)
        await settle(server)
    assert [c.number for c in recorder.callbacks] == ["13800138000"]
    assert recorder.callbacks[0].call_uniqueid == "1764300000.7"
    assert recorder.callbacks[0].queue == "general"
    assert caller.commands[-1] == "HANGUP"
    assert caller.closed_by_server


async def test_out_of_hours_callback_with_other_number() -> None:
    recorder = Recorder()
    caller = Caller(keys=["1", "1", "2", "02155550123"])
    async with hotline(recorder=recorder, now=CLOSED_NOW) as (server, _):
        await caller.call(server.port)
        await settle(server)
    assert 'STREAM FILE zh/hotline/closed ""' in caller.commands
    assert [c.number for c in recorder.callbacks] == ["02155550123"]


@pytest.mark.parametrize("after", [1, 2, 3, 5, 7, 9])
async def test_caller_hangs_up_anywhere(after: int) -> None:
    recorder = Recorder()
    caller = Caller(keys=["1", "1", "2", "123456"], hangup_after=after)
    async with hotline(recorder=recorder) as (server, runner):
        await caller.call(server.port)
        await settle(server)
    assert caller.closed_by_server
    assert recorder.steps[-1].result == "hangup"
    # After the hangup the server sends at most dead-allowed commands, then closes.
    after_hangup = caller.commands[after + 1 :]
    assert all(command_words(c) in DEAD_ALLOWED for c in after_hangup), after_hangup
    assert runner.calls_completed == 1


async def test_unknown_script_goes_to_operator() -> None:
    caller = Caller(keys=[])
    async with hotline() as (server, _):
        await caller.call(server.port, script="nosuchflow")
        await settle(server)
    assert caller.commands == ["SET VARIABLE IVR_QUEUE operator"]
    assert caller.closed_by_server


async def test_many_concurrent_calls() -> None:
    recorder = Recorder()
    callers = [Caller(keys=["1", str(1 + i % 3)], number=f"1380000{i:04d}") for i in range(40)]
    async with hotline(recorder=recorder) as (server, runner):
        await asyncio.gather(*(c.call(server.port) for c in callers))
        await settle(server)
    queues = [c.variables["IVR_QUEUE"] for c in callers]
    assert queues.count("complaints") == len([i for i in range(40) if i % 3 == 1])
    assert runner.calls_completed == 40


async def test_engine_failure_fails_open_to_default_queue() -> None:
    recorder = Recorder()
    caller = Caller(keys=["1"])
    naive = datetime(2026, 12, 2, 10, 0)  # the calendar refuses naive times: a bug to survive
    async with hotline(recorder=recorder, now=naive) as (server, runner):
        await caller.call(server.port)
        await settle(server)
    assert caller.variables["IVR_QUEUE"] == "general"
    assert caller.closed_by_server
    assert runner.calls_failed == 1
    assert recorder.steps[-1].kind == "error" and recorder.steps[-1].node == "welcome"


async def test_slow_recorder_does_not_hold_the_caller() -> None:
    class Slow(Recorder):
        async def record_steps(self, steps: Sequence[IvrStep]) -> None:
            await asyncio.sleep(3600)

    caller = Caller(keys=["1", "3"])
    async with hotline(recorder=Slow(), lookup_timeout=0.02) as (server, _):
        await caller.call(server.port)
        await settle(server)
    assert caller.closed_by_server and caller.variables["IVR_QUEUE"] == "general"


async def test_language_from_the_agi_url_query() -> None:
    caller = Caller(keys=["2"])
    async with hotline() as (server, _):
        await caller.call(server.port, script="hotline?lang=en")
        await settle(server)
    assert caller.commands[0] == 'STREAM FILE en/hotline/welcome ""'
    assert caller.variables["IVR_QUEUE"] == "complaints"


async def test_caller_gone_before_our_hangup_still_counts_as_callback() -> None:
    recorder = Recorder()
    caller = Caller(keys=["1", "9", "1"])
    async with hotline(recorder=recorder) as (server, _):
        original = caller.reply

        def reply(line: str) -> str:
            if line.startswith("STREAM FILE zh/hotline/callback-done"):
                caller.dead = True  # just as the prompt ended
                return "200 result=0 endpos=8000\nHANGUP\n"
            return original(line)

        caller.reply = reply  # type: ignore[method-assign]
        await caller.call(server.port)
        await settle(server)
    assert [c.number for c in recorder.callbacks] == ["13800138000"]
    # The HANGUP line is still unread when we send HANGUP; Asterisk answers 511, which is fine.
    assert caller.commands[-1] == "HANGUP"
    assert recorder.steps[-1].result == "requested"


async def test_garbage_from_asterisk_ends_the_session_without_more_commands() -> None:
    caller = Caller(keys=["1"])
    async with hotline() as (server, runner):
        original = caller.reply

        def reply(line: str) -> str:
            if line.startswith("STREAM FILE zh/hotline/welcome"):
                return "garbage\n"
            return original(line)

        caller.reply = reply  # type: ignore[method-assign]
        await caller.call(server.port)
        await settle(server)
    assert caller.commands[-1] == 'STREAM FILE zh/hotline/welcome ""'
    assert caller.closed_by_server and runner.calls_failed == 1


@pytest.mark.parametrize(
    ("keys", "prompt", "node"),
    [
        (["1", "3"], 'STREAM FILE zh/hotline/please-hold ""', "general_queue"),
        (["1"], 'STREAM FILE zh/hotline/welcome ""', "welcome"),
        (["1", "9"], 'SAY DIGITS 13800138000 ""', "callback"),
        (["1", "9", "1"], 'STREAM FILE zh/hotline/callback-done ""', "callback"),
    ],
)
async def test_hangup_during_a_prompt_ends_the_path_at_that_node(
    keys: list[str], prompt: str, node: str, caplog: pytest.LogCaptureFixture
) -> None:
    """res_agi answers the prompt with result=-1 before it writes the HANGUP line: one
    CHANNEL STATUS (refused with 511 on a dead channel) tells a hang-up from a missing file."""
    recorder = Recorder()
    caller = Caller(keys=keys, hangup_on=prompt)
    caplog.set_level(logging.WARNING, logger="callcenter.ivr.runner")
    async with hotline(recorder=recorder) as (server, runner):
        await caller.call(server.port)
        await settle(server)
    after = caller.commands[caller.commands.index(prompt) + 1 :]
    assert after == ["CHANNEL STATUS"]
    assert "IVR_QUEUE" not in caller.variables
    assert (recorder.steps[-1].node, recorder.steps[-1].result) == (node, "hangup")
    assert not [r for r in caplog.records if "playback failed" in r.getMessage()]
    assert runner.calls_completed == 1 and caller.closed_by_server


async def test_missing_prompt_is_logged_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    prompt = 'STREAM FILE zh/hotline/welcome ""'
    caller = Caller(keys=["1", "3"], missing=("zh/hotline/welcome",))
    caplog.set_level(logging.WARNING, logger="callcenter.ivr.runner")
    async with hotline(recorder=recorder) as (server, _):
        await caller.call(server.port)
        await settle(server)
    i = caller.commands.index(prompt)
    assert caller.commands[i + 1] == "CHANNEL STATUS"
    assert caller.commands.count("CHANNEL STATUS") == 1  # only a -1 costs the extra command
    assert caller.variables["IVR_QUEUE"] == "general"
    assert ("welcome", "played") in [(s.node, s.result) for s in recorder.steps]
    failed = [r for r in caplog.records if "playback failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING


async def test_long_caller_id_keeps_the_path(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    """ivr_steps.input holds 128 characters: a longer caller ID is cut, the path is kept."""
    number = "1380000" + "9" * 130
    caller = Caller(keys=["1", "3"], number=number)
    repository = CallRepository(session_factory=session_factory)
    async with hotline(recorder=repository, lookup_timeout=TIMEOUT) as (server, _):
        await caller.call(server.port)
        await settle(server)
    assert caller.variables["IVR_QUEUE"] == "general"
    async with session_factory() as session:
        rows = (
            (
                await session.execute(
                    select(IvrStepRow)
                    .where(IvrStepRow.call_uniqueid == "1764300000.7")
                    .order_by(IvrStepRow.seq)
                )
            )
            .scalars()
            .all()
        )
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert (rows[0].node, rows[0].input, rows[0].result) == ("lookup", number[:128], "unknown")
    assert rows[-1].node == "general_queue"
