"""AgiServer's own socket layer (non-blocking sockets on the loop's reader/writer callbacks):
partial sends and back-pressure, resets, EOF mid-header and mid-reply, bounded reads under a
flood, exceptions in callbacks, shutdown with sessions in every state. Every scenario runs on
asyncio's default loop and on uvloop, each with the server's own epoll set (Linux) and with
one reader callback per socket on the loop (what other platforms get)."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections.abc import Callable, Coroutine
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from callcenter.asterisk import agi
from callcenter.asterisk.agi import (
    MAX_HEADER_BYTES,
    READ_SIZE,
    WRITE_HIGH_WATER,
    AgiConnection,
    AgiConnectionLost,
    AgiHandler,
    AgiHangup,
    AgiReply,
    AgiServer,
    StaticRouter,
    _AgiSocket,
)

TIMEOUT = 5.0
ENV = (
    b"agi_network: yes\n"
    b"agi_network_script: ivr\n"
    b"agi_channel: PJSIP/trunk-00000001\n"
    b"agi_uniqueid: 1715681702.99\n"
    b"agi_callerid: 15551234567\n"
    b"\n"
)

LOOPS = ["asyncio", "uvloop", "asyncio/loop-readers", "uvloop/loop-readers"]
ROOT = Path(__file__).resolve().parents[2]


def run_on(loop_name: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``<loop>`` with the server's epoll set, ``<loop>/loop-readers`` without it."""
    name, _, readers = loop_name.partition("/")
    if name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.SelectorEventLoop
    if not readers and not agi.OWN_EPOLL:
        pytest.skip("no epoll on this platform")
    own_epoll = agi.OWN_EPOLL
    agi.OWN_EPOLL = own_epoll and not readers
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(asyncio.wait_for(scenario(), 30))
    finally:
        agi.OWN_EPOLL = own_epoll


def new_server(handler: AgiHandler, **kw: Any) -> AgiServer:
    return AgiServer(router=StaticRouter({"ivr": handler}), operator_queue="operator", port=0, **kw)


def sock_of(conn: AgiConnection) -> _AgiSocket:
    return conn._protocol


