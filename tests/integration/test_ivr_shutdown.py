"""Stopping the server (AgiServer.close() cancels the sessions) while callers are in the IVR.

Asterisk reports AGISTATUS=SUCCESS when the FastAGI server closes the socket, so a session cut
off by a shutdown tries, briefly, to leave the caller the default queue before it goes (the
dialplan's fallback covers the rest), and its path ends with a ``shutdown`` step.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex

from ivr_support import Recorder, hotline

from callcenter.asterisk.agi import command_words
from callcenter.ivr.model import CustomerInfo

TIMEOUT = 5.0
ENV = b"agi_network_script: hotline\nagi_uniqueid: 1764300000.9\nagi_callerid: 13800138000\n\n"


class HeldLookup:
    """A customer lookup that never returns; ``started`` is set once it has been asked."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def lookup(self, number: str) -> CustomerInfo | None:
        self.started.set()
        await asyncio.Event().wait()
        return None


def reply(line: str, variables: dict[str, str]) -> bytes:
    """What a live res_agi channel answers (no keys pressed)."""
    name = command_words(line)
    args = shlex.split(line)[len(name.split()) :]
    match name:
        case "STREAM FILE" | "SAY DIGITS":
            return b"200 result=0 endpos=8000\n"
        case "WAIT FOR":
            return b"200 result=0\n"
        case "GET DATA":
            return b"200 result= (timeout)\n"
        case "SET VARIABLE":
            variables[args[0]] = args[1]
            return b"200 result=1\n"
    return b"510 Invalid or unknown command\n"


async def answer_until_closed(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    variables: dict[str, str],
    *,
    answer: bool = True,
) -> list[str]:
    """Read the server's commands (answering them when ``answer``) until it closes."""
    commands: list[str] = []
    try:
        while raw := await asyncio.wait_for(reader.readline(), TIMEOUT):
            commands.append(raw.decode()[:-1])
            if answer:
                writer.write(reply(commands[-1], variables))
    except ConnectionResetError:  # closed with our last reply unread
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return commands


def path(recorder: Recorder) -> list[tuple[str, str, str | None]]:
    return [(s.node, s.kind, s.result) for s in recorder.steps]


async def test_shutdown_during_a_lookup_leaves_the_caller_the_default_queue() -> None:
    recorder, customers = Recorder(), HeldLookup()
    async with hotline(customers=customers, recorder=recorder, lookup_timeout=TIMEOUT) as (
        server,
        runner,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(ENV)
        await asyncio.wait_for(customers.started.wait(), TIMEOUT)
        closing = asyncio.create_task(server.close())
        variables: dict[str, str] = {}
        commands = await answer_until_closed(reader, writer, variables)
        await asyncio.wait_for(closing, TIMEOUT)
        assert server.stats.sessions_active == 0
        assert runner.calls_completed == 0
    assert commands == ["SET VARIABLE IVR_QUEUE general"]
    assert variables == {"IVR_QUEUE": "general"}
    assert path(recorder) == [("lookup", "shutdown", "shutdown")]
    assert recorder.steps[0].call_uniqueid == "1764300000.9"


async def test_shutdown_waits_for_the_command_in_flight_then_sets_the_queue() -> None:
    """res_agi reads the next command only once the running one is done: the queue is set
    after its reply, within the grace (here the lookup timeout, generous)."""
    recorder = Recorder()
    async with hotline(recorder=recorder, lookup_timeout=TIMEOUT) as (server, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(ENV)
        first = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert first == b"STREAM FILE hotline/choose-language 12\n"
        closing = asyncio.create_task(server.close())
        variables: dict[str, str] = {}
        writer.write(reply(first.decode()[:-1], variables))  # the prompt ends after the close
        commands = await answer_until_closed(reader, writer, variables)
        await asyncio.wait_for(closing, TIMEOUT)
    assert commands[-1] == "SET VARIABLE IVR_QUEUE general"
    assert variables == {"IVR_QUEUE": "general"}
    assert path(recorder)[0] == ("lookup", "lookup", "unknown")
    assert path(recorder)[-1][1:] == ("shutdown", "shutdown")


async def test_shutdown_is_bounded_when_asterisk_does_not_answer() -> None:
    recorder, customers = Recorder(), HeldLookup()
    async with hotline(
        customers=customers, recorder=recorder, lookup_timeout=TIMEOUT, shutdown_grace=0.01
    ) as (server, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(ENV)
        await asyncio.wait_for(customers.started.wait(), TIMEOUT)
        closing = asyncio.create_task(server.close())
        commands = await answer_until_closed(reader, writer, {}, answer=False)
        await asyncio.wait_for(closing, TIMEOUT)  # the unanswered SET VARIABLE does not hold it
        assert server.stats.sessions_active == 0
    assert commands == ["SET VARIABLE IVR_QUEUE general"]
    assert path(recorder) == [("lookup", "shutdown", "shutdown")]
