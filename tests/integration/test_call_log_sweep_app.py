"""The whole server against the emulator: calls the previous run left open in the call log are
closed once the AMI client's channel list shows they are gone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from failopen_support import make_app, settings_for

from callcenter.app import PIPELINE
from callcenter.calls.model import CallRecord
from callcenter.calls.repository import CallRepository
from callcenter.db.engine import create_engine, create_session_factory
from callcenter.pbxsim.emulator import Emulator

STARTED = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)  # long before the emulator's clock


def open_call(uniqueid: str, **extra: Any) -> CallRecord:
    return CallRecord(
        uniqueid=uniqueid,
        linkedid=uniqueid,
        channel="PJSIP/trunk-00000001",
        started_at=STARTED,
        caller_number="13800138000",
        caller_name="",
        dialed_number="100",
        direction="inbound",
        **extra,
    )


async def test_a_call_left_open_by_the_previous_run_is_closed_at_start(
    migrated_db_url: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    engine = create_engine(migrated_db_url)
    repo = CallRepository(session_factory=create_session_factory(engine))
    answered = STARTED + timedelta(seconds=40)
    ended = STARTED + timedelta(minutes=3)
    try:
        await repo.save_calls(
            [
                open_call("1767605400.1", queue="support", answered_at=answered, agent="a1"),
                open_call("1767605400.2", ended_at=ended, end_reason="completed"),
            ]
        )
        emulators: list[Emulator] = []
        app = make_app(settings_for(migrated_db_url, tmp_path), emulators)
        await aiohttp_client(app)
        pipeline = app[PIPELINE]
        async with asyncio.timeout(30):
            await pipeline.wait_sweeps(1)  # logged in; the channel list follows on the wire
        assert pipeline.stats.swept == 1 and pipeline.stats.sweep_failures == 0
        gone = await repo.get_call("1767605400.1")
        assert gone is not None and gone.end_reason == "ended_while_disconnected"
        assert gone.ended_at is not None and gone.ended_at > STARTED
        assert (gone.answered_at, gone.agent, gone.hangup_cause) == (answered, "a1", None)
        done = await repo.get_call("1767605400.2")
        assert done is not None and (done.ended_at, done.end_reason) == (ended, "completed")
    finally:
        await engine.dispose()