async def eventually(check: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


class Peer:
    """The Asterisk side on a raw non-blocking socket driven by the loop's sock_* calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = b""

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> Peer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def recv(self) -> bytes:
        """The next chunk; b"" at EOF and after a reset."""
        try:
            return await asyncio.wait_for(
                asyncio.get_running_loop().sock_recv(self.sock, 65536), TIMEOUT
            )
        except ConnectionResetError:
            return b""

    async def line(self) -> bytes:
        """The next line (with its LF), or b"" at EOF."""
        while b"\n" not in self.pending:
            chunk = await self.recv()
            if not chunk:
                return b""
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line + b"\n"

    async def until_eof(self) -> bytes:
        data, self.pending = self.pending, b""
        while chunk := await self.recv():
            data += chunk
        return data

    def shut_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """Close with an RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


async def answered_loop(peer: Peer, reply: bytes = b"200 result=1\n") -> list[bytes]:
    """Answer every command until EOF; the commands received."""
    got: list[bytes] = []
    while line := await peer.line():
        got.append(line)
        await peer.send(reply)
    return got


# ---------------------------------------------------------------------------------------------
# writes


@pytest.mark.parametrize("loop_name", LOOPS)
def test_partial_sends_buffer_in_order_and_drain_waits(loop_name: str) -> None:
    big = "v" * 600_000
    seen: dict[str, Any] = {}

    async def handler(conn: AgiConnection) -> None:
        s = sock_of(conn)
        s._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        seen["sock"] = s
        seen["r1"] = await conn.set_variable("BIG", big)  # waits in drain() first
        seen["drained"] = True
        # the callback form does not wait for the buffer; bytes still go out in order
        done: asyncio.Future[AgiReply | None] = asyncio.get_running_loop().create_future()
        conn.submit(lambda r, e: done.set_result(r), "SET VARIABLE", "BIG2", big)
        seen["r2"] = await done
        seen["r3"] = await conn.command("NOOP")

    async def scenario() -> None:
        async with new_server(handler) as server:
            peer = await Peer.connect(server.port, rcvbuf=4096)
            await peer.send(ENV)
            await eventually(lambda: "sock" in seen and seen["sock"].paused_writing, "pause")
            s: _AgiSocket = seen["sock"]
            assert s._out is not None and len(s._out) > WRITE_HIGH_WATER
            assert "drained" not in seen  # the command waits for the peer to read
            expected = [
                b"SET VARIABLE BIG " + big.encode() + b"\n",
                b"SET VARIABLE BIG2 " + big.encode() + b"\n",
                b"NOOP\n",
            ]
            for n, want in enumerate(expected):
                assert await peer.line() == want
                await peer.send(b"200 result=%d\n" % n)
            assert await peer.until_eof() == b""
            peer.close()
            await eventually(lambda: server.stats.sessions_active == 0, "session end")
        assert [seen[k].result for k in ("r1", "r2", "r3")] == ["0", "1", "2"]
        assert not s.paused_writing and s._out is None and s._sock.fileno() == -1
        assert server.stats.sessions_failed == 0

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_commands_queue_behind_unsent_output(loop_name: str) -> None:
    """A peer answering before it has read the whole command: the next command is appended
    to the unsent output, never sent ahead of it."""
    big = "q" * 300_000
    results: list[str] = []

    async def handler(conn: AgiConnection) -> None:
        s = sock_of(conn)
        s._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def second(reply: AgiReply | None, exc: Exception | None) -> None:
            assert reply is not None
            results.append(reply.result)
            done.set_result(None)

        def first(reply: AgiReply | None, exc: Exception | None) -> None:
            assert reply is not None and s._out is not None  # still unsent
            results.append(reply.result)
            conn.submit(second, "NOOP")

        conn.submit(first, "SET VARIABLE", "Q", big)
        await done

    async def scenario() -> None:
        async with new_server(handler) as server:
            peer = await Peer.connect(server.port, rcvbuf=4096)
            await peer.send(ENV)
            await eventually(lambda: bool(server.stats.commands_total), "first command")
            await peer.send(b"200 result=1\n200 result=2\n")
            data = await peer.until_eof()
            peer.close()
        assert data == b"SET VARIABLE Q " + big.encode() + b"\nNOOP\n"
        assert results == ["1", "2"]

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_close_flushes_buffered_output_before_closing(loop_name: str) -> None:
    big = "w" * 400_000

    async def handler(conn: AgiConnection) -> None:
        sock_of(conn)._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        conn.submit(lambda r, e: None, "SET VARIABLE", "LAST", big)
        # returning closes the connection while most of the command is unsent

    async def scenario() -> None:
        async with new_server(handler) as server:
            peer = await Peer.connect(server.port, rcvbuf=4096)
            await peer.send(ENV)
            await eventually(lambda: bool(server._flushing), "closing with unsent output")
            (s,) = server._flushing
            assert s.closing and not s.lost
            data = await peer.until_eof()
            assert data == b"SET VARIABLE LAST " + big.encode() + b"\n"
            peer.close()
            assert not server._flushing and s.lost and s._sock.fileno() == -1

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_send_to_a_reset_peer_is_a_lost_connection(loop_name: str) -> None:
    outcome: list[object] = []
    events: dict[str, asyncio.Event] = {}

    async def handler(conn: AgiConnection) -> None:
        s = sock_of(conn)
        s._stop_reading()  # so that the reset is met by send(), not by recv_into()
        events["quiet"].set()
        await events["reset"].wait()
        try:
            await conn.command("NOOP")
        except AgiConnectionLost as exc:
            outcome.append(type(exc))
        outcome.append((s.lost, conn.dead, conn.closed))
        try:
            await conn.command("NOOP")
        except AgiConnectionLost:
            outcome.append("refused")

    async def scenario() -> None:
        events["quiet"], events["reset"] = asyncio.Event(), asyncio.Event()
        async with new_server(handler) as server:
            peer = await Peer.connect(server.port)
            await peer.send(ENV)
            await asyncio.wait_for(events["quiet"].wait(), TIMEOUT)
            peer.reset()
            await asyncio.sleep(0.05)  # the RST reaches the server's socket
            events["reset"].set()
            await eventually(lambda: server.stats.sessions_active == 0, "session end")
        assert outcome == [AgiConnectionLost, (True, True, True), "refused"]
        assert server.stats.sessions_failed == 0

    run_on(loop_name, scenario)


# ---------------------------------------------------------------------------------------------
# resets and EOF


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("when", ["mid-header", "waiting-for-reply", "mid-reply"])
def test_peer_reset(loop_name: str, when: str) -> None:
    outcome: list[object] = []

    async def handler(conn: AgiConnection) -> None:
        try:
            await conn.command("NOOP")
        except AgiHangup as exc:
            outcome.append(type(exc))

    async def scenario() -> None:
        async with new_server(handler) as server:
            peer = await Peer.connect(server.port)
            if when == "mid-header":
                await peer.send(ENV[:40])
                await eventually(lambda: server.stats.sessions_total == 1, "accept")
            else:
                await peer.send(ENV)
                assert await peer.line() == b"NOOP\n"
                if when == "mid-reply":
                    await peer.send(b"200 res")
            peer.reset()
            await eventually(lambda: server.stats.sessions_active == 0, "connection end")
            # the server goes on serving
            ok = await Peer.connect(server.port)
            await ok.send(ENV)
            assert await answered_loop(ok) == [b"NOOP\n"]
            ok.close()
            await eventually(lambda: server.stats.sessions_active == 0, "second session end")
        assert outcome == ([] if when == "mid-header" else [AgiConnectionLost])
        assert server.stats.sessions_total == 2 and server.stats.sessions_failed == 0

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_eof_mid_header_closes_without_a_session(loop_name: str) -> None:
    async def handler(conn: AgiConnection) -> None:
        raise AssertionError("no session without a complete environment")

    async def scenario() -> None:
        async with new_server(handler) as server:
            peer = await Peer.connect(server.port)
            await peer.send(ENV[:50])
            peer.shut_write()
            assert await peer.until_eof() == b""
            peer.close()
            await eventually(lambda: server.stats.sessions_active == 0, "connection end")
            assert not server._pending and not server._sessions
        assert server.stats.sessions_total == 1 and server.stats.sessions_failed == 0

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_eof_mid_reply_is_a_hangup(loop_name: str) -> None:
    outcome: list[object] = []

    async def handler(conn: AgiConnection) -> None:
        try:
            await conn.command("NOOP")
        except AgiConnectionLost as exc:
            outcome.append(("lost", conn.dead, str(exc)))

    async def scenario() -> None:
        async with new_server(handler) as server:
            peer = await Peer.connect(server.port)
            await peer.send(ENV)
            assert await peer.line() == b"NOOP\n"
            await peer.send(b"200 resu")
            peer.shut_write()
            assert await peer.until_eof() == b""
            peer.close()
            await eventually(lambda: server.stats.sessions_active == 0, "session end")
        assert outcome == [("lost", True, "EOF while waiting for a reply")]

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_half_open_buffered_replies_are_parsed_and_commands_still_written(
    loop_name: str,
) -> None:
    results: list[object] = []

    async def handler(conn: AgiConnection) -> None:
        await asyncio.wait_for(flags["eof"].wait(), TIMEOUT)
        s = sock_of(conn)
        await eventually(lambda: s._eof, "EOF seen by the server")
        for _ in range(3):
            try:
                results.append((await conn.command("NOOP")).result)
            except AgiConnectionLost:
                results.append("lost")

    flags: dict[str, asyncio.Event] = {}

    async def scenario() -> None:
        flags["eof"] = asyncio.Event()
        async with new_server(handler) as server:
            peer = await Peer.connect(server.port)
            # two replies sent ahead, then EOF: the socket stays open for our commands
            await peer.send(ENV + b"200 result=7\nHANGUP\n200 result=8\n")
            peer.shut_write()
            flags["eof"].set()
            data = await peer.until_eof()
            peer.close()
            await eventually(lambda: server.stats.sessions_active == 0, "session end")
        assert data == b"NOOP\nNOOP\nNOOP\n"
        assert results == ["7", "8", "lost"]
        assert server.stats.hangups == 1

    run_on(loop_name, scenario)


# ---------------------------------------------------------------------------------------------
# reads


@pytest.mark.parametrize("loop_name", LOOPS)
def test_reading_stops_under_a_flood_and_resumes(loop_name: str) -> None:
    n = 300
    pad = b"n" * 1000
    flood = b"".join(b"200 result=%d %s\n" % (i, pad) for i in range(n))
    results: list[str] = []
    bounded: list[object] = []

    async def handler(conn: AgiConnection) -> None:
        s = sock_of(conn)
        await eventually(lambda: s._paused_reading, "reading paused")
        bounded.append((s._reading, len(s._buf) <= 2 * MAX_HEADER_BYTES + READ_SIZE))
        for _ in range(n):
            results.append((await conn.command("NOOP")).result)
        bounded.append((s._paused_reading, len(s._buf)))

    async def scenario() -> None:
        async with new_server(handler) as server:
            peer = await Peer.connect(server.port)
            writer = asyncio.create_task(peer.send(ENV + flood))
            data = await peer.until_eof()
            await asyncio.wait_for(writer, TIMEOUT)
            peer.close()
            await eventually(lambda: server.stats.sessions_active == 0, "session end")
        assert data == b"NOOP\n" * n
        assert results == [str(i) for i in range(n)]
        assert bounded == [(False, True), (False, 0)]

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_exception_in_a_reply_callback_closes_that_connection_only(loop_name: str) -> None:
    outcome: list[str] = []

    def bad_callback(reply: AgiReply | None, exc: Exception | None) -> None:
        raise RuntimeError("bug in a callback")

    async def handler(conn: AgiConnection) -> None:
        if conn.env.get("n") == "bad":
            conn.submit(bad_callback, "NOOP")
            s = sock_of(conn)
            await eventually(lambda: s.lost, "connection closed after the error")
            try:
                await conn.command("NOOP")
            except AgiConnectionLost:
                outcome.append("lost")
        else:
            outcome.append((await conn.command("NOOP")).result)

    async def scenario() -> None:
        async with new_server(handler) as server:
            bad = await Peer.connect(server.port)
            await bad.send(ENV.replace(b"\n\n", b"\nagi_n: bad\n\n"))
            assert await bad.line() == b"NOOP\n"
            await bad.send(b"200 result=1\n")
            assert await bad.until_eof() == b""
            bad.close()
            good = await Peer.connect(server.port)
            await good.send(ENV)
            assert await answered_loop(good, b"200 result=5\n") == [b"NOOP\n"]
            good.close()
            await eventually(lambda: server.stats.sessions_active == 0, "sessions end")
        assert sorted(outcome) == ["5", "lost"]

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_replies_seen_before_are_delivered_whole_or_in_pieces(loop_name: str) -> None:
    # A reply line the server has parsed before, arriving alone in one read, is taken as it
    # is; split, behind a HANGUP line or not valid UTF-8, it goes through the parser.
    got: list[object] = []
    done = asyncio.Event()

    async def handler(conn: AgiConnection) -> None:
        def on_reply(reply: AgiReply | None, exc: Exception | None) -> None:
            got.append((reply.code, reply.result, dict(reply.extras)) if reply else repr(exc))
            if len(got) < 6:
                conn.submit(on_reply, "STREAM FILE", "hello", "")
            else:
                done.set()

        conn.submit(on_reply, "STREAM FILE", "hello", "")
        await asyncio.wait_for(done.wait(), TIMEOUT)
        got.append(("dead", conn.dead))

    async def scenario() -> None:
        async with new_server(handler) as server:
            peer = await Peer.connect(server.port)
            await peer.send(ENV)
            for chunks in (
                [b"200 result=0 endpos=160\n"],  # parsed, then kept
                [b"200 result=0 endpos=160\n"],  # seen before, whole
                [b"200 result=0 en", b"dpos=160\n"],  # seen before, in two reads
                [b"200 result=49 endpos=\xff\n"],  # not UTF-8: replaced, parsed again
                [b"200 result=49 endpos=\xff\n"],
                [b"HANGUP\n200 result=0 endpos=160\n"],  # behind the HANGUP line
            ):
                assert await peer.line() == b'STREAM FILE hello ""\n'
                for chunk in chunks:
                    await peer.send(chunk)
                    await asyncio.sleep(0.01)  # separate reads
            assert await peer.until_eof() == b""
            peer.close()
            await eventually(lambda: server.stats.sessions_active == 0, "session end")
        ok = (200, "0", {"endpos": "160"})
        bad = (200, "49", {"endpos": "\ufffd"})
        assert got == [ok, ok, ok, bad, bad, ok, ("dead", True)]
        assert server.stats.hangups == 1

    run_on(loop_name, scenario)


# ---------------------------------------------------------------------------------------------
# accepting and shutting down


@pytest.mark.parametrize("loop_name", LOOPS)
def test_burst_of_connections_is_accepted(loop_name: str) -> None:
    async def handler(conn: AgiConnection) -> None:
        await conn.command("NOOP")

    async def one(port: int) -> list[bytes]:
        peer = await Peer.connect(port)
        await peer.send(ENV)
        got = await answered_loop(peer)
        peer.close()
        return got

    async def scenario() -> None:
        async with new_server(handler) as server:
            got = await asyncio.gather(*(one(server.port) for _ in range(200)))
            await eventually(lambda: server.stats.sessions_active == 0, "sessions end")
        assert got == [[b"NOOP\n"]] * 200
        assert server.stats.sessions_total == 200 and server.stats.commands_total == 200

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_header_timeout_with_one_timer(loop_name: str) -> None:
    async def handler(conn: AgiConnection) -> None:
        await conn.command("NOOP")

    async def scenario() -> None:
        async with new_server(handler, header_timeout=0.3) as server:
            served = await Peer.connect(server.port)
            await served.send(ENV)
            assert await served.line() == b"NOOP\n"
            # the timer set for the first connection is set again for the later ones
            silent = [await Peer.connect(server.port) for _ in range(3)]
            await silent[0].send(b"agi_network: yes\n")
            await served.send(b"200 result=1\n")
            assert await served.until_eof() == b""
            for peer in silent:
                assert await peer.until_eof() == b""
                peer.close()
            served.close()
            await eventually(lambda: server.stats.sessions_active == 0, "all closed")
            assert not server._pending and server._header_timer is None
        assert server.stats.sessions_total == 4 and server.stats.commands_total == 1

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_server_close_with_sessions_in_every_state(loop_name: str) -> None:
    big = "z" * 400_000
    socks: dict[str, _AgiSocket] = {}
    cancelled: list[str] = []

    async def handler(conn: AgiConnection) -> None:
        state = conn.env.get("state")
        socks[state] = sock_of(conn)
        try:
            if state == "command":
                await conn.command("NOOP")
            elif state == "callback":
                waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                conn.submit(lambda r, e: None, "NOOP")
                await waiting
            elif state in ("busy", "half-open"):
                await asyncio.Event().wait()
            elif state == "flushing":
                sock_of(conn)._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                conn.submit(lambda r, e: None, "SET VARIABLE", "X", big)
                return
        except asyncio.CancelledError:
            cancelled.append(state)
            raise

    states = ["command", "callback", "busy", "half-open", "flushing"]

    async def scenario() -> None:
        server = new_server(handler)
        await server.start()
        port = server.port
        pending = await Peer.connect(port)
        await pending.send(ENV[:30])
        peers = {}
        for state in states:
            peers[state] = await Peer.connect(port, rcvbuf=4096)
            await peers[state].send(ENV.replace(b"\n\n", b"\nagi_state: %s\n\n" % state.encode()))
        peers["half-open"].shut_write()
        await eventually(lambda: set(socks) == set(states), "every session started")
        await eventually(lambda: len(server._pending) == 1, "one connection without a session")
        await eventually(lambda: socks["half-open"]._eof, "EOF seen")
        await eventually(lambda: bool(server._flushing), "a socket flushing")
        await server.close()
        await server.close()  # idempotent
        assert sorted(cancelled) == sorted(["command", "callback", "busy", "half-open"])
        assert all(s.lost and s._sock.fileno() == -1 for s in socks.values())
        assert not server._pending and not server._sessions and not server._flushing
        assert server.stats.sessions_active == 0 and server.stats.sessions_total == 6
        for peer in [pending, *peers.values()]:
            with suppress(ConnectionError):
                await peer.until_eof()  # EOF or reset, never a hang
            peer.close()
        with pytest.raises(OSError):
            await Peer.connect(port)  # no longer listening

    run_on(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_close_cleans_up_a_session_cancelled_before_it_ran(loop_name: str) -> None:
    async def handler(conn: AgiConnection) -> None:
        raise AssertionError("cancelled before running")

    async def scenario() -> None:
        server = new_server(handler)
        start_session = server._start_session

        def start_cancelled(sock: _AgiSocket, env: Any) -> AgiConnection:
            # as when close() cancels a task created in the same loop iteration
            conn = start_session(sock, env)
            for task in server._sessions.values():
                task.cancel()
            return conn

        server._start_session = start_cancelled  # type: ignore[method-assign]
        await server.start()
        peer = await Peer.connect(server.port)
        await peer.send(ENV)
        await eventually(
            lambda: bool(server._sessions) and all(t.done() for t in server._sessions.values()),
            "task",
        )
        assert server.stats.sessions_active == 1  # its finally never ran
        await server.close()
        assert server.stats.sessions_active == 0 and not server._sessions
        assert server.stats.sessions_failed == 0
        assert await peer.until_eof() == b""
        peer.close()

    run_on(loop_name, scenario)


def test_start_twice_and_bind_conflict() -> None:
    async def handler(conn: AgiConnection) -> None:
        return None

    async def scenario() -> None:
        async with new_server(handler) as server:
            with pytest.raises(RuntimeError):
                await server.start()
            other = AgiServer(
                router=StaticRouter({}), operator_queue="op", port=server.port, host="127.0.0.1"
            )
            with pytest.raises(OSError):
                await other.start()
            with pytest.raises(RuntimeError):
                other.port  # noqa: B018
        with pytest.raises(RuntimeError):
            server.port  # noqa: B018

    run_on("asyncio", scenario)


def test_host_name_is_resolved() -> None:
    async def handler(conn: AgiConnection) -> None:
        await conn.command("NOOP")

    async def scenario() -> None:
        server = AgiServer(
            router=StaticRouter({"ivr": handler}), operator_queue="op", host="localhost", port=0
        )
        async with server:
            reader, writer = await asyncio.open_connection("localhost", server.port)
            writer.write(ENV)
            assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"NOOP\n"
            writer.write(b"200 result=1\n")
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
            writer.close()

    run_on("asyncio", scenario)


_EMFILE_SERVER = """
import asyncio, os, resource, sys
from callcenter.asterisk.agi import AgiServer, StaticRouter

async def main() -> None:
    async def handler(conn):
        await conn.command("NOOP")

    server = AgiServer(router=StaticRouter({"ivr": handler}), operator_queue="op", port=0)
    await server.start()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # room for 3 accepted sockets, then accept() fails with EMFILE
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 2, hard))
    print(server.port, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_out_of_descriptors_pauses_accepting_then_serves_the_rest() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _EMFILE_SERVER,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), TIMEOUT))
        peers = [await Peer.connect(port) for _ in range(6)]
        for peer in peers:
            await peer.send(ENV)
        first = await asyncio.wait_for(peers[0].line(), TIMEOUT)
        assert first == b"NOOP\n"
        # the server is alive but cannot take everyone yet; serve and release in order
        for n, peer in enumerate(peers):
            if n:
                assert await peer.line() == b"NOOP\n"
            await peer.send(b"200 result=1\n")
            assert await peer.until_eof() == b""
            peer.close()
    finally:
        proc.kill()
        _, err = await proc.communicate()
    assert b"pausing accepts" in err, err[-2000:]


@pytest.mark.parametrize("loop_name", LOOPS)
def test_the_sockets_wait_in_the_server_epoll_set_or_on_the_loop(loop_name: str) -> None:
    async def handler(conn: AgiConnection) -> None:
        await conn.command("NOOP")

    async def scenario() -> None:
        async with new_server(handler) as server:
            expected = agi._LoopReaders if "/" in loop_name else agi._EpollReaders
            assert type(server._readers) is expected
            peer = await Peer.connect(server.port)
            await peer.send(ENV)
            assert await peer.line() == b"NOOP\n"
            await peer.send(b"200 result=1\n")
            assert await peer.until_eof() == b""
            peer.close()
        assert server._readers is None

    run_on(loop_name, scenario)


@pytest.mark.skipif(not agi.OWN_EPOLL, reason="no epoll on this platform")
def test_epoll_set_batch_skips_removed_sockets_and_survives_a_failing_callback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        readers = agi._EpollReaders(loop)
        pairs = [socket.socketpair() for _ in range(3)]
        a, b, c = (mine.fileno() for mine, _ in pairs)
        calls: list[int] = []

        def removing(me: int, other: int) -> Callable[[], None]:
            def callback() -> None:
                calls.append(me)
                readers.remove(me)
                readers.remove(other)  # ready in the same batch: must not be called any more

            return callback

        def failing() -> None:
            calls.append(c)
            readers.remove(c)
            raise RuntimeError("boom")

        readers.add(a, removing(a, b))
        readers.add(b, removing(b, a))
        readers.add(c, failing)
        for _, theirs in pairs:  # all three ready before the loop polls
            theirs.send(b"x")
        await eventually(lambda: c in calls and len(calls) == 2, "two callbacks ran")
        await asyncio.sleep(0.05)
        assert sorted(calls) in ([a, c], [b, c]), calls
        assert "error in a read callback" in caplog.text
        readers.close()
        readers.remove(a)  # after close: nothing left to do, no error
        for mine, theirs in pairs:
            mine.close()
            theirs.close()

    run_on("asyncio", scenario)


@pytest.mark.parametrize("inherited", [True, False], ids=["from-the-listener", "per-socket"])
def test_accepted_sockets_have_nodelay_and_keepalive(
    inherited: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer host that vanishes without a FIN is found by keepalive probes; commands are not
    delayed by Nagle. On Linux the accepted socket inherits the listener's options."""
    if inherited and not sys.platform.startswith("linux"):
        pytest.skip("only Linux hands the listener's TCP options to accepted sockets")
    monkeypatch.setattr(agi, "_OPTIONS_INHERITED", inherited)
    seen: list[tuple[int, ...]] = []

    async def handler(conn: AgiConnection) -> None:
        sock = sock_of(conn)._sock
        options = [
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        ]
        if hasattr(socket, "TCP_KEEPIDLE"):
            options.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE))
        seen.append(tuple(options))

    async def scenario() -> None:
        async with new_server(handler) as server:
            peer = await Peer.connect(server.port)
            await peer.send(ENV)
            assert await peer.until_eof() == b""
            peer.close()

    run_on("asyncio", scenario)
    assert len(seen) == 1
    nodelay, keepalive, *idle = seen[0]
    assert nodelay and keepalive
    assert idle == ([agi.KEEPALIVE_IDLE] if hasattr(socket, "TCP_KEEPIDLE") else [])
