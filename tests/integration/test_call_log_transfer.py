"""Transfers and agents' own calls through the whole stack: the app (create_app on SQLite) and
the emulator over real AMI/FastAGI sockets. An agent transfers a queue caller to an extension
(blind, or attended after a consultation call from the phone): the call log keeps one record,
the first agent's, whose talk time goes on with the transfer's target; the consultation and
agent-to-agent calls leave no record."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from ami_manager_support import client_for
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.agents.service import AgentStateTracker
from callcenter.app import PIPELINE, create_app
from callcenter.calls.model import CallRecord, Transfer
from callcenter.calls.repository import CallRepository
from callcenter.calls.service import CallTracker
from callcenter.config import Settings
from callcenter.db.models import CallRow
from callcenter.demo import emulator_config, open_moment
from callcenter.ivr.loader import load_calendar
from callcenter.pbxsim.callers import CallerModel, KeyPlan
from callcenter.pbxsim.emulator import Emulator
from callcenter.pbxsim.pbx import RealClock
from callcenter.pbxsim.queues import AgentProfile
from callcenter.pipeline import EventPipeline
from callcenter.web.keys import CALL_REPOSITORY

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "ivr_flows"
SPEED = 20.0
ALICE, BOB, CAROL = "PJSIP/1001", "PJSIP/1002", "PJSIP/1003"
BOB_TALK = 60.0  # simulated seconds Bob talks on any call
WAIT = 60  # real seconds any step may take on a loaded machine


@dataclass
class Live:
    app: Any
    emulators: list[Emulator]

    @property
    def emu(self) -> Emulator:
        return self.emulators[0]

    @property
    def calls(self) -> CallRepository:
        repo: CallRepository = self.app[CALL_REPOSITORY]
        return repo

    async def until(self, check: Callable[[], bool]) -> None:
        """Until `check()` holds, looking again each time the app has handled what came."""
        async with asyncio.timeout(WAIT):
            while True:
                await self.app[PIPELINE].drain()
                if check():
                    return
                await asyncio.sleep(0.01)

    def caller_task(self) -> asyncio.Task[Any]:
        caller = CallerModel(
            number="13800138000", name="张三", language="zh", keys=[KeyPlan("1"), KeyPlan("2")]
        )
        return self.emu.place_call(caller)

    async def talking(self, interface: str) -> None:
        """Until the phone at `interface` is in a bridge (talking)."""
        await self.until(
            lambda: any(
                ch.name.startswith(interface + "-") and ch.bridge_id
                for ch in self.emu.pbx.channels.values()
            )
        )

    async def until_logged(self, uniqueid: str) -> None:
        async with asyncio.timeout(WAIT):
            while await self.calls.get_call(uniqueid) is None:
                await self.app[PIPELINE].drain()
                await asyncio.sleep(0.02)

    async def ended(self, uniqueid: str) -> CallRecord:
        async with asyncio.timeout(WAIT):
            while True:
                await self.app[PIPELINE].drain()
                record = await self.calls.get_call(uniqueid)
                if record is not None and record.ended_at is not None:
                    return record
                await asyncio.sleep(0.02)


@pytest.fixture
async def live(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Live]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'cc.db'}",
        flows_dir=FLOWS,
        recordings_dir=tmp_path / "recordings",
        agi_port=0,
        ami_secret="test-secret",
        timezone="Asia/Shanghai",
    )
    start = open_moment(
        load_calendar(FLOWS / "calendar.yaml"), datetime.now(UTC), ZoneInfo("Asia/Shanghai")
    )
    clock = RealClock(speed=SPEED, start=start.timestamp())
    emulators: list[Emulator] = []

    def factory(host: str, port: int) -> Emulator:
        cfg = emulator_config(settings, agi_host=host, agi_port=port, speed=SPEED, seed=3)
        cfg.tts = False
        cfg.recordings_dir = None
        cfg.members = {q.name: [ALICE] for q in cfg.queues}  # Alice alone takes the queues
        fixed = (BOB_TALK, BOB_TALK)
        cfg.agents = [
            AgentProfile(
                ALICE, "Alice", forced="answer", answer_delay=(1, 1), talk_time=(900, 900)
            ),
            AgentProfile(BOB, "Bob", forced="answer", answer_delay=(2, 2), talk_time=fixed),
            AgentProfile(CAROL, "Carol", forced="noanswer"),
        ]
        emu = Emulator(config=cfg, clock=clock)
        emulators.append(emu)
        return emu

    app = create_app(
        settings, emulator=factory, clock=lambda: datetime.fromtimestamp(clock.time(), UTC)
    )
    await aiohttp_client(app)
    yield Live(app=app, emulators=emulators)


async def test_blind_transfer_to_an_extension(live: Live) -> None:
    task = live.caller_task()
    await live.talking(ALICE)
    await live.until(lambda: live.emu.blind_transfer(ALICE, "1002"))
    summary = await task
    r = await live.ended(summary.uniqueid)

    assert (r.agent, r.agents, r.end_reason, r.abandoned) == (
        "Alice", ("Alice",), "completed", False,
    )  # fmt: skip
    (t,) = r.transfers
    assert (t.kind, t.target, t.source) == ("blind", "1002", "Alice")
    assert r.answered_at is not None and t.answered_at is not None and t.answered_at > t.at
    assert r.talk_seconds is not None and r.ended_at is not None
    alice_part = (t.at - r.answered_at).total_seconds()
    assert r.talk_seconds > alice_part + BOB_TALK / 2  # Bob's part is talk too
    assert r.talk_seconds <= (r.ended_at - r.answered_at).total_seconds()  # ringing Bob is not
    assert await live.calls.count_calls() == 1


async def test_blind_transfer_nobody_answers(live: Live) -> None:
    task = live.caller_task()
    await live.talking(ALICE)
    await live.until(lambda: live.emu.blind_transfer(ALICE, "1003"))
    summary = await task  # Carol never answers: Dial gives up, the dialplan hangs up
    r = await live.ended(summary.uniqueid)

    (t,) = r.transfers
    assert (t.kind, t.target, t.source, t.answered_at) == ("blind", "1003", "Alice", None)
    assert (r.agent, r.end_reason, r.abandoned, r.abandon_stage) == (
        "Alice", "completed", False, None,
    )  # fmt: skip
    assert r.answered_at is not None and r.talk_seconds is not None
    assert r.talk_seconds <= (t.at - r.answered_at).total_seconds() + 1


async def test_attended_transfer_after_a_consultation_call(live: Live) -> None:
    task = live.caller_task()
    await live.talking(ALICE)
    consult = asyncio.ensure_future(live.emu.internal_call(ALICE, "1002"))  # the caller waits
    await live.talking(BOB)
    assert live.emu.attended_transfer(ALICE)
    summary, consultation = await asyncio.gather(task, consult)
    r = await live.ended(summary.uniqueid)

    (t,) = r.transfers
    assert (t.kind, t.target, t.source, t.answered_at) == ("attended", "1002", "Alice", t.at)
    assert (r.agent, r.end_reason, r.abandoned) == ("Alice", "completed", False)
    assert r.answered_at is not None and r.talk_seconds is not None
    alice_part = (t.at - r.answered_at).total_seconds()
    assert r.talk_seconds > alice_part + BOB_TALK / 2
    # the consultation (Alice's phone calling Bob) is no hotline call
    assert await live.calls.get_call(consultation.uniqueid) is None
    assert await live.calls.count_calls() == 1


async def test_agent_to_agent_call_leaves_no_record(live: Live) -> None:
    hotline = live.caller_task()
    await live.talking(ALICE)
    uid = next(c.uniqueid for c in live.emu.pbx.channels.values() if c.name.startswith("PJSIP/t"))
    await live.until_logged(uid)  # the AMI link is up: the next call's events reach the app
    summary = await live.emu.internal_call(CAROL, "1002")  # Carol's phone calls Bob
    caller = next(c for c in live.emu.pbx.channels.values() if c.uniqueid == uid)
    assert live.emu.hangup(caller.name)
    await hotline
    await live.ended(uid)  # every event before the hotline call's end was handled
    assert await live.calls.get_call(summary.uniqueid) is None
    assert await live.calls.count_calls() == 1


# -- the transfer's new facts in the call log, SQLite and PostgreSQL ------------------------------

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 28, 9, 0, 0, 123456, tzinfo=SHANGHAI)


async def test_transfer_source_and_answer_round_trip(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    repo = CallRepository(session_factory=session_factory, answer_target_seconds=60)
    transfers = (
        Transfer(T0 + timedelta(seconds=70), "blind", "1002", "Alice", T0 + timedelta(seconds=80)),
        Transfer(T0 + timedelta(seconds=100), "blind", "1003", "1002"),  # never answered
    )
    record = CallRecord("1.1", "1.1", "PJSIP/trunk-1", T0, transfers=transfers)
    await repo.save_call(record)
    loaded = await repo.get_call("1.1")
    assert loaded is not None and loaded.transfers == transfers
    first = loaded.transfers[0].answered_at
    assert first is not None and first.tzinfo is UTC


async def test_transfers_stored_before_source_and_answer_still_read(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    repo = CallRepository(session_factory=session_factory, answer_target_seconds=60)
    await repo.save_call(CallRecord("2.1", "2.1", "PJSIP/trunk-2", T0))
    old = [{"at": T0.astimezone(UTC).isoformat(), "kind": "attended", "target": "PJSIP/1003"}]
    async with session_factory() as session, session.begin():
        await session.execute(
            update(CallRow).where(CallRow.uniqueid == "2.1").values(transfers=old)
        )
    loaded = await repo.get_call("2.1")
    assert loaded is not None
    assert loaded.transfers == (Transfer(T0, "attended", "PJSIP/1003", "", None),)


# -- a restart while agents talk to each other -----------------------------------------------


class _SavedCalls:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    async def save_calls(self, records: Sequence[CallRecord]) -> None:
        self.records += records


class _Published:
    def __init__(self) -> None:
        self.effects: list[object] = []

    async def publish(self, effects: Iterable[object]) -> None:
        self.effects += effects


async def test_agent_to_agent_call_live_at_a_restart_leaves_no_record(tmp_path: Path) -> None:
    """The service (re)starts while Alice's phone talks to Bob's: its first resync adopts the
    call before any Agent* event; the member list of the resync's queue part (the emulator's
    QueueStatus) tells Alice's phone, so the call gets no record and no effect."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'cc.db'}", flows_dir=FLOWS)
    clock = RealClock(speed=SPEED)
    cfg = emulator_config(settings, agi_host="127.0.0.1", agi_port=9, speed=SPEED, seed=5)
    cfg.tts = False
    cfg.recordings_dir = None
    cfg.ami_users = {"u": "s"}
    cfg.members = {q.name: [ALICE] for q in cfg.queues}
    cfg.agents = [
        AgentProfile(ALICE, "Alice", forced="answer", answer_delay=(1, 1)),
        AgentProfile(BOB, "Bob", forced="answer", answer_delay=(1, 1), talk_time=(600, 600)),
    ]
    async with Emulator(config=cfg, clock=clock) as emu:
        bob_talks = asyncio.Event()
        publish = emu.pbx.publish

        def watch(name: str, klass: str, fields: Sequence[tuple[str, str]]) -> None:
            publish(name, klass, fields)
            if name == "BridgeEnter" and dict(fields).get("Channel", "").startswith(BOB + "-"):
                bob_talks.set()

        emu.pbx.publish = watch
        call = asyncio.ensure_future(emu.internal_call(ALICE, "1002"))
        async with asyncio.timeout(WAIT):
            await bob_talks.wait()  # before the service's AMI login
        saved, published = _SavedCalls(), _Published()
        tracker = CallTracker()  # a fresh process: no Agent* event seen yet
        pipeline = EventPipeline(
            calls=tracker,
            agents=AgentStateTracker(),
            call_publisher=published,
            agent_publisher=_Published(),
            call_log=saved,
            clock=lambda: datetime.now(UTC),
            save_delay=0,
        )
        tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(pipeline.write())]
        client, resynced = client_for(pipeline, emu.ami_address[1])
        try:
            await client.start()
            async with asyncio.timeout(WAIT):
                await resynced.wait()
                await pipeline.drain()
            assert len(tracker) == 1  # adopted, followed
            alice = next(ch.name for ch in emu.pbx.channels.values() if ch.name.startswith(ALICE))
            assert emu.hangup(alice)
            summary = await call
            async with asyncio.timeout(WAIT):
                while len(tracker):  # until the call's end has come through
                    await pipeline.drain()
                    await asyncio.sleep(0.01)
        finally:
            await client.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert summary.uniqueid and pipeline.stats.events > 0
    assert (saved.records, published.effects) == ([], [])
