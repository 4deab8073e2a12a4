"""AmiClient against a small scripted fake Asterisk on a real loopback socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from ami_client_support import Recorder

from callcenter.asterisk.ami import (
    READ_BUFFER,
    AmiClient,
    ResyncSnapshot,
    backoff_delay,
    build_action,
)
from callcenter.asterisk.errors import (
    AmiActionError,
    AmiClosed,
    AmiConnectError,
    AmiConnectionLost,
    AmiError,
    AmiInvalidAction,
    AmiLoginError,
    AmiNotConnected,
    AmiOriginateUnknown,
    AmiTimeout,
)
from callcenter.asterisk.events import is_tracked_variable
from callcenter.asterisk.message import AmiMessage

Headers = list[tuple[str, str]]
BANNER = b"Asterisk Call Manager/9.0.0\r\n"


def frame(*headers: tuple[str, str]) -> bytes:
    return AmiMessage(headers).to_bytes()


def event(name: str, **fields: str) -> bytes:
    return frame(("Event", name), ("Privilege", "call,all"), *fields.items())


@dataclass
class Conn:
    writer: asyncio.StreamWriter
    silent: bool = False


Handler = Callable[["FakeAsterisk", Conn, dict[str, str], Headers], Awaitable[None]]


@dataclass
class FakeAsterisk:
    """Just enough of Asterisk's manager: banner, Login (1 s delay + close on failure), Ping,
    CoreShowChannels/QueueStatus lists, async Originate, scripted extra actions."""

    secret: str = "s3cret"
    login_fail_delay: float = 1.0
    channels: list[str] = field(default_factory=lambda: ["PJSIP/trunk-00000001"])
    handlers: dict[str, Handler] = field(default_factory=dict)
    silent_next: bool = False
    connections: int = 0
    actions: list[tuple[int, Headers]] = field(default_factory=list)
    conns: list[Conn] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0
    logged_in: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for c in self.conns:
            c.writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    @property
    def current(self) -> Conn:
        return self.conns[-1]

    def names(self) -> list[str]:
        return [dict((k.lower(), v) for k, v in h)["action"] for _, h in self.actions]

    async def push(self, data: bytes) -> None:
        self.current.writer.write(data)
        await self.current.writer.drain()

    def drop(self) -> None:
        self.current.writer.transport.abort()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = Conn(writer, silent=self.silent_next)
        self.silent_next = False
        self.conns.append(conn)
        writer.write(BANNER)
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                headers: Headers = []
                for line in raw.decode("utf-8").split("\r\n"):
                    if line:
                        k, _, v = line.partition(": ")
                        headers.append((k, v))
                self.actions.append((self.connections, headers))
                if conn.silent:
                    continue
                fields = {k.lower(): v for k, v in headers}
                await self._answer(conn, fields, headers)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def reply(self, conn: Conn, fields: dict[str, str], *rest: tuple[str, str]) -> None:
        resp = [("Response", "Success"), ("ActionID", fields.get("actionid", ""))]
        conn.writer.write(frame(*resp, *rest))
        await conn.writer.drain()

    async def error(self, conn: Conn, fields: dict[str, str], message: str) -> None:
        conn.writer.write(
            frame(("Response", "Error"), ("ActionID", fields["actionid"]), ("Message", message))
        )
        await conn.writer.drain()

    async def _answer(self, conn: Conn, fields: dict[str, str], headers: Headers) -> None:
        action = fields["action"]
        aid = fields.get("actionid", "")
        w = conn.writer
        if action in self.handlers:
            await self.handlers[action](self, conn, fields, headers)
        elif action == "Login":
            if fields.get("secret") != self.secret:
                await asyncio.sleep(self.login_fail_delay)
                await self.error(conn, fields, "Authentication failed")
                w.close()
                return
            await self.reply(conn, fields, ("Message", "Authentication accepted"))
            w.write(
                frame(
                    ("Event", "FullyBooted"),
                    ("Privilege", "system,all"),
                    ("Uptime", "10"),
                    ("LastReload", "10"),
                    ("Status", "Fully Booted"),
                )
            )
            self.logged_in.set()
        elif action == "Ping":
            await self.reply(conn, fields, ("Ping", "Pong"), ("Timestamp", "1715681690.412068"))
        elif action == "CoreShowChannels":
            await self.reply(
                conn, fields, ("EventList", "start"), ("Message", "Channels will follow")
            )
            for ch in self.channels:
                w.write(frame(("Event", "CoreShowChannel"), ("ActionID", aid), ("Channel", ch)))
            w.write(
                frame(
                    ("Event", "CoreShowChannelsComplete"),
                    ("ActionID", aid),
                    ("EventList", "Complete"),
                    ("ListItems", str(len(self.channels))),
                )
            )
        elif action == "QueueStatus":
            await self.reply(
                conn, fields, ("EventList", "start"), ("Message", "Queue status will follow")
            )
            w.write(frame(("Event", "QueueParams"), ("Queue", "support"), ("ActionID", aid)))
            w.write(
                frame(
                    ("Event", "QueueMember"),
                    ("Queue", "support"),
                    ("Name", "Alice"),
                    ("Location", "PJSIP/1001"),
                    ("ActionID", aid),
                )
            )
            w.write(
                frame(
                    ("Event", "QueueStatusComplete"),
                    ("ActionID", aid),
                    ("EventList", "Complete"),
                    ("ListItems", "2"),
                )
            )
        elif action == "Command":
            await self.reply(
                conn,
                fields,
                ("Message", "Command output follows"),
                ("Output", "Asterisk 20.5.0: built"),
                ("Output", "   second: line"),
            )
        elif action == "Originate":
            await self._originate(conn, fields)
        else:
            await self.error(
                conn,
                fields,
                f"Invalid/unknown command: {action}. Use Action: ListCommands to show available "
                "commands.",
            )
        await w.drain()

    async def _originate(self, conn: Conn, fields: dict[str, str]) -> None:
        if fields.get("async") != "true":
            await self.error(conn, fields, "test fake only does async")
            return
        await self.reply(conn, fields, ("Message", "Originate successfully queued"))
        await asyncio.sleep(0.02)
        busy = fields["channel"].endswith("busy")
        conn.writer.write(event("Newchannel", Channel=fields["channel"] + "-00000007"))
        conn.writer.write(
            frame(
                ("Event", "OriginateResponse"),
                ("Privilege", "call,all"),
                ("ActionID", fields["actionid"]),
                ("Response", "Failure" if busy else "Success"),
                ("Channel", fields["channel"] if busy else fields["channel"] + "-00000007"),
                ("Context", fields.get("context", "")),
                ("Exten", fields.get("exten", "")),
                ("Reason", "5" if busy else "4"),
                ("Uniqueid", "<unknown>" if busy else fields.get("channelid", "1715683000.7")),
                ("CallerIDNum", "<unknown>"),
                ("CallerIDName", "<unknown>"),
            )
        )


@pytest.fixture
async def fake() -> AsyncIterator[FakeAsterisk]:
    server = FakeAsterisk()
    await server.start()
    yield server
    await server.stop()


def make_client(fake: FakeAsterisk, rec: Recorder, **kw: object) -> AmiClient:
    params: dict[str, object] = dict(
        host="127.0.0.1",
        port=fake.port,
        username="callcenter",
        secret="s3cret",
        on_message=rec.on_message,
        on_resync=rec.on_resync,
        on_connected=rec.on_connected,
        on_disconnected=rec.on_disconnected,
        action_timeout=2.0,
        ping_interval=30.0,
        ping_timeout=1.0,
        reconnect_min=0.02,
        reconnect_max=0.1,
    )
    params.update(kw)
    return AmiClient(**params)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(client: AmiClient, *, wait: bool = True) -> AsyncIterator[AmiClient]:
    await client.start(wait=wait)
    try:
        yield client
    finally:
        await client.close()


async def wait_until(pred: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll a condition the fake server changes (it has no event to wait on)."""
    async with asyncio.timeout(limit):
        while True:
            if pred():
                return
            await asyncio.sleep(0.005)


