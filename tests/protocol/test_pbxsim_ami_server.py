"""AMI server behaviours beyond the transcripts: framing limits, login rules, event routing,
filters and masks, one-action-at-a-time, slow consumers, timeouts, Command, shutdown.

Real TCP on 127.0.0.1 with ephemeral ports. "Nothing was delivered" is always checked by
publishing a sentinel afterwards and reading that it is the very next message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pbxsim_support import IO_TIMEOUT, Client

from callcenter.asterisk.message import AmiMessage
from callcenter.pbxsim.ami_server import (
    ActionReply,
    AmiServer,
    AmiSession,
    AmiUser,
    CliResult,
    FilterError,
    get_perm,
    parse_cli_args,
    parse_filter,
    strings_to_mask,
)
from callcenter.pbxsim.wire import RequestFramer, encode_message, escape_c

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
ACCEPTED = b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n"


async def no_sleep(_: float) -> None:
    return None


Factory = Callable[..., AmiServer]


@pytest.fixture
async def make_server() -> AsyncIterator[Factory]:
    servers: list[AmiServer] = []

    def make(**kwargs: object) -> AmiServer:
        kwargs.setdefault("users", {"callcenter": AmiUser(secret="s3cret")})
        kwargs.setdefault("sleep", no_sleep)
        kwargs.setdefault("fully_booted", False)
        server = AmiServer(**kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


async def start(server: AmiServer) -> int:
    _, port = await server.start()
    return port


async def login(port: int, events: str = "on", user: str = "callcenter") -> Client:
    client = await Client.connect(port)
    await client.expect(BANNER)
    await client.send(
        f"Action: Login\r\nUsername: {user}\r\nSecret: s3cret\r\nEvents: {events}\r\n\r\n".encode()
    )
    await client.expect(ACCEPTED)
    return client


def event(name: str, klass: str, *fields: tuple[str, str]) -> bytes:
    return encode_message([("Event", name), ("Privilege", f"{klass},all"), *fields])


# --------------------------------------------------------------------------- framing


async def test_lf_only_input_case_insensitive_names_any_order(make_server: Factory) -> None:
    port = await start(make_server(clock_ns=lambda: 1_715_681_690_412_068_000))
    client = await Client.connect(port)
    await client.expect(BANNER)
    await client.send(b"username: callcenter\nSECRET:s3cret\naction:   Login\nEvents: off\n\n")
    await client.expect(ACCEPTED)
    # first occurrence wins; ActionID echoed verbatim with leading blanks skipped
    await client.send(b"ActionID:  \t a b \nAction: pInG\nActionID: second\n\n")
    await client.expect(
        b"Response: Success\r\nActionID: a b \r\nPing: Pong\r\nTimestamp: 1715681690.412068\r\n\r\n"
    )
    await client.close()


async def test_non_utf8_bytes_are_echoed_unchanged(make_server: Factory) -> None:
    port = await start(make_server())
    client = await login(port)
    await client.send(b"Action: Nope\xff\r\nActionID: id-\xe4\xb8\r\n\r\n")
    await client.expect(
        b"Response: Error\r\nActionID: id-\xe4\xb8\r\nMessage: Invalid/unknown command: Nope\xff."
        b" Use Action: ListCommands to show available commands.\r\n\r\n"
    )
    await client.close()


async def test_line_too_long_then_session_continues(make_server: Factory) -> None:
    port = await start(make_server())
    client = await login(port)
    # a 1022-byte line + CRLF fits the 1024-byte buffer
    await client.send(b"Action: Logoff\r\nX: " + b"a" * 1019 + b"\r\nActionID: ok\r\n\r\n")
    await client.expect(
        b"Response: Goodbye\r\nActionID: ok\r\nMessage: Thanks for all the fish.\r\n\r\n"
    )
    await client.expect_eof()

    client = await login(port)
    # a 1023-byte line + CRLF does not (its CR fills the buffer), nor does a longer one
    for pad in (1020, 5000):
        await client.send(b"ActionID: x\r\nAction: Logoff\r\nX: " + b"a" * pad + b"\r\n\r\n")
        await client.expect(
            b"Response: Error\r\nActionID: x\r\n"
            b"Message: Failed to parse message: line too long\r\n\r\n"
        )
        if pad == 1020:
            # the kept CR plus the LF made an empty line, so the message ended there and the
            # real empty line that followed is a message of its own
            await client.expect(b"Response: Error\r\nMessage: Missing action in request\r\n\r\n")
    await client.send(b"Action: Logoff\r\n\r\n")
    await client.expect(b"Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n")
    await client.expect_eof()


async def test_too_many_lines(make_server: Factory) -> None:
    port = await start(make_server())
    client = await login(port)
    # 128 lines, the last one being EventMask: accepted
    lines = b"".join(b"X-%d: y\r\n" % i for i in range(125))
    await client.send(b"Action: Events\r\nActionID: 128\r\n" + lines + b"EventMask: off\r\n\r\n")
    await client.expect(b"Response: Success\r\nActionID: 128\r\nEvents: Off\r\n\r\n")
    # 129 lines: the 129th is lost and the whole message refused
    lines = b"".join(b"X-%d: y\r\n" % i for i in range(126))
    await client.send(b"Action: Events\r\nActionID: 129\r\n" + lines + b"EventMask: on\r\n\r\n")
    await client.expect(
        b"Response: Error\r\nActionID: 129\r\n"
        b"Message: Too many lines in message or allocation failure\r\n\r\n"
    )
    await client.send(b"Action: Events\r\nEventMask: on\r\n\r\n")
    await client.expect(b"Response: Success\r\nEvents: On\r\n\r\n")
    await client.close()


async def test_request_then_half_close_is_still_answered(make_server: Factory) -> None:
    port = await start(make_server())
    client = await Client.connect(port)
    await client.expect(BANNER)
    client.writer.write(b"Action: Logoff\r\n\r\n")
    client.writer.write_eof()
    await client.expect(b"Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n")
    await client.expect_eof()


# --------------------------------------------------------------------------- login


async def test_failed_login_waits_before_replying_then_closes(make_server: Factory) -> None:
    delays: list[float] = []
    entered = asyncio.Event()
    release = asyncio.Event()

    async def controlled_sleep(seconds: float) -> None:
        delays.append(seconds)
        entered.set()
        await release.wait()

    port = await start(make_server(sleep=controlled_sleep))
    for username in ("callcenter", "nobody"):
        entered.clear()
        release.clear()
        client = await Client.connect(port)
        await client.expect(BANNER)
        await client.send(
            f"Action: Login\r\nActionID: 9\r\nUsername: {username}\r\nSecret: bad\r\n\r\n".encode()
        )
        await asyncio.wait_for(entered.wait(), IO_TIMEOUT)
        with pytest.raises(TimeoutError):  # nothing is written while the server sleeps
            await asyncio.wait_for(client.reader.read(1), 0.05)
        release.set()
        await client.expect(
            b"Response: Error\r\nActionID: 9\r\nMessage: Authentication failed\r\n\r\n"
        )
        await client.expect_eof()
    assert delays == [1.0, 1.0]  # Asterisk's sleep(1), the default


async def test_username_is_case_insensitive_and_secret_is_not(make_server: Factory) -> None:
    port = await start(make_server())
    client = await Client.connect(port)
    await client.expect(BANNER)
    await client.send(b"Action: Login\r\nUsername: CallCenter\r\nSecret: s3cret\r\n\r\n")
    await client.expect(ACCEPTED)
    await client.close()
    client = await Client.connect(port)
    await client.expect(BANNER)
    await client.send(b"Action: Login\r\nUsername: callcenter\r\nSecret: S3CRET\r\n\r\n")
    await client.expect(b"Response: Error\r\nMessage: Authentication failed\r\n\r\n")
    await client.expect_eof()


async def test_fully_booted_only_with_system_read_and_events(make_server: Factory) -> None:
    boot = 1_700_000_000 * 10**9
    server = make_server(
        users={
            "callcenter": AmiUser(secret="s3cret"),
            "calls": AmiUser(secret="s3cret", read="call,agent"),
        },
        fully_booted=True,
        boot_time_ns=boot,
        reload_time_ns=boot + 100 * 10**9,
        clock_ns=lambda: boot + 500 * 10**9 + 999_999_999,
    )
    port = await start(server)
    client = await login(port, events="system")
    await client.expect(
        event("FullyBooted", "system", ("Uptime", "500"), ("LastReload", "400"))[:-2]
        + b"Status: Fully Booted\r\n\r\n"
    )
    await client.close()
    for user, events in (("callcenter", "call"), ("calls", "on")):
        client = await login(port, events=events, user=user)
        await client.send(b"Action: Logoff\r\n\r\n")  # the next bytes are the Goodbye
        await client.expect(b"Response: Goodbye\r\n")
        await client.close()


async def test_boot_time_fully_booted_is_an_ordinary_event(make_server: Factory) -> None:
    server = make_server(boot_time_ns=0, clock_ns=lambda: 42 * 10**9)
    port = await start(server)
    client = await login(port)  # not booted yet: no inline FullyBooted
    server.mark_fully_booted()
    await client.expect(
        event(
            "FullyBooted",
            "system",
            ("Status", "Fully Booted"),
            ("Uptime", "42"),
            ("LastReload", "42"),
        )
    )
    await client.close()


async def test_logoff_and_challenge_allowed_before_login(make_server: Factory) -> None:
    port = await start(make_server())
    client = await Client.connect(port)
    await client.expect(BANNER)
    await client.send(b"Action: Events\r\nEventMask: off\r\n\r\n")
    await client.expect(b"Response: Error\r\nMessage: Permission denied\r\n\r\n")
    await client.send(b"Action: Challenge\r\nAuthType: nope\r\n\r\n")
    await client.expect(b"Response: Error\r\nMessage: Must specify AuthType\r\n\r\n")
    await client.send(b"Action: Logoff\r\n\r\n")
    await client.expect(b"Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n")
    await client.expect_eof()


async def test_multiple_login_allowed_by_default(make_server: Factory) -> None:
    port = await start(make_server())
    first = await login(port)
    second = await login(port)
    await first.close()
    await second.close()


async def test_authtimeout_drops_silently_but_not_authenticated(make_server: Factory) -> None:
    server = make_server(auth_timeout=0.05)
    port = await start(server)
    idle = await Client.connect(port)
    await idle.expect(BANNER)
    await idle.expect_eof()


async def test_authlimit_refuses_before_banner(make_server: Factory) -> None:
    server = make_server(auth_limit=1)
    port = await start(server)
    first = await Client.connect(port)
    await first.expect(BANNER)
    refused = await Client.connect(port)
    await refused.expect_eof()
    # once the first is authenticated, a new unauthenticated session is welcome again
    await first.send(b"Action: Login\r\nUsername: callcenter\r\nSecret: s3cret\r\n\r\n")
    await first.expect(ACCEPTED)
    again = await Client.connect(port)
    await again.expect(BANNER)
    await first.close()
    await again.close()


# --------------------------------------------------------------------------- events


async def test_two_sessions_receive_events_in_order(make_server: Factory) -> None:
    server = make_server()
    port = await start(server)
    a = await login(port)
    b = await login(port)
    server.publish("Newchannel", "call", [("Channel", "PJSIP/trunk-00000001")])
    server.publish("QueueCallerJoin", "agent", [("Queue", "support"), ("Count", "1")])
    for client in (a, b):
        await client.expect(
            event("Newchannel", "call", ("Channel", "PJSIP/trunk-00000001"))
            + event("QueueCallerJoin", "agent", ("Queue", "support"), ("Count", "1"))
        )
    await a.close()
    await b.close()


async def test_unauthenticated_sessions_get_no_events(make_server: Factory) -> None:
    server = make_server()
    port = await start(server)
    client = await Client.connect(port)
    await client.expect(BANNER)
    server.publish("Newchannel", "call", [])
    await client.send(b"Action: Login\r\nUsername: callcenter\r\nSecret: s3cret\r\n\r\n")
    await client.expect(ACCEPTED)
    server.publish("Sentinel", "call", [])
    await client.expect(event("Sentinel", "call"))
    await client.close()


async def test_event_masks_and_read_permission(make_server: Factory) -> None:
    server = make_server(
        users={
            "callcenter": AmiUser(secret="s3cret"),
            "calls": AmiUser(secret="s3cret", read="call"),
        },
        broken_events_action=False,
    )
    port = await start(server)
    off = await login(port, events="off")
    calls_only = await login(port, events="call")
    reader = await login(port, events="on", user="calls")  # may not read agent events
    server.publish("QueueCallerJoin", "agent", [])
    server.publish("Newstate", "call", [])
    for client in (calls_only, reader):
        await client.expect(event("Newstate", "call"))
    # turn the first one on with a class list using ast_instring's prefix matching
    await off.send(b"Action: Events\r\nActionID: e\r\nEventMask: ag,dialplan\r\n\r\n")
    await off.expect(b"Response: Success\r\nActionID: e\r\nEvents: On\r\n\r\n")
    server.publish("Newstate", "call", [])
    server.publish("AGIExecStart", "agi", [])
    server.publish("VarSet", "dialplan", [])
    await off.expect(event("AGIExecStart", "agi") + event("VarSet", "dialplan"))
    await off.close()
    await calls_only.close()
    await reader.close()


@pytest.mark.parametrize(
    ("mask", "reply"),
    [
        ("on", b"Events: On"),
        ("off", b"Events: Off"),
        ("call,agent", b"Events: On"),
        ("nonsense", b"Events: Off"),
        ("3", b"Events: On"),
        ("0", b"Events: Off"),
        ("", b"Message: Invalid event mask"),
    ],
)
async def test_action_events_replies(make_server: Factory, mask: str, reply: bytes) -> None:
    port = await start(make_server())
    client = await login(port)
    await client.send(f"Action: Events\r\nEventMask: {mask}\r\n\r\n".encode())
    status = b"Error" if b"Invalid" in reply else b"Success"
    await client.expect(b"Response: " + status + b"\r\n" + reply + b"\r\n\r\n")
    await client.close()


async def test_broken_events_action_sends_nothing_for_all(make_server: Factory) -> None:
    port = await start(make_server(broken_events_action=True))
    client = await login(port)
    await client.send(
        b"Action: Events\r\nEventMask: on\r\n\r\nAction: Events\r\nEventMask:\r\n\r\n"
    )
    await client.send(b"Action: Events\r\nEventMask: call\r\n\r\n")
    await client.expect(b"Response: Success\r\nEvents: On\r\n\r\n")
    await client.close()


async def test_filters_include_exclude_and_advanced(make_server: Factory) -> None:
    server = make_server()
    port = await start(server)
    client = await login(port)

    async def add(filter_: str, criteria: str = "") -> bytes:
        extra = f"MatchCriteria: {criteria}\r\n" if criteria else ""
        await client.send(
            f"Action: Filter\r\nOperation: add\r\n{extra}Filter: {filter_}\r\n\r\n".encode()
        )
        return await client.message()

    assert (
        await add("Event: (Newchannel|Hangup)") == b"Response: Success\r\nMessage: Success\r\n\r\n"
    )
    assert await add("!Channel: Local/") == b"Response: Success\r\nMessage: Success\r\n\r\n"
    assert (
        await add("", "name(Cdr),method(none)") == b"Response: Success\r\nMessage: Success\r\n\r\n"
    )
    server.publish("Newchannel", "call", [("Channel", "Local/1@x-0001;1")])  # excluded
    server.publish("Newstate", "call", [("Channel", "PJSIP/a")])  # not included
    server.publish("Newchannel", "call", [("Channel", "PJSIP/a")])
    server.publish("Cdr", "cdr", [("Channel", "Local/1@x-0001;1")])  # included, then excluded
    server.publish("Cdr", "cdr", [("Channel", "PJSIP/b")])
    await client.expect(
        event("Newchannel", "call", ("Channel", "PJSIP/a"))
        + event("Cdr", "cdr", ("Channel", "PJSIP/b"))
    )
    bad = (
        b"Response: Error\r\n"
        b"Message: Filter did not compile.  Check the syntax of the filter given.\r\n\r\n"
    )
    assert await add("Event: (unclosed") == bad
    fmt = (
        b"Response: Error\r\n"
        b"Message: Filter was formatted incorrectly.  Check the syntax of the filter given.\r\n\r\n"
    )
    assert await add("") == fmt
    assert await add("abc", "name(Cdr)") == fmt  # method defaults to none: no pattern allowed
    await client.close()


async def test_user_eventfilter_from_configuration(make_server: Factory) -> None:
    server = make_server(
        users={
            "callcenter": AmiUser(
                secret="s3cret",
                event_filters=(
                    "!Event: VarSet",
                    ("eventfilter(action(exclude),header(Channel),method(starts_with))", "Local/"),
                ),
            )
        }
    )
    port = await start(server)
    client = await login(port)
    server.publish("VarSet", "dialplan", [("Channel", "PJSIP/a")])
    server.publish("Newexten", "dialplan", [("Channel", "Local/x;1")])
    server.publish("Newexten", "dialplan", [("Channel", "PJSIP/a")])
    await client.expect(event("Newexten", "dialplan", ("Channel", "PJSIP/a")))
    with pytest.raises(FilterError):
        make_server(users={"x": AmiUser(secret="s", event_filters=("(",))})
    await client.close()


async def test_event_knobs_timestamp_debug_systemname_disabled(make_server: Factory) -> None:
    server = make_server(
        timestamp_events=True,
        debug=True,
        system_name="pbx1",
        disabled_events=["VarSet"],
        clock_ns=lambda: 1_715_681_690_000_001_000,
    )
    port = await start(server)
    client = await login(port)
    server.publish("VarSet", "dialplan", [])
    server.publish("Hangup", "call", [("Cause", "16")], origin=("manager_channels.c", 7, "f"))
    await client.expect(
        b"Event: Hangup\r\nPrivilege: call,all\r\nTimestamp: 1715681690.000001\r\n"
        b"SequenceNumber: 0\r\nFile: manager_channels.c\r\nLine: 7\r\nFunc: f\r\n"
        b"SystemName: pbx1\r\nCause: 16\r\n\r\n"
    )
    await client.close()


# --------------------------------------------------------------------------- one action at a time


async def test_blocking_action_holds_back_that_sessions_events_only(make_server: Factory) -> None:
    server = make_server()
    entered = asyncio.Event()
    release = asyncio.Event()

    async def sync_originate(session: AmiSession, action: AmiMessage) -> ActionReply:
        entered.set()
        await release.wait()
        server.publish("OriginateResponse", "call", [("ActionID", action.action_id)])
        return ActionReply.success("Originate successfully queued")

    server.register_action("Originate", sync_originate, privilege="originate,call")
    port = await start(server)
    blocked = await login(port)
    other = await login(port)
    await blocked.send(
        b"Action: Originate\r\nActionID: o1\r\nAsync: false\r\n\r\nAction: Ping\r\n\r\n"
    )
    await asyncio.wait_for(entered.wait(), IO_TIMEOUT)
    server.publish("Newchannel", "call", [("Channel", "PJSIP/1001-00000001")])
    await other.expect(event("Newchannel", "call", ("Channel", "PJSIP/1001-00000001")))
    release.set()
    await blocked.expect(
        b"Response: Success\r\nActionID: o1\r\nMessage: Originate successfully queued\r\n\r\n"
        + event("Newchannel", "call", ("Channel", "PJSIP/1001-00000001"))
        + event("OriginateResponse", "call", ("ActionID", "o1"))
        + b"Response: Success\r\nPing: Pong\r\nTimestamp: "
    )
    await blocked.close()
    await other.close()


async def test_list_is_never_interleaved_with_events(make_server: Factory) -> None:
    server = make_server()

    async def listing(session: AmiSession, action: AmiMessage) -> ActionReply:
        server.publish("Newchannel", "call", [])
        return ActionReply.event_list_reply(
            action_id=action.action_id,
            message="Things will follow",
            items=[[("Event", "Thing"), ("N", "1"), *([("ActionID", action.action_id)])]],
            complete_event="ThingsComplete",
            complete_headers=[("Extra", "x")],
        )

    server.register_action("Things", listing)
    port = await start(server)
    client = await login(port)
    await client.send(b"Action: Things\r\nActionID: t\r\n\r\n")
    await client.expect(
        b"Response: Success\r\nActionID: t\r\nEventList: start\r\n"
        b"Message: Things will follow\r\n\r\n"
        b"Event: Thing\r\nN: 1\r\nActionID: t\r\n\r\n"
        b"Event: ThingsComplete\r\nActionID: t\r\nEventList: Complete\r\nListItems: 1\r\n"
        b"Extra: x\r\n\r\n" + event("Newchannel", "call")
    )
    await client.close()


async def test_permission_and_failing_handler(make_server: Factory) -> None:
    server = make_server(users={"ro": AmiUser(secret="s3cret", write="reporting")})

    async def boom(session: AmiSession, action: AmiMessage) -> ActionReply:
        raise RuntimeError("bug in the PBX core")

    server.register_action("Boom", boom)
    server.register_action("Hangup", boom, privilege="system,call")
    with pytest.raises(ValueError):
        server.register_action("boom", boom)
    port = await start(server)
    client = await login(port, user="ro")
    await client.send(
        b"Action: Hangup\r\n\r\nAction: Boom\r\n\r\nAction: Command\r\nCommand: x\r\n\r\n"
    )
    await client.expect(
        b"Response: Error\r\nMessage: Permission denied\r\n\r\n"
        b"Response: Error\r\nMessage: Internal Error. Action handler failed\r\n\r\n"
        b"Response: Error\r\nMessage: Permission denied\r\n\r\n"
    )
    await client.send(b"Action: ListCommands\r\n\r\n")
    listing = await client.message()
    assert listing.startswith(b"Response: Success\r\nBoom:  (Priv: <none>)\r\nChallenge: ")
    assert b"Hangup" not in listing and b"Command:" not in listing
    assert b"Ping: Keepalive command. (Priv: <none>)\r\n" in listing
    await client.close()


# --------------------------------------------------------------------------- slow consumers


async def test_client_that_stops_reading_is_disconnected(make_server: Factory) -> None:
    server = make_server(write_timeout=0.2)
    port = await start(server)
    stalled = await Client.connect(port, rcvbuf=4096)
    await stalled.expect(BANNER)
    await stalled.send(b"Action: Login\r\nUsername: callcenter\r\nSecret: s3cret\r\n\r\n")
    await stalled.expect(ACCEPTED)
    healthy = await login(port)
    payload = [("Data", "x" * 1000)]
    sentinel = event("Sentinel", "user")
    received = bytearray()

    async def drain_healthy() -> None:
        while not received.endswith(sentinel):
            chunk = await healthy.reader.read(65536)
            assert chunk, "the healthy session was closed"
            received.extend(chunk)

    reader_task = asyncio.create_task(drain_healthy())
    sent = 0
    async with asyncio.timeout(30):
        while len(server.sessions) == 2:
            for _ in range(50):
                server.publish("UserEvent", "user", payload)
                sent += 1
            await asyncio.sleep(0.001)
    healthy_port = healthy.writer.get_extra_info("sockname")[1]
    assert [s.peer[1] for s in server.sessions] == [healthy_port]
    server.publish("Sentinel", "user", [])
    await asyncio.wait_for(reader_task, IO_TIMEOUT)
    # the session that kept reading lost nothing
    assert len(received) == sent * len(event("UserEvent", "user", *payload)) + len(sentinel)
    await stalled.close()
    await healthy.close()


async def test_events_piling_up_during_a_blocked_action_are_bounded(make_server: Factory) -> None:
    server = make_server(max_pending_event_bytes=10_000)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def block(session: AmiSession, action: AmiMessage) -> ActionReply:
        entered.set()
        await release.wait()
        return ActionReply.success()

    server.register_action("Block", block)
    port = await start(server)
    client = await login(port)
    await client.send(b"Action: Block\r\n\r\n")
    await asyncio.wait_for(entered.wait(), IO_TIMEOUT)
    for _ in range(9):
        server.publish("UserEvent", "user", [("Data", "x" * 1000)])
    assert len(server.sessions) == 1
    for _ in range(2):
        server.publish("UserEvent", "user", [("Data", "x" * 1000)])
    assert len(server.sessions) == 0
    release.set()
    await client.expect_closed()


# --------------------------------------------------------------------------- Command


async def test_command_variants(make_server: Factory) -> None:
    server = make_server()
    seen: list[list[str]] = []

    async def show(args: Sequence[str]) -> CliResult:
        seen.append(list(args))
        return CliResult("\x1b[1;32mgreen\x1b[0m line\n\nlast\n")

    async def usage(args: Sequence[str]) -> CliResult:
        return CliResult(status="showusage")

    async def fails(args: Sequence[str]) -> CliResult:
        return CliResult("partial\n", status="failure")

    async def silent(args: Sequence[str]) -> CliResult:
        return CliResult("")

    server.register_cli("core show thing", show)
    server.register_cli("needs args", usage, usage="Usage: needs args <x>\n")
    server.register_cli("broken cmd", fails)
    server.register_cli("be quiet", silent)
    port = await start(server)
    client = await login(port)

    async def command(text: str) -> bytes:
        await client.send(f"Action: Command\r\nCommand: {text}\r\n\r\n".encode())
        return await client.message()

    ok = b"Response: Success\r\nMessage: Command output follows\r\n"
    err = b"Response: Error\r\nMessage: Command output follows\r\n"
    assert await command('CORE show thing "a b" c\\ d') == (
        ok + b"Output: green line\r\nOutput: \r\nOutput: last\r\n\r\n"
    )
    assert seen == [["a b", "c d"]]
    assert await command("needs args") == err + b"Output: Usage: needs args <x>\r\n\r\n"
    assert await command("broken cmd") == (
        err + b"Output: partial\r\nOutput: Command 'broken cmd' failed.\r\n\r\n"
    )
    assert await command("be quiet") == ok + b"Output: \r\n\r\n"
    assert await command("core show nothing") == (
        err + b"Output: No such command 'core show nothing' (type 'core show help core show' "
        b"for other possible commands)\r\n\r\n"
    )
    assert await command("Module  load x.so") == (
        b"Response: Error\r\nMessage: Command blacklisted\r\n\r\n"
    )
    await client.send(b"Action: Command\r\n\r\n")
    assert await client.message() == b"Response: Error\r\nMessage: No command provided\r\n\r\n"
    await client.close()


# --------------------------------------------------------------------------- shutdown


async def test_shutdown_uncleanly_and_close_without_event(make_server: Factory) -> None:
    server = make_server()
    port = await start(server)
    client = await login(port)
    idle = await Client.connect(port)
    await idle.expect(BANNER)
    await server.shutdown(restart=False, cleanly=False)
    await client.expect(
        event("Shutdown", "system", ("Shutdown", "Uncleanly"), ("Restart", "False"))
    )
    await client.expect_eof()
    await idle.expect_eof()

    crash = make_server()
    port = await start(crash)
    client = await login(port)
    await crash.close()
    await client.expect_closed()


# --------------------------------------------------------------------------- pure helpers


def test_escape_c_and_encoding() -> None:
    assert escape_c('Jo "JJ"\r\nSmith?\\\t') == 'Jo \\"JJ\\"\\r\\nSmith\\?\\\\\\t'
    assert escape_c("plain 中文") == "plain 中文"
    assert encode_message([("AccountCode", "")]) == b"AccountCode: \r\n\r\n"
    with pytest.raises(ValueError):
        encode_message([("CallerIDName", "a\nb")])


def test_framer_nul_ends_the_line_and_cr_inside_a_line_is_kept() -> None:
    framer = RequestFramer()
    framer.feed(b"Action: Ping\x00garbage\r\nActionID: a\rb\r\n\x00ignored\r\n")
    request = framer.next_request()
    assert request is not None and request.kind == "ok"
    assert request.headers == (("Action", "Ping"), ("ActionID", "a\rb"))
    assert framer.next_request() is None


def test_masks_and_permissions() -> None:
    assert strings_to_mask("") == -1
    assert strings_to_mask("4294967295") == -1  # atoi of a huge value truncated to a C int
    assert strings_to_mask("yes") == strings_to_mask("on") == 0x7FFFFFFF
    assert get_perm("system,call") == 0b11
    assert get_perm("c,") == get_perm("call,command,config,cdr,cc") | 0  # prefix tokens
    assert get_perm("Call") == 0  # class names are case-sensitive


def test_parse_filter_and_cli_args() -> None:
    f = parse_filter("eventfilter(name(VarSet),header(Channel),method(exact))", "!ZZZ")
    assert f.exclude and f.method == "exact" and f.header == "Channel:" and f.pattern == "ZZZ"
    assert f.matches("VarSet", "Event: VarSet\r\nChannel: ZZZ\r\n\r\n")
    assert not f.matches("Hangup", "Event: Hangup\r\nChannel: ZZZ\r\n\r\n")
    g = parse_filter("eventfilter", "Channel: [[:alpha:]]+/[[:digit:]]+")
    assert g.matches("X", "Event: X\r\nChannel: PJSIP/1001\r\n\r\n")
    assert parse_cli_args('  a\t"b c"  d\\"e ') == ["a", "b c", 'd"e']


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=4000).map(
        lambda b: b.replace(b"x", b"\r\n").replace(b"y", b"\n").replace(b"z", b"Action: Ping")
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
)
def test_framer_result_does_not_depend_on_how_bytes_arrive(data: bytes, cuts: list[int]) -> None:
    whole = RequestFramer()
    whole.feed(data)
    expected = []
    while (request := whole.next_request()) is not None:
        expected.append(request)
    chunked = RequestFramer()
    got = []
    last = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        chunked.feed(data[last:cut])
        last = cut
        while (request := chunked.next_request()) is not None:
            got.append(request)
        assert chunked.pending_bytes < 1024 + len(data)  # never more than what was fed
        assert all(len(h) <= 128 for h in (r.headers for r in got))
    assert got == expected


async def test_garbage_without_line_ends_is_discarded_not_buffered(make_server: Factory) -> None:
    port = await start(make_server())
    client = await Client.connect(port)
    await client.expect(BANNER)
    garbage = bytes(b for b in range(256) if b not in (0x0A, 0x0D)) * 800  # ~200 KB, no LF
    await client.send(garbage + b"\r\n\r\nAction: Logoff\r\n\r\n")
    await client.expect(
        b"Response: Error\r\nMessage: Failed to parse message: line too long\r\n\r\n"
    )
    await client.expect(b"Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n")
    await client.expect_eof()
