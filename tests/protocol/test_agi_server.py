"""The FastAGI server over real sockets, driven by a fake Asterisk replaying the raw transcripts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import pytest
from shared_asterisk import AGI_RAW

from callcenter.asterisk.agi import (
    AgiCommandError,
    AgiConnection,
    AgiHandler,
    AgiHangup,
    AgiReply,
    AgiServer,
    StaticRouter,
)

RAW = AGI_RAW
needs_raw = pytest.mark.skipif(not RAW.is_dir(), reason="transcripts not available")
TIMEOUT = 5.0

ENV = (
    b"agi_network: yes\n"
    b"agi_network_script: %s\n"
    b"agi_request: agi://127.0.0.1:4573/x\n"
    b"agi_channel: PJSIP/trunk-00000001\n"
    b"agi_uniqueid: 1715681702.99\n"
    b"agi_callerid: 15551234567\n"
    b"agi_accountcode: \n"
    b"\n"
)


def env_for(script: str | None) -> bytes:
    if script is None:
        return ENV.replace(b"agi_network_script: %s\n", b"")
    return ENV % script.encode()


class FakeAsterisk:
    """The TCP client side: writes the environment and replies, records what the server sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received: list[bytes] = []

    @classmethod
    async def connect(cls, port: int) -> FakeAsterisk:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self) -> bytes | None:
        """The next command line (with its LF), or None at EOF."""
        line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        if not line:
            return None
        self.received.append(line)
        return line

    async def expect_eof(self) -> None:
        assert await asyncio.wait_for(self.reader.read(), TIMEOUT) == b""

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@asynccontextmanager
async def serving(
    routes: dict[str, AgiHandler], *, default: str | None = None, **kw: float
) -> AsyncIterator[AgiServer]:
    server = AgiServer(
        router=StaticRouter(routes, default=default),
        operator_queue="operator",
        port=0,
        **kw,  # type: ignore[arg-type]
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def wait_idle(server: AgiServer) -> None:
    for _ in range(500):
        if server.stats.sessions_active == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("sessions still active")


# ---------------------------------------------------------------------------------------------
# transcript replay


def split_ast(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """Environment blocks (with their blank line) and reply units (one per command).

    A unit ends with a final reply line (200/510/511/520 + space); HANGUP lines right after it
    belong to it, 100 lines and 520- blocks precede it.
    """
    lines = data.split(b"\n")[:-1]
    envs: list[bytes] = []
    units: list[bytes] = []
    cur_env: list[bytes] | None = None
    pending: list[bytes] = []
    for line in lines:
        if cur_env is not None:
            cur_env.append(line)
            if line == b"":
                envs.append(b"\n".join(cur_env) + b"\n")
                cur_env = None
            continue
        if line.startswith(b"agi_"):
            cur_env = [line]
            continue
        if line == b"HANGUP" and not pending and units:
            units[-1] += b"HANGUP\n"
            continue
        pending.append(line)
        if line[:4] in (b"200 ", b"510 ", b"511 ", b"520 "):
            units.append(b"\n".join(pending) + b"\n")
            pending = []
    assert not pending
    return envs, units


async def replay_client(
    port: int, env: bytes, pairs: list[tuple[bytes, bytes]], *, close_after: bool = False
) -> FakeAsterisk:
    """Answer each command with the unit of the next transcript command that matches it."""
    client = await FakeAsterisk.connect(port)
    await client.send(env)
    cursor = 0
    while True:
        line = await client.command()
        if line is None:
            break
        for i in range(cursor, len(pairs)):
            if pairs[i][0] == line:
                await client.send(pairs[i][1])
                cursor = i + 1
                break
        else:
            raise AssertionError(f"server sent an unexpected command {line!r}")
        if close_after and cursor == len(pairs):
            break
    await client.close()
    return client


def transcript(name: str) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    envs, units = split_ast((RAW / f"{name}.ast.raw").read_bytes())
    app = (RAW / f"{name}.app.raw").read_bytes().split(b"\n")[:-1]
    assert len(app) == len(units), (name, len(app), len(units))
    return envs, [(a + b"\n", u) for a, u in zip(app, units, strict=True)]


Outcome = AgiReply | str | int


def replaying_handler(lines: list[bytes], results: list[Outcome]) -> AgiHandler:
    async def handler(conn: AgiConnection) -> None:
        for raw in lines:
            try:
                results.append(await conn.command(raw.decode().rstrip("\n")))
            except ValueError:
                results.append("refused-locally")
            except AgiHangup:
                results.append("hangup")
            except AgiCommandError as exc:
                results.append(exc.code)

    return handler


@needs_raw
async def test_replay_01_is_byte_exact_with_typed_commands() -> None:
    envs, pairs = transcript("01_ivr_menu_happy_path")
    replies: list[AgiReply] = []

    async def handler(conn: AgiConnection) -> None:
        replies.append(await conn.answer())
        replies.append(await conn.stream_file("custom/welcome"))
        replies.append(await conn.get_data("custom/main-menu", 5000, 1))
        replies.append(await conn.set_variable("IVR_CHOICE", "2"))
        replies.append(await conn.set_variable("IVR_QUEUE", "support"))

    async with serving({"ivr": handler}) as server:
        client = await replay_client(server.port, envs[0], pairs)
        await wait_idle(server)
    assert b"".join(client.received) == (RAW / "01_ivr_menu_happy_path.app.raw").read_bytes()
    assert [r.result for r in replies] == ["0", "0", "2", "1", "1"]
    assert replies[1].endpos == 36800
    assert server.stats.commands_total == 5 and server.stats.sessions_total == 1


@needs_raw
async def test_replay_02_hangup_stops_non_dead_commands_and_closes() -> None:
    envs, pairs = transcript("02_caller_hangup_during_playback")
    results: list[Outcome] = []
    handler = replaying_handler([p[0] for p in pairs], results)
    async with serving({"ivr": handler}) as server:
        client = await replay_client(server.port, envs[0], pairs)
        await wait_idle(server)
    assert client.received == [
        b"ANSWER\n",
        b'STREAM FILE custom/main-menu "123#"\n',
        b"SET VARIABLE IVR_RESULT abandoned-in-menu\n",
        b"GET VARIABLE IVR_CHOICE\n",
    ]
    assert isinstance(results[1], AgiReply) and results[1].result == "-1"
    assert isinstance(results[2], AgiReply) and results[2].result == "1"  # HANGUP skipped
    assert results[3:5] == ["hangup", "hangup"]
    assert isinstance(results[5], AgiReply) and results[5].result == "0"
    assert results[6:] == ["hangup", "hangup", "hangup"]
    assert server.stats.hangups == 1


@needs_raw
async def test_replay_03_errors_do_not_desync() -> None:
    envs, pairs = transcript("03_errors_510_511_520")
    results: list[Outcome] = []
    handler = replaying_handler([p[0] for p in pairs], results)
    async with serving({"ivr": handler}) as server:
        client = await replay_client(server.port, envs[0], pairs)
        await wait_idle(server)
    assert b"ANSWER\r\n" not in client.received  # a CR would become part of the command
    assert results[0] == 510 and results[1] == "refused-locally" and results[2] == 520
    rest = results[3:]
    assert all(isinstance(r, AgiReply) for r in rest)
    assert [(r.result, r.data) for r in rest if isinstance(r, AgiReply)] == [
        ("-1", None),
        ("-2", None),
        ("0", None),
        ("1", "1001"),
        ("1", "Alice Agent-600"),
        ("0", None),
    ]


@needs_raw
async def test_replay_04_exec() -> None:
    envs, pairs = transcript("04_exec_queue_blocking")
    got: list[AgiReply | str | None] = []

    async def handler(conn: AgiConnection) -> None:
        got.append(await conn.answer())
        got.append(await conn.exec("MixMonitor", "1715686000.80.wav,b"))
        got.append(await conn.exec("Queue", "support,tc,,,300"))
        got.append(await conn.get_variable("QUEUESTATUS"))
        got.append(await conn.stream_file("custom/survey-intro"))

    async with serving({"ivr": handler}) as server:
        client = await replay_client(server.port, envs[0], pairs)
        await wait_idle(server)
    assert b"".join(client.received) == (RAW / "04_exec_queue_blocking.app.raw").read_bytes()
    assert got[3] == "CONTINUE"


@needs_raw
async def test_replay_05_misc_results_and_final_hangup() -> None:
    envs, pairs = transcript("05_gosub_and_misc_results")
    results: list[Outcome] = []
    handler = replaying_handler([p[0] for p in pairs], results)
    async with serving({"misc": handler}) as server:
        client = await replay_client(server.port, envs[0], pairs)
        await wait_idle(server)
    assert len(client.received) == len(pairs)
    assert all(isinstance(r, AgiReply) for r in results)
    gosub = results[1]
    assert isinstance(gosub, AgiReply) and gosub.note == "Gosub complete"
    rec = results[24]
    assert isinstance(rec, AgiReply) and (rec.result, rec.data, rec.endpos) == ("35", "dtmf", 52800)
    assert server.stats.hangups == 1  # our own HANGUP -> 200 result=1 marks the channel dead


@needs_raw
async def test_replay_06_routing_with_query_string_and_without_script() -> None:
    envs, units = split_ast((RAW / "06_env_variants.ast.raw").read_bytes())
    seen: list[tuple[str, str | None, tuple[str, ...]]] = []

    async def ivr(conn: AgiConnection) -> None:
        seen.append(("ivr", conn.env.network_script, conn.env.args))
        await conn.command("NOOP")

    async def default(conn: AgiConnection) -> None:
        seen.append(("default", conn.env.network_script, conn.env.args))

    async with serving({"ivr": ivr, "main": default}, default="main") as server:
        c1 = await replay_client(server.port, envs[0], [(b"NOOP\n", units[0])])
        c2 = await replay_client(server.port, envs[1], [])
        await wait_idle(server)
    assert seen == [("ivr", "ivr?lang=fr&mode=night", ("sales", "", "3")), ("default", None, ())]
    assert c1.received == [b"NOOP\n"] and c2.received == []


# ---------------------------------------------------------------------------------------------
# behaviour


async def test_unknown_script_goes_to_operator_queue() -> None:
    async with serving({"ivr": _never}) as server:
        client = await FakeAsterisk.connect(server.port)
        await client.send(env_for("nosuch?x=1"))
        assert await client.command() == b"SET VARIABLE IVR_QUEUE operator\n"
        await client.send(b"200 result=1\n")
        await client.expect_eof()
        await client.close()
        await wait_idle(server)
    assert server.stats.unknown_routes == 1


async def test_missing_script_without_default_goes_to_operator_queue() -> None:
    async with serving({"ivr": _never}) as server:
        client = await FakeAsterisk.connect(server.port)
        await client.send(env_for(None))
        assert await client.command() == b"SET VARIABLE IVR_QUEUE operator\n"
        await client.send(b"200 result=1\n")
        await client.expect_eof()
        await client.close()


async def _never(conn: AgiConnection) -> None:
    raise AssertionError("must not be routed here")


def playing_loop(calls: list[str]) -> AgiHandler:
    async def handler(conn: AgiConnection) -> None:
        while True:
            reply = await conn.stream_file("hotline/music")
            calls.append(reply.result)

    return handler


async def test_hangup_line_then_511_ends_session_and_closes() -> None:
    calls: list[str] = []
    async with serving({"ivr": playing_loop(calls)}) as server:
        client = await FakeAsterisk.connect(server.port)
        await client.send(env_for("ivr"))
        assert await client.command() == b'STREAM FILE hotline/music ""\n'
        await client.send(b"200 result=-1 endpos=8000\nHANGUP\n")
        assert await client.command() == b'STREAM FILE hotline/music ""\n'
        await client.send(b"511 Command Not Permitted on a dead channel or intercept routine\n")
        await client.expect_eof()
        await client.close()
        await wait_idle(server)
    assert calls == ["-1"]
    assert server.stats.hangups == 1 and server.stats.sessions_failed == 0


async def test_idle_hangup_with_trailing_junk_is_seen_before_the_reply() -> None:
    got: list[object] = []

    async def handler(conn: AgiConnection) -> None:
        got.append((await conn.set_variable("A", "1")).result)
        got.append(conn.dead)
        try:
            await conn.stream_file("x")
        except AgiHangup:
            got.append("refused")

    async with serving({"ivr": handler}) as server:
        client = await FakeAsterisk.connect(server.port)
        await client.send(env_for("ivr") + b"HANGUP \r\n")
        assert await client.command() == b"SET VARIABLE A 1\n"
        await client.send(b"200 result=1\n")
        await client.expect_eof()
        await client.close()
    assert got == ["1", True, "refused"]


async def test_agiexitonhangup_eof_ends_session() -> None:
    calls: list[str] = []
    async with serving({"ivr": playing_loop(calls)}) as server:
        client = await FakeAsterisk.connect(server.port)
        await client.send(env_for("ivr"))
        assert await client.command() == b'STREAM FILE hotline/music ""\n'
        await client.send(b"200 result=-1 endpos=8000\nHANGUP\nHANGUP\n")
        await client.close()
        await wait_idle(server)
    assert calls == ["-1"]


async def test_client_closing_mid_header_frees_handler_and_loop() -> None:
    served: list[str] = []

    async def handler(conn: AgiConnection) -> None:
        served.append(conn.env.uniqueid)

    async with serving({"ivr": handler}) as server:
        half = await FakeAsterisk.connect(server.port)
        await half.send(b"agi_network: yes\nagi_network_script: ivr\nagi_chan")
        await half.close()
        # The loop is not frozen: a normal session on the same server completes.
        ok = await FakeAsterisk.connect(server.port)
        await ok.send(env_for("ivr"))
        await ok.expect_eof()
        await ok.close()
        await wait_idle(server)
    assert served == ["1715681702.99"]
    assert server.stats.sessions_total == 2


async def test_silent_client_is_dropped_after_header_timeout() -> None:
    async with serving({"ivr": _never}, header_timeout=0.2) as server:
        silent = await FakeAsterisk.connect(server.port)
        await silent.send(b"agi_network: yes\n")
        await silent.expect_eof()
        await silent.close()
        await wait_idle(server)


@pytest.mark.parametrize(
    "data",
    [
        b"".join(b"agi_v%d: %s\n" % (i, b"x" * 100) for i in range(400)),  # 40 KB, no end
        b"".join(b"agi_v%d: x\n" % i for i in range(500)) + b"\n",  # too many lines
    ],
)
async def test_oversized_header_is_rejected(data: bytes) -> None:
    async with serving({"ivr": _never}) as server:
        client = await FakeAsterisk.connect(server.port)
        await client.send(data)
        await client.expect_eof()
        await client.close()
        await wait_idle(server)
    assert server.stats.sessions_failed == 1


async def test_garbage_reply_closes_session() -> None:
    async with serving({"ivr": playing_loop([])}) as server:
        client = await FakeAsterisk.connect(server.port)
        await client.send(env_for("ivr"))
        await client.command()
        await client.send(b"HTTP/1.1 400 Bad Request\n")
        await client.expect_eof()
        await client.close()
        await wait_idle(server)
    assert server.stats.sessions_failed == 1


async def test_server_close_cancels_sessions_and_closes_sockets() -> None:
    started = asyncio.Event()

    async def handler(conn: AgiConnection) -> None:
        started.set()
        await conn.stream_file("long")

    async with serving({"ivr": handler}) as server:
        client = await FakeAsterisk.connect(server.port)
        await client.send(env_for("ivr"))
        await client.command()
        await asyncio.wait_for(started.wait(), TIMEOUT)
    await client.expect_eof()
    await client.close()


async def test_timing_hook_and_many_concurrent_sessions() -> None:
    gaps: list[float] = []

    def hook(
        *, command: str, previous_reply_at: float | None, sent_at: float, reply_at: float
    ) -> None:
        if previous_reply_at is not None:
            gaps.append(sent_at - previous_reply_at)

    async def handler(conn: AgiConnection) -> None:
        for _ in range(3):
            await conn.command("NOOP")

    async def one(port: int) -> None:
        client = await FakeAsterisk.connect(port)
        await client.send(env_for("ivr"))
        while await client.command() is not None:
            await client.send(b"200 result=0\n")
        await client.close()

    runner: Callable[[int], Awaitable[None]] = one
    async with serving({"ivr": handler}, timing=hook) as server:  # type: ignore[arg-type]
        await asyncio.gather(*(runner(server.port) for _ in range(50)))
        await wait_idle(server)
    assert server.stats.sessions_total == 50 and server.stats.commands_total == 150
    assert len(gaps) == 100 and all(g >= 0 for g in gaps)


def test_server_runs_on_uvloop() -> None:
    """`serve` picks uvloop when installed; its transports are not asyncio.Transport objects."""
    uvloop = pytest.importorskip("uvloop")

    async def session() -> None:
        async def handler(conn: AgiConnection) -> None:
            await conn.answer()

        async with serving({"ivr": handler}) as server:
            client = await FakeAsterisk.connect(server.port)
            await client.send(env_for("ivr"))
            assert await client.command() == b"ANSWER\n"
            await client.send(b"200 result=0\n")
            await client.expect_eof()
            await client.close()
            await wait_idle(server)
        assert server.stats.sessions_failed == 0

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(session())
