"""AmiClient against the project's Asterisk emulator (callcenter.pbxsim) over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from ami_client_support import Recorder

from callcenter.asterisk.ami import AmiClient, ResyncSnapshot
from callcenter.asterisk.errors import AmiActionError, AmiConnectionLost
from callcenter.pbxsim.callers import CallerModel
from callcenter.pbxsim.emulator import Emulator, EmulatorConfig
from callcenter.pbxsim.queues import AgentProfile, QueueConfig


async def ivr(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\n\n")
        writer.write(b"SET VARIABLE IVR_QUEUE support\n")
        await reader.readline()
    finally:
        writer.close()


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    agi = await asyncio.start_server(ivr, "127.0.0.1", 0)
    cfg = EmulatorConfig(
        agi_port=agi.sockets[0].getsockname()[1],
        ami_users={"callcenter": "s3cret"},
        queues=[QueueConfig("support"), QueueConfig("general")],
        agents=[
            AgentProfile(
                "PJSIP/1001", "Alice", answer_delay=(1, 1), talk_time=(2, 2), forced="answer"
            )
        ],
        speed=100.0,
    )
    emu = Emulator(config=cfg)
    await emu.start()
    yield emu
    await emu.stop()
    agi.close()
    await agi.wait_closed()


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[tuple[AmiClient, Recorder]]:
    seen = Recorder(wait_limit=10.0)
    host, port = emulator.ami_address
    c = AmiClient(
        host=host,
        port=port,
        username="callcenter",
        secret="s3cret",
        on_message=seen.on_message,
        on_resync=seen.on_resync,
        on_disconnected=seen.on_disconnected,
        reconnect_min=0.05,
        reconnect_max=0.2,
        ping_interval=0.2,
    )
    await c.start()
    yield c, seen
    await c.close()


async def test_login_and_resync_against_emulator(client: tuple[AmiClient, Recorder]) -> None:
    c, seen = client
    assert c.connected and c.ami_version is not None
    await seen.wait_for(lambda: any(k == "resync" for k, _ in seen.log))
    snap = next(x for k, x in seen.log if k == "resync")
    assert isinstance(snap, ResyncSnapshot)
    assert snap.channels == ()
    members = [
        (m.get("Queue"), m.get("Location")) for m in snap.queue_status if m.name == "QueueMember"
    ]
    assert sorted(members) == [("general", "PJSIP/1001"), ("support", "PJSIP/1001")]
    assert seen.events("FullyBooted")


async def test_inbound_call_events_arrive_in_order_with_chinese_name(
    emulator: Emulator, client: tuple[AmiClient, Recorder]
) -> None:
    c, seen = client
    summary = await emulator.inbound_call(CallerModel(number="13800138000", name="张三"))
    assert summary.outcome == "answered"
    await seen.wait_for(lambda: bool(seen.events("Cdr")))
    mine = [m for m in seen.events() if m.get("Linkedid") == summary.uniqueid]
    names = [m.name for m in mine]
    assert names[0] == "Newchannel"
    assert (
        names.index("QueueCallerJoin") < names.index("AgentConnect") < names.index("AgentComplete")
    )
    assert {m.get("CallerIDName") for m in mine if m.get("Uniqueid") == summary.uniqueid} == {
        "张三"
    }
    assert c.stats().frame_errors == 0 and c.stats().decode_errors == 0


async def test_originate_and_queue_actions(client: tuple[AmiClient, Recorder]) -> None:
    c, _ = client
    result = await c.originate(
        channel="PJSIP/1001", application="Playback", data="hello-world", caller_id='"回拨" <100>'
    )
    assert result.success and result.reason == 4
    assert result.channel.startswith("PJSIP/1001-")
    reply = await c.queue_pause("PJSIP/1001", "support", True, "lunch")
    assert reply.get("Message") == "Interface paused successfully"
    with pytest.raises(AmiActionError, match="No such queue"):
        await c.queue_add("PJSIP/1002", "nope")
    assert (await c.command("core show version"))[0].startswith("Asterisk")
    items = await c.send_list_action("QueueStatus", {"Queue": "support"})
    member = next(m for m in items if m.name == "QueueMember")
    assert member.get("Paused") == "1" and member.get("PausedReason") == "lunch"


async def test_shutdown_event_then_reconnecting(
    emulator: Emulator, client: tuple[AmiClient, Recorder]
) -> None:
    c, seen = client
    assert emulator.server is not None
    await emulator.server.shutdown(restart=True)
    await seen.wait_for(lambda: any(k == "disconnected" for k, _ in seen.log))
    assert seen.events("Shutdown")[0].get("Restart") == "True"
    reason = next(x for k, x in seen.log if k == "disconnected")
    assert isinstance(reason, AmiConnectionLost)
    assert not c.connected and c.state in ("reconnecting", "connecting")