# -- connect, login, resync ----------------------------------------------------------------------


async def test_login_resync_and_ordered_callbacks(fake: FakeAsterisk) -> None:
    rec = Recorder()
    async with running(make_client(fake, rec)) as client:
        assert client.connected and client.state == "connected"
        assert client.ami_version == "9.0.0"
        await rec.wait_for(lambda: "resync" in rec.kinds())
        assert rec.kinds()[:4] == ["connected", "event", "channels", "resync"]
        assert rec.events()[0].name == "FullyBooted"
        part, snap = rec.log[2][1], rec.log[3][1]
        assert isinstance(part, ResyncSnapshot) and isinstance(snap, ResyncSnapshot)
        assert (part.stage, part.queue_status, snap.stage) == ("channels", (), "queues")
        assert [m.get("Channel") for m in part.channels] == ["PJSIP/trunk-00000001"]
        assert snap.channels == part.channels  # the whole snapshot, as taken
        assert [m.name for m in snap.queue_status] == ["QueueParams", "QueueMember"]
        login = fake.actions[0][1]
        assert dict(login)["Events"] == "on" and dict(login)["Username"] == "callcenter"
        assert fake.names()[:3] == ["Login", "CoreShowChannels", "QueueStatus"]
        stats = client.stats()
        assert stats.resyncs == 1 and stats.frames >= 8 and stats.frame_errors == 0
    assert rec.kinds()[-1] == "disconnected"
    assert isinstance(rec.log[-1][1], AmiClosed)
    assert client.state == "stopped" and not client.connected


