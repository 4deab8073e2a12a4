"""Interop: panoramisk 1.4 (an independent AMI client) against the emulator's AMI server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from panoramisk import Manager

from callcenter.asterisk.message import AmiMessage
from callcenter.pbxsim.ami_server import ActionReply, AmiServer, AmiSession, AmiUser, CliResult


async def test_panoramisk_login_ping_command_list_and_events() -> None:
    server = AmiServer(users={"callcenter": AmiUser(secret="s3cret")})

    async def version(args: Sequence[str]) -> CliResult:
        return CliResult("Asterisk 20.5.0\nsecond line: with colon\n")

    async def queue_status(session: AmiSession, action: AmiMessage) -> ActionReply:
        item = [("Event", "QueueParams"), ("Queue", "support"), ("ActionID", action.action_id)]
        return ActionReply.event_list_reply(
            action_id=action.action_id,
            message="Queue status will follow",
            items=[item],
            complete_event="QueueStatusComplete",
        )

    server.register_cli("core show version", version)
    server.register_action("QueueStatus", queue_status, privilege="agent")
    host, port = await server.start()
    received: asyncio.Queue[object] = asyncio.Queue()
    manager = Manager(
        loop=asyncio.get_running_loop(),
        host=host,
        port=port,
        username="callcenter",
        secret="s3cret",
        ping_delay=3600,
    )

    async def on_newchannel(_: Manager, message: object) -> None:
        await received.put(message)

    manager.register_event("Newchannel", on_newchannel)
    try:
        await manager.connect()
        login = await asyncio.wait_for(manager.authenticated_future, 5)
        assert login.Message == "Authentication accepted"
        ping = await asyncio.wait_for(manager.send_action({"Action": "Ping"}), 5)
        assert ping.Ping == "Pong"
        output = await asyncio.wait_for(
            manager.send_action({"Action": "Command", "Command": "core show version"}), 5
        )
        assert output.Output == ["Asterisk 20.5.0", "second line: with colon"]
        listing = await asyncio.wait_for(manager.send_action({"Action": "QueueStatus"}), 5)
        assert [m.get("Event") for m in listing] == [None, "QueueParams", "QueueStatusComplete"]
        assert listing[-1].ListItems == "1"
        server.publish("Newchannel", "call", [("Channel", "PJSIP/trunk-00000001")])
        event = await asyncio.wait_for(received.get(), 5)
        assert event.Channel == "PJSIP/trunk-00000001"  # type: ignore[attr-defined]
        assert event.Privilege == "call,all"  # type: ignore[attr-defined]
    finally:
        manager.close()
        await server.close()
