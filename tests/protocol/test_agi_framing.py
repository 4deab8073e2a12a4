"""FastAGI framing over real sockets: replies and commands split or oversized on the wire."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from callcenter.asterisk.agi import (
    MAX_HEADER_BYTES,
    AgiConnection,
    AgiProtocolError,
    AgiReply,
    AgiServer,
    StaticRouter,
)
from callcenter.pbxsim.agi_client import MAX_LINE, run_agi_call
from callcenter.pbxsim.callers import CallerModel
from callcenter.pbxsim.pbx import VirtualClock

TIMEOUT = 5.0
ENV = (
    b"agi_network: yes\n"
    b"agi_network_script: ivr\n"
    b"agi_uniqueid: 1715681702.99\n"
    b"agi_callerid: 15551234567\n"
    b"\n"
)


async def _drip(writer: asyncio.StreamWriter, data: bytes) -> None:
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0)


async def _wait_idle(server: AgiServer) -> None:
    for _ in range(500):
        if server.stats.sessions_active == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("sessions still active")


async def test_environment_and_replies_one_byte_at_a_time() -> None:
    got: list[AgiReply] = []

    async def handler(conn: AgiConnection) -> None:
        got.append(await conn.stream_file("welcome", "12"))
        got.append(await conn.set_variable("A", "x y"))

    server = AgiServer(router=StaticRouter({"ivr": handler}), operator_queue="op", port=0)
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await _drip(writer, ENV)
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert line == b"STREAM FILE welcome 12\n"
        await _drip(writer, b"100 result=0 Trying...\n200 result=50 endpos=1234\n")
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert line == b'SET VARIABLE A "x y"\n'
        await _drip(writer, b"HANGUP\n200 result=1\n")
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.close()
        await _wait_idle(server)
    assert [(r.result, r.endpos) for r in got] == [("50", 1234), ("1", None)]
    assert got[0].digit == "2"
    assert server.stats.hangups == 1 and server.stats.sessions_failed == 0


async def test_oversized_reply_line_fails_the_session_and_closes() -> None:
    errors: list[Exception] = []

    async def handler(conn: AgiConnection) -> None:
        try:
            await conn.answer()
        except AgiProtocolError as exc:
            errors.append(exc)
            raise

    server = AgiServer(router=StaticRouter({"ivr": handler}), operator_queue="op", port=0)
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(ENV)
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"ANSWER\n"
        writer.write(b"200 result=0 " + b"x" * (MAX_HEADER_BYTES + 10))
        with suppress(ConnectionError):
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.close()
        await _wait_idle(server)
    assert len(errors) == 1 and "longer than" in str(errors[0])
    assert server.stats.sessions_failed == 1


async def test_emulator_answers_510_to_an_oversized_command_and_goes_on() -> None:
    replies: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\n\n")
        writer.write(b"VERBOSE " + b"v" * (MAX_LINE * 4 + 100) + b" 1\n")
        replies.append(await reader.readline())
        writer.write(b"SET VAR")  # a command split across two segments
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"IABLE X 1\n")
        replies.append(await reader.readline())
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    res = await asyncio.wait_for(
        run_agi_call(
            host="127.0.0.1",
            port=server.sockets[0].getsockname()[1],
            caller=CallerModel(number="1"),
            clock=VirtualClock(),
        ),
        TIMEOUT,
    )
    server.close()
    assert replies == [b"510 Invalid or unknown command\n", b"200 result=1\n"]
    assert res.variables == {"X": "1"} and res.status == "SUCCESS"