async def test_events_between_lists_keep_stream_order(fake: FakeAsterisk) -> None:
    """Each part of the resync comes right after its own list: the channel list is older than
    an event written between the two lists (a call starting then is not in it)."""

    async def queue_status(f: FakeAsterisk, conn: Conn, fields: dict[str, str], h: Headers) -> None:
        # an event queued in Asterisk lands between the two lists
        conn.writer.write(event("Newchannel", Seq="between"))
        handlers = f.handlers.pop("QueueStatus")
        try:
            await f._answer(conn, fields, h)
        finally:
            f.handlers["QueueStatus"] = handlers

    fake.handlers["QueueStatus"] = queue_status
    rec = Recorder()
    async with running(make_client(fake, rec)):
        await rec.wait_for(lambda: "resync" in rec.kinds())
        await fake.push(event("Hangup", Seq="after"))
        await rec.wait_for(lambda: len(rec.events("Hangup")) == 1)
    seqs = [
        m.get("Seq") if isinstance(m, AmiMessage) else k
        for k, m in rec.log
        if k in ("event", "channels", "resync")
    ]
    assert seqs == ["", "channels", "between", "resync", "after"]  # "" = FullyBooted


async def test_refused_queue_status_counts_a_failed_resync(
    fake: FakeAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    async def refused(f: FakeAsterisk, conn: Conn, fields: dict[str, str], h: Headers) -> None:
        await f.error(conn, fields, "Permission denied")

    fake.handlers["QueueStatus"] = refused
    rec = Recorder()
    async with running(make_client(fake, rec)) as client:
        stats = client.stats()
        await rec.wait_for(lambda: "channels" in rec.kinds())
        await client.send_action("Ping")
    assert (stats.resyncs, stats.resync_failures) == (0, 1)
    assert "resync" not in rec.kinds()  # the channel part was applied; no queue part
    assert "QueueStatus refused" in caplog.text


async def test_batches_and_filtered_events_keep_stream_order(fake: FakeAsterisk) -> None:
    """on_messages gets the events of each read in order; events outside only_events are
    dropped unparsed, while the resync lists (replies with an ActionID) still arrive."""
    rec = Recorder()
    batches: list[list[AmiMessage]] = []

    async def on_messages(msgs: list[AmiMessage]) -> None:
        batches.append(msgs)
        for msg in msgs:
            await rec.on_message(msg)

    client = make_client(fake, rec, on_messages=on_messages, only_events={"Newchannel", "Hangup"})
    async with running(client):
        await rec.wait_for(lambda: "resync" in rec.kinds())
        noise = b"".join(event("Cdr", Seq=str(i)) for i in range(50))
        wanted = b"".join(event("Newchannel", Seq=str(i)) for i in range(50))
        await fake.push(noise + wanted + noise + event("Hangup", Seq="last"))
        await rec.wait_for(lambda: len(rec.events("Hangup")) == 1)
        stats = client.stats()
    assert [m.get("Seq") for m in rec.events("Newchannel")] == [str(i) for i in range(50)]
    assert not rec.events("Cdr") and not rec.events("FullyBooted")
    assert stats.events_skipped == 101  # 100 Cdr + FullyBooted
    assert stats.resyncs == 1 and stats.resync_failures == 0
    assert sum(map(len, batches)) == stats.events_delivered == 51
    assert rec.kinds()[:3] == ["connected", "channels", "resync"]


async def test_varset_of_untracked_variables_is_dropped(fake: FakeAsterisk) -> None:
    rec = Recorder()
    client = make_client(
        fake, rec, only_events={"VarSet", "Hangup"}, only_variables=is_tracked_variable
    )
    async with running(client):
        await rec.wait_for(lambda: "resync" in rec.kinds())
        names = ["BRIDGEPEER", "__CALLCENTER_DID", "PLAYBACKSTATUS", "MIXMONITOR_FILENAME"]
        await fake.push(b"".join(event("VarSet", Variable=n, Value="v") for n in names))
        await fake.push(event("Hangup", Seq="last"))
        await rec.wait_for(lambda: len(rec.events("Hangup")) == 1)
        stats = client.stats()
    got = [m.get("Variable") for m in rec.events("VarSet")]
    assert got == ["__CALLCENTER_DID", "MIXMONITOR_FILENAME"]
    assert stats.events_skipped == 3  # two VarSet + FullyBooted


async def test_bad_secret_raises_login_error_and_never_reconnects(fake: FakeAsterisk) -> None:
    rec = Recorder()
    client = make_client(fake, rec, secret="wrong-secret")
    with pytest.raises(AmiLoginError, match="Authentication failed") as info:
        await client.start()
    assert info.value.code == "ami_login_failed"
    await asyncio.sleep(0.3)  # several reconnect_min periods: no second attempt
    assert fake.connections == 1
    assert client.state == "stopped" and client.failure is info.value
    with pytest.raises(AmiNotConnected):
        await client.send_action("Ping")
    await client.close()


async def test_bad_secret_in_background_start_is_reported_and_stops(fake: FakeAsterisk) -> None:
    fake.login_fail_delay = 0.05
    rec = Recorder()
    client = make_client(fake, rec, secret="wrong-secret")
    async with running(client, wait=False):
        await rec.wait_for(lambda: "disconnected" in rec.kinds())
        assert isinstance(rec.log[-1][1], AmiLoginError)
        await asyncio.sleep(0.3)
        assert fake.connections == 1 and client.state == "stopped"
        assert isinstance(client.failure, AmiLoginError)


async def test_login_refused_after_established_session_stops_client(fake: FakeAsterisk) -> None:
    fake.login_fail_delay = 0.05
    rec = Recorder()
    client = make_client(fake, rec)
    async with running(client):
        await rec.wait_for(lambda: "resync" in rec.kinds())
        fake.secret = "rotated"
        fake.drop()
        await rec.wait_for(
            lambda: any(isinstance(x, AmiLoginError) for k, x in rec.log if k == "disconnected")
        )
        await asyncio.sleep(0.3)
        assert fake.connections == 2
        assert client.state == "stopped"
        assert isinstance(client.failure, AmiLoginError)
        reasons = [type(x) for k, x in rec.log if k == "disconnected"]
        assert reasons == [AmiConnectionLost, AmiLoginError]


async def test_unreachable_with_wait_raises_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = Recorder()
    client = AmiClient(
        host="127.0.0.1", port=port, username="u", secret="s", on_message=rec.on_message
    )
    with pytest.raises(AmiConnectError):
        await client.start()
    assert client.state == "stopped"


async def test_unreachable_without_wait_retries_until_asterisk_appears() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = Recorder()
    fake = FakeAsterisk()
    client = make_client(fake, rec, port=port)
    await client.start(wait=False)
    try:
        assert not client.connected
        with pytest.raises(AmiNotConnected):
            await client.send_action("Ping")
        await asyncio.sleep(0.15)
        await fake.start(port)
        await rec.wait_for(lambda: "resync" in rec.kinds())
        assert client.connected
        await client.send_action("Ping")
    finally:
        await client.close()
        await fake.stop()


# -- failures of the link ----------------------------------------------------------------------


async def test_drop_mid_frame_reconnects_resyncs_and_keeps_order(fake: FakeAsterisk) -> None:
    rec = Recorder()
    client = make_client(fake, rec)
    async with running(client):
        await rec.wait_for(lambda: "resync" in rec.kinds())
        data = b"".join(event("Newstate", Seq=str(i), CallerIDName="张三") for i in range(200))
        data += event("Newstate", Seq="partial")[:25]
        # write in odd pieces so multi-byte characters straddle TCP reads
        for i in range(0, len(data), 333):
            await fake.push(data[i : i + 333])
        await rec.wait_for(lambda: len(rec.events("Newstate")) == 200)
        fake.channels = ["PJSIP/trunk-00000002", "PJSIP/1001-00000003"]
        fake.drop()
        await rec.wait_for(lambda: rec.kinds().count("resync") == 2)
        assert client.connected and fake.connections == 2
        await fake.push(event("Newstate", Seq="200", CallerIDName="李四"))
        await rec.wait_for(lambda: len(rec.events("Newstate")) == 201)
    seqs = [m.get("Seq") for m in rec.events("Newstate")]
    assert seqs == [str(i) for i in range(201)]  # arrival order, partial frame dropped
    assert {m.get("CallerIDName") for m in rec.events("Newstate")} == {"张三", "李四"}
    kinds = [k for k in rec.kinds() if k not in ("event", "channels")]
    assert kinds == ["connected", "resync", "disconnected", "connected", "resync", "disconnected"]
    second = [x for k, x in rec.log if k == "resync"][1]
    assert isinstance(second, ResyncSnapshot)
    assert [m.get("Channel") for m in second.channels] == fake.channels
    assert client.stats().reconnects == 1


async def test_ping_watchdog_reconnects_a_silent_link(fake: FakeAsterisk) -> None:
    rec = Recorder()
    fake.silent_next = True  # first connection: the banner, then nothing (half-open link)
    fake.handlers["Login"] = _login_always_ok
    client = make_client(fake, rec, ping_interval=0.05, ping_timeout=0.1, action_timeout=0.3)
    await client.start(wait=False)
    try:
        await wait_until(lambda: fake.connections == 1)
        # the silent peer never answers Login: the login times out (action_timeout) -> retry
        await rec.wait_for(lambda: "resync" in rec.kinds(), limit=6)
        assert fake.connections == 2
        # now make the established session go silent: only the watchdog can notice
        fake.current.silent = True
        fake.silent_next = False
        await rec.wait_for(lambda: "disconnected" in rec.kinds(), limit=3)
        await rec.wait_for(lambda: rec.kinds().count("resync") == 2, limit=3)
        assert fake.connections == 3
        assert client.stats().ping_timeouts == 1
        assert "Ping" in fake.names()
    finally:
        await client.close()


async def _login_always_ok(f: FakeAsterisk, conn: Conn, fields: dict[str, str], h: Headers) -> None:
    await f.reply(conn, fields, ("Message", "Authentication accepted"))


async def test_raising_consumer_is_logged_and_link_survives(
    fake: FakeAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder(fail_on="2")
    client = make_client(fake, rec)
    async with running(client):
        await rec.wait_for(lambda: "resync" in rec.kinds())
        for i in range(5):
            await fake.push(event("Newstate", Seq=str(i)))
        await rec.wait_for(lambda: len(rec.events("Newstate")) == 5)
        assert client.connected and fake.connections == 1
        assert client.stats().consumer_errors == 1
        await client.send_action("Ping")
    assert "consumer callback failed" in caplog.text


async def test_slow_consumer_is_sequential_not_concurrent(fake: FakeAsterisk) -> None:
    active = 0
    peak = 0
    seen: list[str] = []

    async def slow(msg: AmiMessage) -> None:
        nonlocal active, peak
        if msg.name != "Newstate":
            return
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.001 if msg.get("Seq") == "0" else 0)
        seen.append(msg.get("Seq"))
        active -= 1

    rec = Recorder()
    client = make_client(fake, rec, on_message=slow)
    async with running(client):
        await fake.push(b"".join(event("Newstate", Seq=str(i)) for i in range(50)))
        await wait_until(lambda: len(seen) == 50)
    assert peak == 1
    assert seen == [str(i) for i in range(50)]


async def test_slow_consumer_pauses_reading_instead_of_buffering(fake: FakeAsterisk) -> None:
    gate = asyncio.Event()
    seen: list[str] = []

    async def blocked(msg: AmiMessage) -> None:
        if msg.name == "Newstate":
            await gate.wait()
            seen.append(msg.get("Seq"))

    rec = Recorder()
    client = make_client(fake, rec, on_message=blocked, max_queued=10)
    async with running(client):
        data = b"".join(event("Newstate", Seq=str(i), Pad="x" * 60) for i in range(3000))
        writer = asyncio.ensure_future(fake.push(data))
        await wait_until(lambda: client.stats().queued > 10)
        await asyncio.sleep(0.2)  # an unpaused reader would have taken all 3000 by now
        assert client.stats().queued < 3000  # the rest waits in socket buffers
        gate.set()
        await wait_until(lambda: len(seen) == 3000)
        await writer
    assert seen == [str(i) for i in range(3000)]


async def test_back_pressure_survives_a_link_lost_while_reading_was_paused(
    fake: FakeAsterisk,
) -> None:
    """The consumer is stuck, reading is paused, and Asterisk drops the link meanwhile (its
    writetimeout drops a client that stopped reading). The client reconnects only once the
    consumer has caught up (a new link would only be held unread), and back-pressure then
    holds the new link too when the consumer falls behind again."""
    gates = {"a": asyncio.Event(), "b": asyncio.Event()}
    seen: list[str] = []
    queued_at_login: list[int] = []
    client: AmiClient | None = None

    async def stuck(msg: AmiMessage) -> None:
        if msg.name == "Newstate":
            await gates[msg.get("Seq")[0]].wait()
            seen.append(msg.get("Seq"))
        else:
            await rec.on_message(msg)

    async def login(f: FakeAsterisk, conn: Conn, fields: dict[str, str], h: Headers) -> None:
        assert client is not None
        queued_at_login.append(client.stats().queued)
        handler = f.handlers.pop("Login")
        try:
            await f._answer(conn, fields, h)
        finally:
            f.handlers["Login"] = handler

    def flood(session: str) -> bytes:
        return b"".join(event("Newstate", Seq=f"{session}{i}", Pad="x" * 60) for i in range(3000))

    fake.handlers["Login"] = login
    rec = Recorder()
    client = make_client(fake, rec, on_message=stuck, max_queued=10)
    async with running(client):
        await rec.wait_for(lambda: "resync" in rec.kinds())
        first = client._proto
        assert first is not None
        writer = asyncio.ensure_future(fake.push(flood("a")))
        await wait_until(lambda: first.held)
        dropped = fake.current.writer
        linger = struct.pack("ii", 1, 0)  # close with a reset, dropping what the client left
        dropped.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        fake.drop()
        await dropped.wait_closed()
        with pytest.raises(AmiConnectionLost):
            await client.send_action("Ping")  # the write finds the link reset
        with contextlib.suppress(ConnectionError):
            await writer
        # keep the consumer stuck until the client either reconnects or waits for it
        await wait_until(lambda: fake.connections == 2 or client._caught_up is not None)
        gates["a"].set()
        await rec.wait_for(lambda: rec.kinds().count("resync") == 2)
        assert queued_at_login[1] <= 5  # caught up (low water) before the new login
        second = client._proto
        assert second is not None and second is not first
        writer = asyncio.ensure_future(fake.push(flood("b")))
        await wait_until(lambda: second.held)  # behind again: this link is held as well
        assert client.stats().queued <= 10 + READ_BUFFER // 60  # one read past high water
        gates["b"].set()
        await wait_until(lambda: len(seen) == len(set(seen)) and seen[-1:] == ["b2999"])
        await writer
    assert seen[-3000:] == [f"b{i}" for i in range(3000)]
    assert seen[0] == "a0" and not second.held


async def test_resync_and_ping_wait_while_reading_is_held_for_the_consumer(
    fake: FakeAsterisk,
) -> None:
    """Events written between the two lists put the consumer behind: reading is held and the
    QueueStatus reply waits unread in the socket. That is no dead link: neither the resync
    nor the Ping watchdog may time out and reconnect (it would happen again on every login)."""
    gate = asyncio.Event()

    async def queue_status(f: FakeAsterisk, conn: Conn, fields: dict[str, str], h: Headers) -> None:
        conn.writer.write(
            b"".join(event("Newstate", Seq=str(i), Pad="x" * 60) for i in range(3000))
        )
        handler = f.handlers.pop("QueueStatus")
        try:
            await f._answer(conn, fields, h)
        finally:
            f.handlers["QueueStatus"] = handler

    async def stuck(msg: AmiMessage) -> None:
        if msg.name == "Newstate":
            await gate.wait()
        await rec.on_message(msg)

    fake.handlers["QueueStatus"] = queue_status
    rec = Recorder()
    client = make_client(
        fake,
        rec,
        on_message=stuck,
        max_queued=10,
        action_timeout=0.2,
        ping_interval=0.05,
        ping_timeout=0.1,
    )
    async with running(client, wait=False):
        await wait_until(lambda: client._proto is not None and client._proto.held)
        await asyncio.sleep(0.6)  # the timers under test: several action and ping timeouts
        gate.set()
        await rec.wait_for(lambda: "resync" in rec.kinds())
        await rec.wait_for(lambda: len(rec.events("Newstate")) == 3000)
        stats = client.stats()
    assert (stats.resyncs, stats.resync_failures, stats.ping_timeouts) == (1, 0, 0)
    assert fake.connections == 1 and stats.reconnects == 0


# -- actions ---------------------------------------------------------------------------------------


async def test_action_timeout_then_link_still_usable(fake: FakeAsterisk) -> None:
    async def never(f: FakeAsterisk, conn: Conn, fields: dict[str, str], h: Headers) -> None:
        return None

    fake.handlers["Status"] = never
    rec = Recorder()
    client = make_client(fake, rec)
    async with running(client):
        with pytest.raises(AmiTimeout, match="Status"):
            await client.send_action("Status", timeout=0.1)
        reply = await client.send_action("Ping")
        assert reply.get("Ping") == "Pong"
        assert client.stats().action_timeouts == 1


async def test_action_while_disconnected_raises_immediately(fake: FakeAsterisk) -> None:
    rec = Recorder()
    client = make_client(fake, rec, reconnect_min=5.0, reconnect_max=5.0)
    with pytest.raises(AmiNotConnected):
        await client.send_action("Ping")
    async with running(client):
        fake.drop()
        await rec.wait_for(lambda: "disconnected" in rec.kinds())
        async with asyncio.timeout(0.5):
            with pytest.raises(AmiNotConnected) as info:
                await client.send_action("Ping")
        assert info.value.code == "ami_not_connected"
        assert not client.connected and client.state == "reconnecting"


async def test_uncorrelatable_reply_fails_the_action_not_the_link(fake: FakeAsterisk) -> None:
    async def queued(f: FakeAsterisk, conn: Conn, fields: dict[str, str], h: Headers) -> None:
        await f.reply(conn, fields, ("Message", "Originate successfully queued"))

    fake.handlers["Originate"] = queued
    rec = Recorder()
    async with running(make_client(fake, rec)) as client:
        # without Async, panoramisk 1.4's reply matching raises KeyError('async') inside
        # data_received, which would drop its connection (PROTOCOL.md §6.3)
        with pytest.raises(AmiError, match="correlate"):
            await client.send_list_action("Originate", {"Channel": "PJSIP/1", "Exten": "1"})
        assert (await client.send_action("Ping")).get("Ping") == "Pong"
        assert fake.connections == 1


async def test_close_from_a_callback_does_not_deadlock(fake: FakeAsterisk) -> None:
    rec = Recorder()
    closed = asyncio.Event()
    client: AmiClient | None = None

    async def on_message(msg: AmiMessage) -> None:
        if msg.name == "Bye" and client is not None:
            await client.close()
            closed.set()

    client = make_client(fake, rec, on_message=on_message)
    await client.start()
    await fake.push(event("Bye"))
    async with asyncio.timeout(2):
        await closed.wait()
    assert client.state == "stopped"


async def test_pending_action_fails_when_link_drops(fake: FakeAsterisk) -> None:
    async def drop(f: FakeAsterisk, conn: Conn, fields: dict[str, str], h: Headers) -> None:
        conn.writer.transport.abort()

    fake.handlers["Status"] = drop
    rec = Recorder()
    async with running(make_client(fake, rec)) as client:
        with pytest.raises(AmiConnectionLost):
            await client.send_action("Status")
        await rec.wait_for(lambda: rec.kinds().count("resync") == 2)
        assert fake.names().count("Status") == 1  # not re-sent after the reconnect


async def test_error_response_raises_action_error(fake: FakeAsterisk) -> None:
    rec = Recorder()
    async with running(make_client(fake, rec)) as client:
        with pytest.raises(AmiActionError, match="Invalid/unknown command: FooBar") as info:
            await client.send_action("FooBar")
        assert info.value.response == "Error" and info.value.action == "FooBar"


async def test_list_action_and_command(fake: FakeAsterisk) -> None:
    rec = Recorder()
    async with running(make_client(fake, rec)) as client:
        items = await client.send_list_action("QueueStatus", {"Queue": "support"})
        assert [m.name for m in items] == [
            "Success",
            "QueueParams",
            "QueueMember",
            "QueueStatusComplete",
        ]
        assert dict(fake.actions[-1][1])["Queue"] == "support"
        assert await client.command("core show version") == [
            "Asterisk 20.5.0: built",
            "   second: line",
        ]
        # list items of a finished request are not events for the tracker
        assert not rec.events("QueueMember")


async def test_originate_async_success_and_failure(fake: FakeAsterisk) -> None:
    rec = Recorder()
    async with running(make_client(fake, rec)) as client:
        ok = await client.originate(
            channel="PJSIP/1001",
            context="from-internal",
            exten="15557654321",
            caller_id='"回拨" <5551000>',
            variables={"CALL_ID": "ord-4711", "__CAMPAIGN": "spring"},
            channel_id="c2c-1",
            timeout_ms=1000,
        )
        assert ok.success and ok.reason == 4 and ok.uniqueid == "c2c-1"
        assert ok.channel == "PJSIP/1001-00000007"
        sent = fake.actions[-1][1]
        assert ("Async", "true") in sent and ("Priority", "1") in sent
        assert ("CallerID", '"回拨" <5551000>') in sent
        assert [v for k, v in sent if k == "Variable"] == ["CALL_ID=ord-4711", "__CAMPAIGN=spring"]
        busy = await client.originate(channel="PJSIP/busy", application="Playback", data="x")
        assert not busy.success and busy.reason == 5 and busy.uniqueid == "<unknown>"
        # the tracker sees the OriginateResponse events too, after the Newchannel before them
        await rec.wait_for(lambda: len(rec.events("OriginateResponse")) == 2)
        names = [m.name for m in rec.events() if m.name in ("Newchannel", "OriginateResponse")]
        assert names == ["Newchannel", "OriginateResponse"] * 2


async def test_originate_link_drop_is_outcome_unknown_and_never_resent(
    fake: FakeAsterisk,
) -> None:
    async def queued_then_drop(
        f: FakeAsterisk, conn: Conn, fields: dict[str, str], h: Headers
    ) -> None:
        await f.reply(conn, fields, ("Message", "Originate successfully queued"))
        await asyncio.sleep(0.05)
        conn.writer.transport.abort()

    fake.handlers["Originate"] = queued_then_drop
    rec = Recorder()
    async with running(make_client(fake, rec)) as client:
        with pytest.raises(AmiOriginateUnknown) as info:
            await client.originate(channel="PJSIP/1001", context="c", exten="1")
        assert info.value.cause == "connection_lost"
        await rec.wait_for(lambda: rec.kinds().count("resync") == 2)
        await client.send_action("Ping")
        assert fake.names().count("Originate") == 1


async def test_originate_timeout_is_outcome_unknown(fake: FakeAsterisk) -> None:
    async def queued_only(f: FakeAsterisk, conn: Conn, fields: dict[str, str], h: Headers) -> None:
        await f.reply(conn, fields, ("Message", "Originate successfully queued"))

    fake.handlers["Originate"] = queued_only
    rec = Recorder()
    async with running(make_client(fake, rec)) as client:
        with pytest.raises(AmiOriginateUnknown) as info:
            await client.originate(channel="PJSIP/1001", context="c", exten="1", action_timeout=0.1)
        assert info.value.cause == "timeout"
        assert client.connected


async def test_close_fails_pending_action(fake: FakeAsterisk) -> None:
    async def never(f: FakeAsterisk, conn: Conn, fields: dict[str, str], h: Headers) -> None:
        return None

    fake.handlers["Status"] = never
    rec = Recorder()
    client = make_client(fake, rec)
    await client.start()
    pending = asyncio.ensure_future(client.send_action("Status"))
    await wait_until(lambda: "Status" in fake.names())
    await client.close()
    with pytest.raises(AmiError):
        await pending
    await client.close()  # idempotent


# -- pure helpers ------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_caps() -> None:
    lo = [backoff_delay(n, minimum=0.5, maximum=30, rand=lambda: 0.0) for n in range(10)]
    hi = [backoff_delay(n, minimum=0.5, maximum=30, rand=lambda: 1.0) for n in range(10)]
    assert hi[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert hi[9] == 30.0 and lo[9] == 15.0
    assert all(a == b / 2 for a, b in zip(lo, hi, strict=True))
    assert backoff_delay(10_000, minimum=0.5, maximum=30) <= 30


async def test_build_action_rejects_header_injection() -> None:
    with pytest.raises(AmiInvalidAction):
        build_action("Setvar", [("Value", "x\r\nAction: Originate")])
    with pytest.raises(AmiInvalidAction):
        build_action("Bad Action")
    with pytest.raises(AmiInvalidAction):
        build_action("Ping", [("Bad: name", "x")])
    act = build_action("Originate", [("Variable", "a=1"), ("variable", "b=2")])
    text = str(act)
    assert "Variable: a=1\r\nVariable: b=2\r\n" in text
    assert text.endswith("\r\n\r\n")
