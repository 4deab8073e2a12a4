"""The whole path (FastAGI server, AMI client, call tracker, call log on SQLite and PostgreSQL,
against the emulator) with the AMI link cut while an agent talks to a caller. The link runs
through a proxy that drops it and refuses new connections until it is opened again, so the
call can end before or after the client is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from failopen_support import AGENT, SwitchProxy, emu_settled, make_app, settings_for, until

from callcenter.app import AMI, CALL_TRACKER, PIPELINE
from callcenter.calls.model import CallRecord
from callcenter.calls.repository import CallRepository
from callcenter.db.engine import create_engine, create_session_factory
from callcenter.pbxsim.callers import CallerModel, KeyPlan
from callcenter.pbxsim.emulator import CallSummary, Emulator


@pytest.fixture
async def ami_proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[SwitchProxy]]:
    """Every emulator started in the test is reached over AMI through a `SwitchProxy`."""
    proxies: list[SwitchProxy] = []
    start = Emulator.start

    async def start_behind_proxy(self: Emulator) -> tuple[str, int]:
        proxy = SwitchProxy(await start(self))
        proxies.append(proxy)
        await proxy.open()
        return "127.0.0.1", proxy.port

    monkeypatch.setattr(Emulator, "start", start_behind_proxy)
    try:
        yield proxies
    finally:
        for proxy in proxies:
            await proxy.close()


async def _talking(app: Any, emu: Emulator) -> tuple[CallRecord, asyncio.Task[CallSummary]]:
    """An inbound call (complaints, from the main menu) answered by the agent and still up."""
    caller = CallerModel(
        number="13800138000",
        name="张三",
        language="zh",
        keys=[KeyPlan(k, delay=0.2) for k in ("1", "2")],
        talk_limit=600.0,  # the test hangs up
    )
    call = asyncio.create_task(emu.inbound_call(caller))

    def answered() -> list[CallRecord]:
        return [c for c in app[CALL_TRACKER].active_calls() if c.answered_at]

    await until(lambda: bool(answered()))
    return answered()[0], call


async def _hang_up(emu: Emulator, channel: str) -> None:
    """The caller hangs up; returns once the emulator's channel is gone."""
    assert emu.hangup(channel)
    await until(lambda: channel not in emu.pbx.channels)


async def _stored(db_url: str, uniqueid: str) -> CallRecord:
    engine = create_engine(db_url)
    try:
        record = await CallRepository(session_factory=create_session_factory(engine)).get_call(
            uniqueid
        )
    finally:
        await engine.dispose()
    assert record is not None
    return record


async def _a_talking_call(
    db_url: str, tmp_path: Path, aiohttp_client: Any, proxies: list[SwitchProxy]
) -> tuple[Any, Emulator, SwitchProxy, CallRecord, asyncio.Task[CallSummary]]:
    """The app (reconnecting within 0.2 s) with a call in progress: (app, emulator, the AMI
    proxy, the call as the tracker has it, the caller's task)."""
    emulators: list[Emulator] = []
    settings = settings_for(db_url, tmp_path, ami_reconnect_min=0.05, ami_reconnect_max=0.2)
    app = make_app(settings, emulators)
    await aiohttp_client(app)
    async with asyncio.timeout(30):
        await app[PIPELINE].wait_sweeps(1)
    emu = emulators[0]
    live, call = await _talking(app, emu)
    return app, emu, proxies[0], live, call


def _assert_kept(stored: CallRecord, live: CallRecord) -> None:
    """What the tracker knew of the call before the cut is in the stored record."""
    assert not stored.abandoned
    assert (stored.queue, stored.agent_interface) == (live.queue, AGENT)
    assert stored.agent and stored.agent == live.agent
    assert stored.answered_at == live.answered_at and stored.wait_seconds == live.wait_seconds
    assert stored.ivr_path == live.ivr_path and stored.ivr_path
    assert stored.ended_at is not None and stored.answered_at is not None
    assert stored.ended_at > stored.answered_at


async def test_a_call_still_up_when_the_link_is_back_is_logged_whole(
    db_url: str, tmp_path: Path, aiohttp_client: Any, ami_proxy: list[SwitchProxy]
) -> None:
    app, emu, proxy, live, call = await _a_talking_call(db_url, tmp_path, aiohttp_client, ami_proxy)
    pipeline = app[PIPELINE]

    proxy.cut()
    await until(lambda: not app[AMI].connected)  # the client has seen the link drop
    await proxy.open()
    async with asyncio.timeout(30):
        await pipeline.wait_sweeps(2)  # logged in again, channel list resynced
    assert [c.uniqueid for c in app[CALL_TRACKER].active_calls()] == [live.uniqueid]

    await _hang_up(emu, live.channel)
    await call
    await emu_settled(app)
    stored = await _stored(db_url, live.uniqueid)
    assert stored.end_reason == "completed" and stored.hangup_cause == 16
    _assert_kept(stored, live)
    assert stored.talk_seconds is not None and stored.talk_seconds > 0
    assert pipeline.stats.swept == 0


async def test_a_call_that_ended_while_the_link_was_down_is_closed_with_the_reason(
    db_url: str, tmp_path: Path, aiohttp_client: Any, ami_proxy: list[SwitchProxy]
) -> None:
    app, emu, proxy, live, call = await _a_talking_call(db_url, tmp_path, aiohttp_client, ami_proxy)

    proxy.cut()
    await _hang_up(emu, live.channel)  # its Hangup events are lost with the link
    await call
    assert [c.uniqueid for c in app[CALL_TRACKER].active_calls()] == [live.uniqueid]
    await proxy.open()
    async with asyncio.timeout(30):
        await app[PIPELINE].wait_sweeps(2)
    await emu_settled(app)

    assert app[CALL_TRACKER].active_calls() == []
    stored = await _stored(db_url, live.uniqueid)
    assert stored.end_reason == "ended_while_disconnected"
    _assert_kept(stored, live)
