"""What the AMI client tests share: a recorder of everything the client's consumer delivered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from callcenter.asterisk.ami import ResyncSnapshot
from callcenter.asterisk.errors import AmiError
from callcenter.asterisk.message import AmiMessage


@dataclass
class Recorder:
    """Everything the client's sequential consumer delivered, in order."""

    log: list[tuple[str, object]] = field(default_factory=list)
    fail_on: str | None = None
    wait_limit: float = 5.0  # default for wait_for
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_message(self, msg: AmiMessage) -> None:
        self.log.append(("event", msg))
        self.changed.set()
        if self.fail_on is not None and msg.get("Seq") == self.fail_on:
            raise RuntimeError("consumer bug")

    async def on_resync(self, snap: ResyncSnapshot) -> None:
        # "channels": the channel part, at its own place in the stream; "resync": the whole
        # snapshot, after the queue part (one per login)
        self.log.append(("channels" if snap.stage == "channels" else "resync", snap))
        self.changed.set()

    async def on_connected(self) -> None:
        self.log.append(("connected", None))
        self.changed.set()

    async def on_disconnected(self, reason: AmiError) -> None:
        self.log.append(("disconnected", reason))
        self.changed.set()

    def kinds(self) -> list[str]:
        return [k for k, _ in self.log]

    def events(self, name: str | None = None) -> list[AmiMessage]:
        out = [m for k, m in self.log if k == "event" and isinstance(m, AmiMessage)]
        return [m for m in out if name is None or m.name == name]

    async def wait_for(self, pred: Callable[[], bool], limit: float | None = None) -> None:
        async with asyncio.timeout(self.wait_limit if limit is None else limit):
            while not pred():
                self.changed.clear()
                await self.changed.wait()
