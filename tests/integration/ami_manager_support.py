"""A fake Asterisk manager for the resync tests: it answers a session's actions one at a time
and writes the events queued meanwhile between two replies, as Asterisk does."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from callcenter.asterisk.ami import AmiClient
from callcenter.asterisk.events import SUBSCRIBED_EVENTS, is_tracked_variable
from callcenter.asterisk.message import AmiMessage
from callcenter.pipeline import EventPipeline

BANNER = b"Asterisk Call Manager/9.0.0\r\n"


def frame(*headers: tuple[str, str]) -> bytes:
    return AmiMessage(headers).to_bytes()


def listed_channel(aid: str, uniqueid: str, linkedid: str) -> bytes:
    return frame(
        ("Event", "CoreShowChannel"),
        ("ActionID", aid),
        ("Channel", f"PJSIP/trunk-{uniqueid[-1]:0>8}"),
        ("ChannelState", "6"),
        ("ChannelStateDesc", "Up"),
        ("CallerIDNum", "13800138000"),
        ("CallerIDName", ""),
        ("Context", "from-trunk"),
        ("Exten", "100"),
        ("Priority", "1"),
        ("Uniqueid", uniqueid),
        ("Linkedid", linkedid),
        ("Application", "Queue"),
        ("ApplicationData", "support"),
        ("Duration", "00:02:00"),
        ("BridgeId", ""),
    )


def list_reply(aid: str, complete: str, items: Sequence[bytes] = ()) -> bytes:
    return (
        frame(("Response", "Success"), ("ActionID", aid), ("EventList", "start"))
        + b"".join(items)
        + frame(
            ("Event", complete),
            ("ActionID", aid),
            ("EventList", "Complete"),
            ("ListItems", str(len(items))),
        )
    )


@dataclass
class Manager:
    """Asterisk's manager session as far as the resync goes. `listed`: (Uniqueid, Linkedid)
    of the channels up when CoreShowChannels runs; `after_channels` is written right after
    its list (a call starting meanwhile)."""

    listed: list[tuple[str, str]] = field(default_factory=list)
    after_channels: bytes = b""
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def push(self, data: bytes) -> None:
        self.writers[-1].write(data)
        await self.writers[-1].drain()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(BANNER)
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                fields = dict(line.split(": ", 1) for line in raw.decode().split("\r\n") if line)
                aid = fields.get("ActionID", "")
                action = fields["Action"]
                if action == "CoreShowChannels":
                    items = [listed_channel(aid, u, linked) for u, linked in self.listed]
                    writer.write(list_reply(aid, "CoreShowChannelsComplete", items))
                    writer.write(self.after_channels)
                elif action == "QueueStatus":
                    writer.write(list_reply(aid, "QueueStatusComplete"))
                else:
                    writer.write(frame(("Response", "Success"), ("ActionID", aid)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def client_for(pipeline: EventPipeline, port: int) -> tuple[AmiClient, asyncio.Event]:
    """An AMI client feeding `pipeline`, as `callcenter serve` wires it, and an event set once
    a login's whole resync (its queue stage) has been handed to the pipeline."""
    resynced = asyncio.Event()

    async def on_resync(snapshot: object) -> None:
        await pipeline.resync(snapshot)  # type: ignore[arg-type]
        if getattr(snapshot, "stage", "queues") == "queues":
            resynced.set()

    client = AmiClient(
        host="127.0.0.1",
        port=port,
        username="u",
        secret="s",
        on_message=pipeline.feed,
        on_messages=pipeline.feed_many,
        on_resync=on_resync,
        only_events=SUBSCRIBED_EVENTS,
        only_variables=is_tracked_variable,
        ping_interval=60.0,
    )
    return client, resynced
