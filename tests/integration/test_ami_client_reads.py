"""AmiClient receive path: bounded reads on asyncio and uvloop, its flow control, and repeated
`ChanVariable` headers from the emulator's channelvars kept as lists."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from ami_client_support import Recorder

from callcenter.asterisk.ami import READ_BUFFER, AmiClient, _AmiProtocol
from callcenter.asterisk.message import AmiMessage
from callcenter.pbxsim.callers import CallerModel
from callcenter.pbxsim.emulator import Emulator, EmulatorConfig
from callcenter.pbxsim.queues import AgentProfile, QueueConfig

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
EVENTS = 20_000  # ~3.5 MB: far more than one read, on any loop


def burst() -> bytes:
    return b"".join(
        AmiMessage(
            (
                ("Event", "VarSet"),
                ("Privilege", "dialplan,all"),
                ("Channel", f"PJSIP/trunk-{i:08x}"),
                ("CallerIDName", "张三"),
                ("Variable", "IVR_CHOICE"),
                ("Value", str(i)),
                ("Uniqueid", f"1715681702.{i}"),
                ("Linkedid", f"1715681702.{i}"),
            )
        ).to_bytes()
        for i in range(EVENTS)
    )


async def blasting_manager(data: bytes) -> asyncio.Server:
    """Login, empty resync lists, then `data` in one write."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER)
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                fields = dict(line.split(": ", 1) for line in raw.decode().split("\r\n") if line)
                aid = ("ActionID", fields.get("ActionID", ""))
                action = fields["Action"]
                if action in ("CoreShowChannels", "QueueStatus"):
                    writer.write(
                        AmiMessage(
                            (("Response", "Success"), aid, ("EventList", "start"))
                        ).to_bytes()
                        + AmiMessage(
                            (
                                ("Event", f"{action}Complete"),
                                aid,
                                ("EventList", "Complete"),
                                ("ListItems", "0"),
                            )
                        ).to_bytes()
                    )
                    if action == "QueueStatus":
                        writer.write(data)
                else:
                    writer.write(AmiMessage((("Response", "Success"), aid)).to_bytes())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(session, "127.0.0.1", 0)


async def bytes_parsed_per_loop_iteration() -> list[int]:
    """Run a client through the burst; the bytes its protocol parsed in each iteration of the
    event loop (a `call_soon` ticker marks them) that parsed any."""
    loop = asyncio.get_running_loop()
    server = await blasting_manager(burst())
    port = server.sockets[0].getsockname()[1]
    received = 0
    done = asyncio.Event()
    fed = 0
    per_iteration: list[int] = []
    ticking = True

    async def on_message(msg: AmiMessage) -> None:
        nonlocal received
        assert msg.get("Value") == str(received)  # in order, none lost, 张三 intact
        assert msg.get("CallerIDName") == "张三"
        received += 1
        if received == EVENTS:
            done.set()

    class Counting(_AmiProtocol):
        def data_received(self, data: bytes | memoryview) -> None:
            nonlocal fed
            fed += len(data)
            super().data_received(data)

    def tick() -> None:
        nonlocal fed
        if fed:
            per_iteration.append(fed)
        fed = 0
        if ticking:
            loop.call_soon(tick)

    client = AmiClient(
        host="127.0.0.1",
        port=port,
        username="u",
        secret="s",
        on_message=on_message,
        ping_interval=60.0,
    )
    client._new_protocol = lambda: Counting(  # type: ignore[method-assign]
        framer=client._framer, deliver=client._deliver
    )
    tick()
    try:
        await client.start()
        await asyncio.wait_for(done.wait(), 30)
    finally:
        ticking = False
        await client.close()
        server.close()
        await server.wait_closed()
    return per_iteration


def run_on(loop_name: str, coro: Callable[[], Coroutine[Any, Any, list[int]]]) -> list[int]:
    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro())


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_reads_are_bounded_per_loop_iteration(loop_name: str) -> None:
    # uvloop feeds an asyncio.Protocol up to 256 KB per call and libuv reads up to 32 times
    # per readiness callback; the client must still parse one buffer per loop iteration.
    per_iteration = run_on(loop_name, bytes_parsed_per_loop_iteration)
    assert sum(per_iteration) > EVENTS * 100
    assert max(per_iteration) <= 2 * READ_BUFFER  # the iteration that shows a burst
    assert sum(n > READ_BUFFER for n in per_iteration) <= 1


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def close(self) -> None:
        return None


