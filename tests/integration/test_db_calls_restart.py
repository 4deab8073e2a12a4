"""CallRepository across a server restart mid-call, on SQLite and PostgreSQL.

The old process saved the call from its start; the new one adopts the still-running call from
the next AMI event (adopted=True: approximate start, no IVR path, no queue join) and saves it.
The saved facts must survive; the adopted record adds what happened after the restart.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.calls.model import CallRecord, Transfer
from callcenter.calls.repository import CallRepository

T0 = datetime(2026, 11, 28, 10, 15, 2, tzinfo=UTC)
UID = "1715682000.1"


@pytest.fixture
def repo(session_factory: async_sessionmaker[AsyncSession]) -> CallRepository:
    return CallRepository(session_factory=session_factory)


def before_restart() -> CallRecord:
    """What the old process saved: the caller went through the IVR and is queued."""
    return CallRecord(
        uniqueid=UID,
        linkedid=UID,
        channel="PJSIP/trunk-00000001",
        started_at=T0,
        caller_number="13800138000",
        caller_name="王建国",
        dialed_number="5551000",
        ivr_path=("main", "2", "support"),
        ivr_choice="2",
        queue="support",
        queue_priority=5,
        queue_joined_at=T0 + timedelta(seconds=10),
        variables={"CALLCENTER_LANG": "zh"},
        queues=("support",),
    )


def adopted_after_restart() -> CallRecord:
    """What the new process knows: the call from the next event on, answered and ended."""
    return CallRecord(
        uniqueid=UID,
        linkedid=UID,
        channel="PJSIP/trunk-00000001",
        started_at=T0 + timedelta(seconds=11),  # approximate: when it was first seen
        caller_number="13800138000",
        caller_name="",
        dialed_number="5551000",
        queue="support",
        agent="王芳",
        agent_interface="PJSIP/1001",
        answered_at=T0 + timedelta(seconds=18),
        ended_at=T0 + timedelta(seconds=60),
        wait_seconds=8.0,
        talk_seconds=42.0,
        hangup_cause=16,
        hangup_cause_text="Normal Clearing",
        end_reason="completed",
        agents=("王芳",),
        transfers=(Transfer(at=T0 + timedelta(seconds=40), kind="blind", target="8001"),),
        adopted=True,
    )


async def test_an_adopted_record_merges_into_the_saved_call(repo: CallRepository) -> None:
    await repo.save_calls([before_restart()])
    await repo.save_calls([adopted_after_restart()])
    merged = await repo.get_call(UID)
    assert merged is not None
    saved, adopted = before_restart(), adopted_after_restart()
    # what only the old process knew is kept
    assert merged.started_at == saved.started_at
    assert merged.adopted is False
    assert merged.caller_name == "王建国"
    assert merged.ivr_path == ("main", "2", "support")
    assert merged.ivr_choice == "2"
    assert merged.queue_priority == 5
    assert merged.queue_joined_at == saved.queue_joined_at
    assert merged.variables == {"CALLCENTER_LANG": "zh"}
    assert merged.queues == ("support",)
    # what happened after the restart is added
    assert merged.answered_at == adopted.answered_at
    assert merged.ended_at == adopted.ended_at
    assert merged.agent == "王芳"
    assert merged.agents == ("王芳",)
    assert merged.transfers == adopted.transfers
    assert merged.wait_seconds == 8.0
    assert merged.talk_seconds == 42.0
    assert merged.hangup_cause == 16
    assert merged.end_reason == "completed"


async def test_every_save_of_the_adopted_call_keeps_merging(repo: CallRepository) -> None:
    await repo.save_calls([before_restart()])
    ringing = dataclasses.replace(
        adopted_after_restart(),
        answered_at=None,
        ended_at=None,
        agent=None,
        agent_interface=None,
        agents=(),
        transfers=(),
        wait_seconds=None,
        talk_seconds=None,
        hangup_cause=None,
        hangup_cause_text=None,
        end_reason=None,
    )
    await repo.save_call(ringing)
    await repo.save_call(adopted_after_restart())
    merged = await repo.get_call(UID)
    assert merged is not None
    assert merged.started_at == T0 and merged.adopted is False
    assert merged.ivr_path == ("main", "2", "support") and merged.queue_priority == 5
    assert merged.answered_at == adopted_after_restart().answered_at


async def test_a_record_that_is_not_adopted_still_overwrites(repo: CallRepository) -> None:
    await repo.save_calls([before_restart()])
    reconciled = dataclasses.replace(
        before_restart(), ivr_path=(), ivr_choice=None, queue_priority=None, caller_name=""
    )
    await repo.save_call(reconciled)
    assert await repo.get_call(UID) == reconciled


async def test_an_adopted_call_is_stored_as_adopted_when_nothing_better_is(
    repo: CallRepository,
) -> None:
    first = dataclasses.replace(adopted_after_restart(), answered_at=None, ended_at=None)
    await repo.save_call(first)
    assert await repo.get_call(UID) == first
    later = dataclasses.replace(
        adopted_after_restart(), started_at=T0 + timedelta(seconds=12), caller_name="王"
    )
    await repo.save_call(later)  # adopted over adopted: the newer record wins as before
    assert await repo.get_call(UID) == later
    full = before_restart()
    await repo.save_call(full)  # a record followed from its start replaces an adopted one
    assert await repo.get_call(UID) == full
