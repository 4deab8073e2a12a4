"""AgiConnection.submit (the callback form of command()), the environment fast path and the
command cache: same bytes, same replies, same errors as the awaited API."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shared_asterisk import AGI_RAW
from test_agi_server import (
    FakeAsterisk,
    Outcome,
    env_for,
    replay_client,
    replaying_handler,
    serving,
    transcript,
    wait_idle,
)

from callcenter.asterisk.agi import (
    AgiCommandError,
    AgiConnection,
    AgiConnectionLost,
    AgiHandler,
    AgiHangup,
    AgiProtocolError,
    AgiReply,
    CommandCache,
    format_command,
    parse_environment_block,
    parse_environment_lines,
)

needs_raw = pytest.mark.skipif(not AGI_RAW.is_dir(), reason="transcripts not available")


async def submitted(conn: AgiConnection, verb: str, *args: str) -> AgiReply:
    """command() through submit(): the callback resolves a future."""
    fut: asyncio.Future[AgiReply] = asyncio.get_running_loop().create_future()

    def done(reply: AgiReply | None, exc: Exception | None) -> None:
        if exc is not None:
            fut.set_exception(exc)
        else:
            assert reply is not None
            fut.set_result(reply)

    conn.submit(done, verb, *args)
    return await fut


def submitting_handler(lines: list[bytes], results: list[Outcome]) -> AgiHandler:
    async def handler(conn: AgiConnection) -> None:
        for raw in lines:
            try:
                results.append(await submitted(conn, raw.decode().rstrip("\n")))
            except ValueError:
                results.append("refused-locally")
            except AgiHangup:
                results.append("hangup")
            except AgiCommandError as exc:
                results.append(exc.code)

    return handler


@needs_raw
@pytest.mark.parametrize(
    "name",
    [
        "01_ivr_menu_happy_path",
        "02_caller_hangup_during_playback",
        "03_errors_510_511_520",
        "05_gosub_and_misc_results",
    ],
)
async def test_transcripts_give_the_same_bytes_and_results_as_command(name: str) -> None:
    envs, pairs = transcript(name)
    script = envs[0].split(b"agi_network_script: ")[1].split(b"\n")[0].decode()
    script = script.split("?")[0]
    outcomes: list[tuple[list[bytes], list[Outcome], int]] = []
    for make in (replaying_handler, submitting_handler):
        results: list[Outcome] = []
        async with serving({script: make([p[0] for p in pairs], results)}) as server:
            client = await replay_client(server.port, envs[0], pairs)
            await wait_idle(server)
        outcomes.append((client.received, results, server.stats.hangups))
    assert outcomes[0] == outcomes[1]


async def test_refusals_are_raised_at_once_with_nothing_written() -> None:
    got: list[object] = []

    async def handler(conn: AgiConnection) -> None:
        got.append((await submitted(conn, "STREAM FILE", "x", "")).result)
        assert conn.dead  # the HANGUP line came before the reply
        try:
            conn.submit(lambda r, e: got.append("called"), "STREAM FILE", "y", "")
        except AgiHangup:
            got.append("refused")
        got.append((await submitted(conn, "SET VARIABLE", "A", "1")).result)  # dead-allowed
        conn.submit(lambda r, e: got.append((r.result if r else None, e)), "NOOP")
        try:
            conn.submit(lambda r, e: None, "NOOP")
        except RuntimeError:
            got.append("busy")
        await asyncio.sleep(0.05)

    async with serving({"ivr": handler}) as server:
        client = await FakeAsterisk.connect(server.port)
        await client.send(env_for("ivr"))
        assert await client.command() == b'STREAM FILE x ""\n'
        await client.send(b"HANGUP\n200 result=-1 endpos=10\n")
        assert await client.command() == b"SET VARIABLE A 1\n"
        await client.send(b"200 result=1\n")
        assert await client.command() == b"NOOP\n"
        await client.send(b"200 result=0\n")
        await client.expect_eof()
        await client.close()
    assert got == ["-1", "refused", "1", "busy", ("0", None)]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"511 Command Not Permitted on a dead channel or intercept routine\n", AgiHangup),
        (b"510 Invalid or unknown command\n", AgiCommandError),
        (b"520-Invalid command syntax.  Proper usage follows:\n x\n520 End of usage.\n", None),
        (b"garbage\n", AgiProtocolError),
        (b"200 resu", AgiConnectionLost),  # EOF in the middle of the reply
    ],
)
async def test_error_replies_reach_the_callback(reply: bytes, error: type | None) -> None:
    got: list[tuple[AgiReply | None, Exception | None]] = []
    state: list[bool] = []

    async def handler(conn: AgiConnection) -> None:
        fut = asyncio.get_running_loop().create_future()

        def done(r: AgiReply | None, e: Exception | None) -> None:
            got.append((r, e))
            fut.set_result(None)

        conn.submit(done, "STREAM FILE", "x", "")
        await fut
        state.extend([conn.dead, conn.closed])

    async with serving({"ivr": handler}) as server:
        client = await FakeAsterisk.connect(server.port)
        await client.send(env_for("ivr"))
        assert await client.command() == b'STREAM FILE x ""\n'
        await client.send(reply)
        if error is AgiConnectionLost:
            client.writer.write_eof()
        await client.expect_eof()
        await client.close()
        await wait_idle(server)
    [(r, e)] = got
    if error is None:  # 520 multi-line block: AgiCommandError carrying the whole block
        assert isinstance(e, AgiCommandError) and e.code == 520 and "x" in e.reply.text
    else:
        assert r is None and isinstance(e, error)
    assert state[0] == (error in (AgiHangup, AgiConnectionLost))  # dead
    assert state[1] == (error in (AgiProtocolError, AgiConnectionLost))  # closed


async def test_reply_after_close_is_ignored() -> None:
    got: list[object] = []
    started = asyncio.Event()

    async def handler(conn: AgiConnection) -> None:
        conn.submit(lambda r, e: got.append((r, e)), "STREAM FILE", "x", "")
        await conn.close()
        started.set()

    async with serving({"ivr": handler}) as server:
        client = await FakeAsterisk.connect(server.port)
        await client.send(env_for("ivr"))
        assert await client.command() == b'STREAM FILE x ""\n'
        await started.wait()
        await client.expect_eof()
        await client.close()
        await wait_idle(server)
    assert got == []


# ---------------------------------------------------------------------------------------------
# pure parts

env_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n")
env_names = st.text(alphabet=env_chars, max_size=12)
env_values = st.text(alphabet=env_chars, max_size=20)
env_lines = st.one_of(
    st.builds(lambda n, v: f"agi_{n}: {v}", env_names, env_values),
    st.builds(lambda n, v: f"{n}:{v}", env_names, env_values),
    env_values,
)


@given(st.lists(env_lines, min_size=1, max_size=12))
def test_environment_fast_path_equals_the_line_parser(lines: list[str]) -> None:
    raw = ("\n".join(lines) + "\n\n").encode()
    fast = parse_environment_block(raw, max_lines=1000, max_bytes=10**6)
    slow = parse_environment_lines(raw[:-2].decode("utf-8", "replace").split("\n"))
    assert dict(fast.values) == dict(slow.values)


@given(st.text(min_size=1, max_size=15), st.lists(st.text(max_size=10), max_size=3))
def test_command_cache_matches_format_command(verb: str, args: list[str]) -> None:
    cache = CommandCache(size=2)
    try:
        expected = format_command(verb, *args)
    except ValueError:
        with pytest.raises(ValueError):
            cache.get(verb, tuple(args))
        return
    for _ in range(2):  # miss, then hit
        line, _name, data = cache.get(verb, tuple(args))
        assert line == expected and data == expected.encode()


def test_command_cache_is_bounded() -> None:
    cache = CommandCache(size=3)
    for i in range(10):
        cache.get("SET VARIABLE", ("X", str(i)))
    assert len(cache._lines) <= 3
    assert cache.get("HANGUP", ())[1] == "HANGUP"
    assert cache.get("set variable", ("a", "b"))[1] == "SET VARIABLE"