async def spin() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def full_read(proto: _AmiProtocol) -> None:
    buf = proto.get_buffer(-1)
    chunk = (b"Event: Ping\r\nPrivilege: system,all\r\n\r\n" * (READ_BUFFER // 37 + 1))[
        :READ_BUFFER
    ]
    buf[:READ_BUFFER] = chunk
    proto.buffer_updated(READ_BUFFER)


def new_protocol() -> tuple[AmiClient, _AmiProtocol, RecordingTransport]:
    client = AmiClient(host="h", port=1, username="u", secret="s", on_message=Recorder().on_message)
    proto = client._new_protocol()
    transport = RecordingTransport()
    proto.connection_made(transport)
    return client, proto, transport


async def test_one_read_per_iteration_costs_no_pause_and_bursts_are_cut() -> None:
    client, proto, transport = new_protocol()
    buf = proto.get_buffer(-1)
    buf[:13] = b"Event: Ping\r\n"
    proto.buffer_updated(13)  # a short read: the socket is drained
    full_read(proto)  # one full read per loop iteration (asyncio): nothing to cut
    await spin()
    full_read(proto)
    await spin()
    assert transport.calls == []
    full_read(proto)
    full_read(proto)  # a second one in the same iteration (libuv): pause until the next
    assert transport.calls == ["pause"]
    await spin()
    assert transport.calls == ["pause", "resume"]
    full_read(proto)  # a bursty transport: from now on every full read waits for the loop
    assert transport.calls == ["pause", "resume", "pause"]
    await spin()
    assert transport.calls == ["pause", "resume", "pause", "resume"]
    assert client.stats().queued > 0  # every read was parsed and queued


async def test_yield_does_not_resume_reading_held_by_a_slow_consumer() -> None:
    _, proto, transport = new_protocol()
    full_read(proto)
    full_read(proto)
    assert transport.calls == ["pause"]
    proto.hold_reading()  # the consumer fell behind
    await spin()
    assert transport.calls == ["pause"]  # still held: the next iteration must not resume
    full_read(proto)  # (a read already in flight) no second pause
    proto.release_reading()
    assert transport.calls == ["pause"]  # that read's pause lasts until the next iteration
    await spin()
    assert transport.calls == ["pause", "resume"]


async def test_chanvariable_headers_reach_the_consumer_as_lists() -> None:
    async def ivr(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\n\n")
            writer.write(b"SET VARIABLE IVR_QUEUE support\n")
            await reader.readline()
        finally:
            writer.close()

    agi = await asyncio.start_server(ivr, "127.0.0.1", 0)
    cfg = EmulatorConfig(
        agi_port=agi.sockets[0].getsockname()[1],
        ami_users={"callcenter": "s3cret"},
        queues=[QueueConfig("support")],
        agents=[AgentProfile("PJSIP/1001", "Alice", talk_time=(2, 2), forced="answer")],
        speed=100.0,
        channelvars=("IVR_QUEUE", "CALLERID(name)", "UNSET"),
    )
    seen = Recorder(wait_limit=10.0)
    try:
        async with Emulator(config=cfg) as emu:
            client = AmiClient(
                host=emu.ami_address[0],
                port=emu.ami_address[1],
                username="callcenter",
                secret="s3cret",
                auth="md5",
                on_message=seen.on_message,
            )
            await client.start()
            try:
                summary = await emu.inbound_call(CallerModel(number="13800138000", name="张三"))
                await seen.wait_for(lambda: bool(seen.events("Cdr")))
            finally:
                await client.close()
    finally:
        agi.close()
        await agi.wait_closed()
    mine = [m for m in seen.events() if m.get("Uniqueid") == summary.uniqueid]
    assert mine[0].name == "Newchannel"
    assert mine[0].get_all("ChanVariable") == ["IVR_QUEUE=", "CALLERID(name)=张三", "UNSET="]
    hangup = next(m for m in mine if m.name == "Hangup")
    assert hangup.get_all("ChanVariable") == [
        "IVR_QUEUE=support",
        "CALLERID(name)=张三",
        "UNSET=",
    ]
    dial = next(m for m in seen.events("DialBegin") if m.get("Uniqueid") == summary.uniqueid)
    assert len(dial.get_all("ChanVariable")) == 3
    assert dial.get_all("DestChanVariable") == ["IVR_QUEUE=", "CALLERID(name)=", "UNSET="]
