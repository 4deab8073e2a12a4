"""The emulator's AMI server against the golden byte streams of ami_transcripts/raw.

Each test replays the client's bytes (NN_*.app.raw) action by action over a real TCP socket and
compares what the server writes with NN_*.ast.raw, byte for byte. Values that differ on every
real Asterisk run (Ping timestamps, the MD5 challenge, uptimes) are injected into AmiServer.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from pbxsim_support import Client, split_messages
from shared_asterisk import AMI_RAW

from callcenter.asterisk.message import AmiMessage
from callcenter.pbxsim.ami_server import (
    ActionReply,
    AmiServer,
    AmiSession,
    AmiUser,
    CliResult,
)
from callcenter.pbxsim.wire import Header, parse_header_line

RAW = AMI_RAW
BANNER = b"Asterisk Call Manager/9.0.0\r\n"

pytestmark = pytest.mark.skipif(not RAW.is_dir(), reason="AMI transcripts not available")


def headers_of(message: bytes) -> list[Header]:
    out: list[Header] = []
    for line in message.decode().split("\r\n"):
        if line:
            header = parse_header_line(line)
            assert header is not None
            out.append(header)
    return out


def raw(name: str) -> tuple[bytes, bytes]:
    app = next(RAW.glob(f"{name}_*.app.raw")).read_bytes()
    ast = next(RAW.glob(f"{name}_*.ast.raw")).read_bytes()
    return app, ast


def seconds(value: str) -> int:
    """'1715681690.412068' -> nanoseconds."""
    sec, _, usec = value.partition(".")
    return int(sec) * 1_000_000_000 + int(usec.ljust(6, "0")) * 1000


class ScriptedClock:
    def __init__(self, values: Sequence[int]) -> None:
        self.values = list(values)

    def __call__(self) -> int:
        return self.values.pop(0)


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., AmiServer]]:
    servers: list[AmiServer] = []

    def make(**kwargs: object) -> AmiServer:
        kwargs.setdefault("users", {"callcenter": AmiUser(secret="s3cret")})
        kwargs.setdefault("sleep", no_sleep)
        server = AmiServer(**kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


async def test_01_login_ping_events_filter_logoff(make_server: Callable[..., AmiServer]) -> None:
    app, ast = raw("01")
    expected = split_messages(ast[len(BANNER) :])
    assert ast.startswith(BANNER)
    now = seconds("1715681600.5")
    clock = ScriptedClock([now, seconds("1715681690.412068"), seconds("1715681691.001234")])
    server = make_server(clock_ns=clock, boot_time_ns=now - 86012 * 10**9)
    _, port = await server.start()
    client = await Client.connect(port)
    await client.expect(BANNER)
    actions = split_messages(app)
    # replies per action: Login answers with the Response and the inline FullyBooted
    counts = [2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert len(actions) == len(counts)
    i = 0
    for action, count in zip(actions, counts, strict=True):
        await client.send(action)
        for _ in range(count):
            await client.expect(expected[i])
            i += 1
    assert i == len(expected)
    await client.expect_eof()  # Logoff closes the connection
    assert clock.values == []


async def test_02_errors_three_sessions(make_server: Callable[..., AmiServer]) -> None:
    app, ast = raw("02")
    sessions = ast.split(BANNER)
    assert sessions[0] == b"" and len(sessions) == 4
    exp_a, exp_b, exp_c = (split_messages(s) for s in sessions[1:])
    actions = split_messages(app)
    act_a, act_b, act_c = actions[0:2], actions[2:3], actions[3:]

    async def hangup(session: AmiSession, action: AmiMessage) -> ActionReply:
        return ActionReply.error("No such channel")

    async def getvar(session: AmiSession, action: AmiMessage) -> ActionReply:
        assert action.get("Variable") == "IVR_CHOICE"
        return ActionReply.success(headers=[("Variable", "IVR_CHOICE"), ("Value", "2")])

    async def originate(session: AmiSession, action: AmiMessage) -> ActionReply:
        raise AssertionError("must be refused before the handler runs")

    boot = seconds("1715000000")
    server = make_server(
        # write= lacks call and originate, as the transcript's comment says
        users={
            "callcenter": AmiUser(
                secret="s3cret", write="system,reporting,command", allow_multiple_login=False
            )
        },
        clock_ns=ScriptedClock([boot + 86020 * 10**9]),
        boot_time_ns=boot,
    )
    server.register_action("Hangup", hangup, privilege="system,call")
    server.register_action("Getvar", getvar, privilege="call,reporting")
    server.register_action("Originate", originate, privilege="originate,call")
    _, port = await server.start()

    # Session A: Permission denied before login, then a wrong secret: reply, then close.
    a = await Client.connect(port)
    await a.expect(BANNER)
    for action, reply in zip(act_a, exp_a, strict=True):
        await a.send(action)
        await a.expect(reply)
    await a.expect_eof()

    # Session B: the user is already logged in elsewhere and allowmultiplelogin=no.
    holder = await Client.connect(port)
    await holder.expect(BANNER)
    await holder.send(
        b"Action: Login\r\nUsername: CallCenter\r\nSecret: s3cret\r\nEvents: off\r\n\r\n"
    )
    await holder.expect(b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
    b = await Client.connect(port)
    await b.expect(BANNER)
    await b.send(act_b[0])
    await b.expect(exp_b[0])
    await b.expect_eof()
    await holder.send(b"Action: Logoff\r\n\r\n")
    await holder.expect(b"Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n")
    await holder.expect_eof()

    # Session C: FullyBooted after login, then every error of the transcript in order.
    c = await Client.connect(port)
    await c.expect(BANNER)
    counts = [2, 1, 1, 1, 1, 1, 1]
    assert len(act_c) == len(counts)
    i = 0
    for action, count in zip(act_c, counts, strict=True):
        await c.send(action)
        for _ in range(count):
            await c.expect(exp_c[i])
            i += 1
    assert i == len(exp_c)
    await c.close()


async def test_03_md5_challenge_login(make_server: Callable[..., AmiServer]) -> None:
    app, ast = raw("03")
    expected = split_messages(ast[len(BANNER) :])
    actions = split_messages(app)
    server = make_server(challenge_source=lambda: 840959223)
    _, port = await server.start()
    client = await Client.connect(port)
    await client.expect(BANNER)
    for action, reply in zip(actions, expected, strict=True):
        await client.send(action)
        await client.expect(reply)
    # still connected and authenticated
    await client.send(b"Action: Ping\r\nActionID: x\r\n\r\n")
    await client.expect(b"Response: Success\r\nActionID: x\r\nPing: Pong\r\nTimestamp: ")
    await client.close()


async def test_03_challenge_is_at_most_nine_digits_and_kept(
    make_server: Callable[..., AmiServer],
) -> None:
    calls: list[int] = []

    def source() -> int:
        calls.append(1)
        return 2147483647

    server = make_server(challenge_source=source)
    _, port = await server.start()
    client = await Client.connect(port)
    await client.expect(BANNER)
    for _ in range(2):
        await client.send(b"Action: Challenge\r\nAuthType: md5\r\n\r\n")
        await client.expect(b"Response: Success\r\nChallenge: 214748364\r\n\r\n")
    assert len(calls) == 1
    # an uppercase hex key is refused (strcmp), then the connection closes
    key = hashlib.md5(b"214748364s3cret").hexdigest().upper()
    login = f"Action: Login\r\nUsername: callcenter\r\nAuthType: MD5\r\nKey: {key}\r\n\r\n"
    await client.send(login.encode())
    await client.expect(b"Response: Error\r\nMessage: Authentication failed\r\n\r\n")
    await client.expect_eof()


def _parse_08() -> tuple[list[bytes], list[bytes]]:
    app, ast = raw("08")
    return split_messages(app), split_messages(ast)


async def test_08_lists_command_and_queue_actions(make_server: Callable[..., AmiServer]) -> None:
    """Framing of list actions, Command output and events published by an action handler.

    The PBX core builds the real items; here throwaway handlers return the transcript's own items
    (taken from the .ast.raw), which checks the server's layout around them: EventList: start,
    items verbatim and contiguous, the Complete event with ListItems, and events published during
    an action written after its response.
    """
    actions, expected = _parse_08()
    by_event: dict[str, list[list[Header]]] = {}
    for message in expected:
        headers = headers_of(message)
        if headers[0][0] == "Event":
            by_event.setdefault(headers[0][1], []).append(headers)

    def items(*names: str) -> list[list[Header]]:
        return [h for name in names for h in by_event[name]]

    async def queue_status(session: AmiSession, action: AmiMessage) -> ActionReply:
        return ActionReply.event_list_reply(
            action_id=action.action_id,
            message="Queue status will follow",
            items=items("QueueParams", "QueueMember", "QueueEntry"),
            complete_event="QueueStatusComplete",
        )

    async def queue_summary(session: AmiSession, action: AmiMessage) -> ActionReply:
        return ActionReply.event_list_reply(
            action_id=action.action_id,
            message="Queue summary will follow",
            items=items("QueueSummary"),
            complete_event="QueueSummaryComplete",
        )

    async def core_show_channels(session: AmiSession, action: AmiMessage) -> ActionReply:
        return ActionReply.event_list_reply(
            action_id=action.action_id,
            message="Channels will follow",
            items=items("CoreShowChannel"),
            complete_event="CoreShowChannelsComplete",
        )

    member_events = iter(items("QueueMemberAdded", "QueueMemberPause", "QueueMemberRemoved"))

    def publish_member_event() -> None:
        headers = next(member_events)
        name = headers[0][1]
        assert headers[1] == ("Privilege", "agent,all")
        server.publish(name, "agent", headers[2:])

    added: set[str] = set()

    async def queue_add(session: AmiSession, action: AmiMessage) -> ActionReply:
        if action.get("Queue") != "support":
            return ActionReply.error("Unable to add interface to queue: No such queue")
        if action.get("Interface") in added:
            return ActionReply.error("Unable to add interface: Already there")
        added.add(action.get("Interface"))
        publish_member_event()
        return ActionReply.success("Added interface to queue")

    async def queue_pause(session: AmiSession, action: AmiMessage) -> ActionReply:
        if action.get("Interface") not in added:
            return ActionReply.error("Interface not found")
        publish_member_event()
        paused = action.get("Paused") == "true"
        return ActionReply.success(
            "Interface paused successfully" if paused else "Interface unpaused successfully"
        )

    async def queue_remove(session: AmiSession, action: AmiMessage) -> ActionReply:
        if action.get("Interface") not in added:
            return ActionReply.error("Unable to remove interface: Not there")
        added.discard(action.get("Interface"))
        publish_member_event()
        return ActionReply.success("Removed interface from queue")

    version_line = (
        "Asterisk 20.5.0 built by root @ buildhost on a x86_64 running Linux on "
        "2023-10-20 12:00:00 UTC\n"
    )

    async def core_show_version(args: Sequence[str]) -> CliResult:
        assert list(args) == []
        return CliResult(version_line)

    async def queue_show(args: Sequence[str]) -> CliResult:
        assert list(args) == ["support"]
        # the CLI text keeps its leading blanks: cut exactly "Output: " off each line
        lines = [
            line[len("Output: ") :]
            for line in queue_show_reply.decode().split("\r\n")
            if line.startswith("Output: ")
        ]
        return CliResult("\n".join(lines) + "\n")

    queue_show_reply = next(m for m in expected if b"ActionID: cmd-3" in m)

    server = make_server()
    server.register_action("QueueStatus", queue_status, privilege="agent")
    server.register_action("QueueSummary", queue_summary)
    server.register_action("CoreShowChannels", core_show_channels, privilege="system,reporting")
    server.register_action("QueueAdd", queue_add, privilege="agent")
    server.register_action("QueuePause", queue_pause, privilege="agent")
    server.register_action("QueueRemove", queue_remove, privilege="agent")
    server.register_cli("core show version", core_show_version)
    server.register_cli("queue show", queue_show)
    _, port = await server.start()
    client = await Client.connect(port)
    await client.expect(BANNER)
    await client.send(
        b"Action: Login\r\nUsername: callcenter\r\nSecret: s3cret\r\nEvents: off\r\n\r\n"
    )
    await client.expect(b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
    await client.send(b"Action: Events\r\nEventMask: agent\r\n\r\n")
    await client.expect(b"Response: Success\r\nEvents: On\r\n\r\n")

    # number of server messages following each action, in transcript order
    counts = [6, 3, 3, 1, 1, 1, 2, 1, 1, 2, 2, 1, 2, 1]
    assert len(actions) == len(counts)
    i = 0
    for action, count in zip(actions, counts, strict=True):
        await client.send(action)
        await client.expect(b"".join(expected[i : i + count]))
        i += count
    # the last message: QueueMemberStatus on a device-state change, no action involved
    last = headers_of(expected[i])
    server.publish(last[0][1], "agent", last[2:])
    await client.expect(expected[i])
    assert i + 1 == len(expected)
    await client.close()


async def test_08_empty_list_has_only_start_and_complete(
    make_server: Callable[..., AmiServer],
) -> None:
    async def core_show_channels(session: AmiSession, action: AmiMessage) -> ActionReply:
        return ActionReply.event_list_reply(
            action_id=action.action_id,
            message="Channels will follow",
            items=[],
            complete_event="CoreShowChannelsComplete",
        )

    server = make_server()
    server.register_action("CoreShowChannels", core_show_channels)
    _, port = await server.start()
    client = await Client.connect(port)
    await client.expect(BANNER)
    await client.send(
        b"Action: Login\r\nUsername: callcenter\r\nSecret: s3cret\r\nEvents: off\r\n\r\n"
    )
    await client.expect(b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
    await client.send(b"Action: CoreShowChannels\r\n\r\n")
    await client.expect(
        b"Response: Success\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n"
        b"Event: CoreShowChannelsComplete\r\nEventList: Complete\r\nListItems: 0\r\n\r\n"
    )
    await client.close()


async def test_10_shutdown(make_server: Callable[..., AmiServer]) -> None:
    app, ast = raw("10")
    shutdown_event, shutting_down_reply = split_messages(ast)
    (ping,) = split_messages(app)
    server = make_server(fully_booted=False)  # no inline FullyBooted to read past
    _, port = await server.start()

    async def login(events: str) -> Client:
        client = await Client.connect(port)
        await client.expect(BANNER)
        login = f"Action: Login\r\nUsername: callcenter\r\nSecret: s3cret\r\nEvents: {events}\r\n"
        await client.send(login.encode() + b"\r\n")
        await client.expect(b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
        return client

    system_reader = await login("system")
    events_off = await login("off")

    # `core stop gracefully` phase: actions are refused with the exact text
    server.begin_shutdown()
    await system_reader.send(ping)
    await system_reader.expect(shutting_down_reply)

    await server.shutdown(restart=True, cleanly=True)
    await system_reader.expect(shutdown_event)
    await system_reader.expect_eof()
    await events_off.expect_eof()  # no Shutdown event without the system class: just the close
    with pytest.raises(OSError):
        await Client.connect(port)  # the listener is gone
