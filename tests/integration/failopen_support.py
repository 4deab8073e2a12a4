"""Helpers for the fail-open tests: a TCP proxy that refuses, then forwards; the app with the
emulator and a clock inside business hours."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from callcenter.app import CALL_TRACKER, PIPELINE, create_app
from callcenter.config import Settings
from callcenter.db.availability import Backoff
from callcenter.demo import emulator_config, open_moment
from callcenter.ivr.loader import load_calendar
from callcenter.pbxsim.callers import CallerModel, KeyPlan
from callcenter.pbxsim.emulator import CallSummary, Emulator
from callcenter.pbxsim.pbx import RealClock
from callcenter.pbxsim.queues import AgentProfile

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "ivr_flows"
SPEED = 50.0
AGENT = "PJSIP/1001"
FAST_RETRY = Backoff(initial=0.05, maximum=0.2)


class SwitchProxy:
    """A TCP port on 127.0.0.1 that refuses connections (bound, not listening: the kernel
    answers RST) until `open()`; then it forwards each connection to `target`. `cut()` drops
    every forwarded connection and goes back to refusing new ones (accept, then reset)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._server: asyncio.Server | None = None
        self._forwarding = False
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0

    async def open(self) -> None:
        self._forwarding = True
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, sock=self._sock)

    def cut(self) -> None:
        self._forwarding = False
        for writer in tuple(self._links):
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        else:
            self._sock.close()
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if not self._forwarding:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._tasks.discard(task)
            self._links.difference_update((writer, up_writer))
            for w in (writer, up_writer):
                w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


def closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_app(settings: Settings, emulators: list[Emulator]) -> web.Application:
    """The real app with the emulator (one agent answers everything), inside business hours."""
    start = open_moment(
        load_calendar(FLOWS / "calendar.yaml"), datetime.now(UTC), ZoneInfo(settings.timezone)
    )
    clock = RealClock(speed=SPEED, start=start.timestamp())

    def factory(host: str, port: int) -> Emulator:
        cfg = emulator_config(settings, agi_host=host, agi_port=port, speed=SPEED, seed=11)
        cfg.tts = False
        cfg.recordings_dir = None
        cfg.members = {q.name: [AGENT] for q in cfg.queues}
        cfg.agents = [AgentProfile(AGENT, "Alice", forced="answer", answer_delay=(0.5, 0.5))]
        emu = Emulator(config=cfg, clock=clock)
        emulators.append(emu)
        return emu

    return create_app(
        settings,
        emulator=factory,
        clock=lambda: datetime.fromtimestamp(clock.time(), UTC),
        db_retry=FAST_RETRY,
    )


def settings_for(database_url: str, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        database_url=database_url,
        flows_dir=FLOWS,
        recordings_dir=tmp_path / "recordings",
        data_dir=tmp_path / "data",
        agi_port=0,
        ami_secret="test-secret",
        timezone="Asia/Shanghai",
        **extra,
    )


async def call(app: web.Application, emu: Emulator, number: str, *keys: str) -> CallSummary:
    """One inbound call pressing `keys`, run to its end; the pipeline has handled its events."""
    caller = CallerModel(
        number=number,
        name="张三",
        language="zh",
        keys=[KeyPlan(k, delay=0.2) for k in keys],
        talk_limit=5.0,
    )
    summary = await emu.inbound_call(caller)
    await emu_settled(app)
    return summary


async def emu_settled(app: web.Application) -> None:
    # the AMI events of the call's end may still be on the wire: wait until the tracker let go
    async with asyncio.timeout(30):
        while app[PIPELINE].pending or _active(app):
            await app[PIPELINE].drain()
            await asyncio.sleep(0.02)
        await app[PIPELINE].drain()


def _active(app: web.Application) -> bool:
    return bool(app[CALL_TRACKER].active_calls())


async def until(check: Callable[[], bool]) -> None:
    """Until `check()` holds, looking again every 10 ms (at most 30 s)."""
    async with asyncio.timeout(30):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)
