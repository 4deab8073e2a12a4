"""CallRepository on SQLite and PostgreSQL: round trips, idempotent writes, filters, summary."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.calls.model import CallbackRequest, CallRecord, IvrStep, Transfer
from callcenter.calls.repository import CallRepository
from callcenter.db.models import CallRow
from callcenter.ivr.model import IvrRecorder

SHANGHAI = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 28, 9, 0, 0, 123456, tzinfo=SHANGHAI)


@pytest.fixture
def repo(session_factory: async_sessionmaker[AsyncSession]) -> CallRepository:
    return CallRepository(session_factory=session_factory, answer_target_seconds=60)


def full_record(uniqueid: str = "1764291600.101") -> CallRecord:
    """A call with every field set to a non-default value."""
    return CallRecord(
        uniqueid=uniqueid,
        linkedid="1764291600.100",
        channel="PJSIP/trunk-00000001",
        started_at=T0,
        caller_number="+86 138-0013-8000",
        caller_name="王建国",
        dialed_number="4008001234",
        direction="inbound",
        ivr_path=("main", "1", "bookings"),
        ivr_choice="1",
        queue="bookings",
        queue_priority=10,
        queue_joined_at=T0 + timedelta(seconds=20),
        queue_left_at=T0 + timedelta(seconds=45),
        agent="王芳",
        agent_interface="PJSIP/1001",
        answered_at=T0 + timedelta(seconds=45),
        ended_at=T0 + timedelta(seconds=300),
        wait_seconds=25.0,
        talk_seconds=255.5,
        abandoned=False,
        abandon_stage=None,
        abandon_after_seconds=None,
        transfers=(
            Transfer(at=T0 + timedelta(seconds=200), kind="attended", target="PJSIP/1003"),
            Transfer(at=T0 + timedelta(seconds=250), kind="blind", target="8001"),
        ),
        hangup_cause=16,
        hangup_cause_text="Normal Clearing",
        recording_file="2026/11/28/1764291600.101.wav",
        end_reason="completed",
        variables={"CALLCENTER_LANG": "zh", "CALLCENTER_KEY": "1", "备注": "大客户"},
        queues=("general", "bookings"),
        agents=("王芳", "张伟"),
        adopted=True,
    )


def in_utc(record: CallRecord) -> CallRecord:
    changes = {
        f.name: getattr(record, f.name).astimezone(UTC)
        for f in dataclasses.fields(record)
        if isinstance(getattr(record, f.name), datetime)
    }
    transfers = tuple(dataclasses.replace(t, at=t.at.astimezone(UTC)) for t in record.transfers)
    return dataclasses.replace(record, transfers=transfers, **changes)


def test_the_full_record_sets_every_field() -> None:
    # a field added to CallRecord later must be added here (and to the calls table)
    defaults = CallRecord(uniqueid="", linkedid="", channel="", started_at=T0 - timedelta(days=1))
    unset = [
        f.name
        for f in dataclasses.fields(CallRecord)
        if f.name not in {"direction", "abandoned", "abandon_stage", "abandon_after_seconds"}
        and getattr(full_record(), f.name) == getattr(defaults, f.name)
    ]
    assert unset == []
    assert {f.name for f in dataclasses.fields(CallRecord)} <= set(CallRow.__table__.columns.keys())


async def test_every_field_survives_a_round_trip(repo: CallRepository) -> None:
    record = full_record()
    await repo.save_call(record)
    loaded = await repo.get_call(record.uniqueid)
    assert loaded == record  # aware datetimes compare by instant
    assert loaded == in_utc(record)
    assert loaded is not None
    assert loaded.started_at.tzinfo is UTC
    assert loaded.started_at.microsecond == 123456
    assert all(t.at.tzinfo is UTC for t in loaded.transfers)
    assert loaded.caller_name == "王建国"
    assert loaded.variables["备注"] == "大客户"


async def test_a_minimal_record_round_trips_with_defaults(repo: CallRepository) -> None:
    record = CallRecord(uniqueid="1.1", linkedid="1.1", channel="PJSIP/x-1", started_at=T0)
    await repo.save_call(record)
    assert await repo.get_call("1.1") == record
    assert await repo.get_call("missing") is None


async def test_outbound_and_abandoned_fields_round_trip(repo: CallRepository) -> None:
    record = dataclasses.replace(
        full_record(),
        direction="outbound",
        abandoned=True,
        abandon_stage="queue",
        abandon_after_seconds=33.25,
        answered_at=None,
        end_reason="abandoned",
    )
    await repo.save_call(record)
    assert await repo.get_call(record.uniqueid) == record


async def test_a_batch_upserts_and_the_last_record_of_a_call_wins(repo: CallRepository) -> None:
    ringing = dataclasses.replace(full_record(), agent=None, answered_at=None, end_reason=None)
    other = dataclasses.replace(full_record(), uniqueid="1764291600.999", linkedid="1764291600.999")
    await repo.save_call(ringing)
    await repo.save_calls([ringing, other, full_record()])
    await repo.save_calls([])
    assert await repo.count_calls() == 2
    assert await repo.get_call(ringing.uniqueid) == full_record()
    assert await repo.get_call(other.uniqueid) == other


async def test_saving_twice_updates_instead_of_duplicating(repo: CallRepository) -> None:
    first = dataclasses.replace(full_record(), agent=None, answered_at=None, end_reason=None)
    await repo.save_call(first)
    await repo.save_call(first)
    reconciled = full_record()
    await repo.save_call(reconciled)
    assert await repo.count_calls() == 1
    assert await repo.get_call(reconciled.uniqueid) == reconciled


async def test_naive_datetime_is_refused_with_a_clear_error(repo: CallRepository) -> None:
    naive = dataclasses.replace(full_record(), started_at=datetime(2026, 11, 28, 9, 0))
    with pytest.raises(ValueError, match="started_at"):
        await repo.save_call(naive)
    with pytest.raises(ValueError, match="at most 150"):
        await repo.save_call(dataclasses.replace(full_record(), uniqueid="9" * 151))
    assert await repo.count_calls() == 0


async def test_steps_are_idempotent_and_ordered(repo: CallRepository) -> None:
    uid = "1764291600.101"
    steps = [
        IvrStep(uid, 2, T0 + timedelta(seconds=9), "menu_main", "menu", "1", "bookings"),
        IvrStep(uid, 1, T0 + timedelta(seconds=2), "welcome", "play"),
        IvrStep(uid, 3, T0 + timedelta(seconds=12), "to_bookings", "queue", None, "bookings"),
    ]
    for step in steps:
        await repo.record_step(step)
    await repo.record_steps(steps + steps)  # a whole path again, as one batch: nothing doubles
    got = await repo.get_steps(uid)
    assert [s.seq for s in got] == [1, 2, 3]
    assert got[1] == dataclasses.replace(steps[0], at=steps[0].at.astimezone(UTC))
    assert got[1].at.tzinfo is UTC
    # the steps exist before the call row; the detail view joins them once the call is saved
    assert await repo.get_call_detail(uid) is None
    await repo.save_call(full_record(uid))
    detail = await repo.get_call_detail(uid)
    assert detail is not None
    assert [s.node for s in detail.steps] == ["welcome", "menu_main", "to_bookings"]
    assert detail.callback is None


async def test_callback_requests(repo: CallRepository) -> None:
    req = CallbackRequest(
        call_uniqueid="1764291600.201",
        number="138 0013 8000",
        requested_at=T0,
        queue="general",
        note="请下午回电",
    )
    await repo.record_callback(req)
    await repo.record_callback(req)
    later = CallbackRequest("1764291600.202", "010-12345678", T0 + timedelta(minutes=5))
    await repo.record_callback(later)
    pending = await repo.list_callbacks(status="pending")
    assert [c.request.call_uniqueid for c in pending] == ["1764291600.201", "1764291600.202"]
    first = pending[0]
    assert first.request == dataclasses.replace(req, requested_at=T0.astimezone(UTC))
    assert first.number_normalised == "8613800138000"
    assert first.status == "pending"
    assert await repo.set_callback_status("1764291600.201", "done") is True
    assert await repo.set_callback_status("nope", "done") is False
    with pytest.raises(ValueError):
        await repo.set_callback_status("1764291600.202", "lost")  # type: ignore[arg-type]
    assert [c.request.call_uniqueid for c in await repo.list_callbacks(status="pending")] == [
        "1764291600.202"
    ]
    await repo.save_call(full_record("1764291600.201"))
    detail = await repo.get_call_detail("1764291600.201")
    assert detail is not None and detail.callback is not None
    assert detail.callback.status == "done"


def test_call_repository_is_an_ivr_recorder(session_factory: object) -> None:
    recorder: IvrRecorder = CallRepository(session_factory=session_factory)  # type: ignore[arg-type]
    assert callable(recorder.record_steps) and callable(recorder.record_callback)


async def seed_calls(repo: CallRepository) -> list[CallRecord]:
    """12 calls an hour apart: 0-9 queued (bookings/complaints/technical in turn, waits 10*i s,
    every third abandoned in the queue), 10 abandoned in the IVR, 11 ended in the IVR."""
    base = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
    records = []
    for i in range(12):
        queue = ["bookings", "complaints", "technical"][i % 3] if i < 10 else None
        answered = queue is not None and i % 3 != 0
        start = base + timedelta(hours=i)
        records.append(
            CallRecord(
                uniqueid=f"1764201600.{i:03d}",
                linkedid=f"1764201600.{i:03d}",
                channel=f"PJSIP/trunk-{i:08x}",
                started_at=start,
                caller_number=["13800138000", "010-12345678", "anonymous"][i % 3],
                caller_name=["王建国", "Smith", ""][i % 3],
                ivr_choice=["1", "2", "3"][i % 3] if i < 11 else None,
                queue=queue,
                queue_joined_at=start + timedelta(seconds=15) if queue else None,
                agent=["王芳", "张伟"][i % 2] if answered else None,
                agent_interface=["PJSIP/1001", "PJSIP/1003"][i % 2] if answered else None,
                answered_at=start + timedelta(seconds=15 + 10 * i) if answered else None,
                wait_seconds=float(10 * i) if queue else None,
                talk_seconds=60.0 if answered else None,
                abandoned=(queue is not None and not answered) or i == 10,
                abandon_stage=("queue" if queue else "ivr")
                if (queue is not None and not answered) or i == 10
                else None,
                recording_file=f"r{i}.wav" if answered else None,
            )
        )
    for record in records:
        await repo.save_call(record)
    return records


async def test_list_filters_and_pagination(repo: CallRepository) -> None:
    records = await seed_calls(repo)
    newest_first = sorted(records, key=lambda r: r.started_at, reverse=True)
    page1 = await repo.list_calls(limit=5)
    page2 = await repo.list_calls(limit=5, offset=5)
    page3 = await repo.list_calls(limit=5, offset=10)
    assert [r.uniqueid for r in page1 + page2 + page3] == [r.uniqueid for r in newest_first]
    assert len(page3) == 2
    assert await repo.count_calls() == 12

    since = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    until = datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI)  # = 06:00 UTC, exclusive
    window = await repo.list_calls(since=since, until=until)
    assert [r.uniqueid[-3:] for r in window] == ["005", "004", "003"]
    assert await repo.count_calls(since=since, until=until) == 3

    bookings = await repo.list_calls(queue="bookings")
    assert {r.queue for r in bookings} == {"bookings"} and len(bookings) == 4

    by_name = await repo.list_calls(agent="王芳")
    by_interface = await repo.list_calls(agent="PJSIP/1001")
    assert by_name == by_interface and len(by_name) > 0
    assert all(r.agent == "王芳" for r in by_name)

    abandoned = await repo.list_calls(abandoned=True)
    assert {r.uniqueid[-3:] for r in abandoned} == {"000", "003", "006", "009", "010"}
    assert await repo.count_calls(abandoned=False) == 7

    for written in ["+86 138 0013 8000", "008613800138000", "13800138000"]:
        mine = await repo.list_calls(caller=written)
        assert {r.uniqueid[-3:] for r in mine} == {"000", "003", "006", "009"}
    assert await repo.count_calls(caller="anonymous") == 4
    assert await repo.count_calls(caller="010 1234 5678", queue="complaints") == 3
    assert await repo.count_calls(caller="010 1234 5678", queue="bookings") == 0

    with pytest.raises(ValueError):
        await repo.list_calls(limit=0)
    with pytest.raises(ValueError):
        await repo.list_calls(offset=-1)


async def test_summary(repo: CallRepository) -> None:
    records = await seed_calls(repo)
    await repo.record_callback(
        CallbackRequest("cb1", "13800138000", datetime(2026, 11, 27, 5, tzinfo=UTC))
    )
    await repo.record_callback(
        CallbackRequest("cb2", "13800138000", datetime(2026, 11, 28, 5, tzinfo=UTC))
    )
    since = datetime(2026, 11, 27, tzinfo=UTC)
    s = await repo.summary(since, since + timedelta(days=1))
    assert s["calls"] == 12
    answered = [r for r in records if r.answered_at is not None]
    assert s["answered"] == len(answered) == 6
    assert s["abandoned"] == 5
    assert s["abandoned_in_queue"] == 4 and s["abandoned_in_ivr"] == 1
    assert s["queued"] == 10
    # waits are 10*i seconds: answered ones with i in {1, 2, 4, 5} are within 60 s
    assert s["answered_within_target"] == 4
    assert s["service_level"] == pytest.approx(0.4)
    waits = [r.wait_seconds for r in answered if r.wait_seconds is not None]
    assert s["avg_wait_seconds"] == pytest.approx(sum(waits) / len(waits))
    assert s["avg_talk_seconds"] == pytest.approx(60.0)
    assert s["recordings"] == 6
    assert s["callbacks"] == 1
    assert s["ivr_choices"] == {"1": 4, "2": 4, "3": 3}
    assert s["by_queue"]["bookings"]["calls"] == 4
    assert s["by_queue"]["bookings"]["answered"] == 0
    assert s["by_queue"]["bookings"]["abandoned"] == 4
    assert s["by_queue"]["complaints"]["answered_within_target"] == 2
    assert s["by_agent"] == {"王芳": 3, "张伟": 3}

    empty = await repo.summary(since - timedelta(days=7), since)
    assert empty["calls"] == 0 and empty["service_level"] is None
    assert empty["avg_wait_seconds"] is None and empty["ivr_choices"] == {}
    with pytest.raises(ValueError):
        await repo.summary(since, since)


async def test_service_level_counts_only_calls_that_queued(repo: CallRepository) -> None:
    """Calls answered without reaching a queue (an outbound callback, a direct dial) are in
    neither side of the service level: one queued call answered after 90 s and two answered
    callbacks give 0 of 1, not 2 of 1."""
    since = datetime(2026, 11, 27, tzinfo=UTC)
    at = since + timedelta(hours=10)
    queued = CallRecord(
        uniqueid="q.1",
        linkedid="q.1",
        channel="PJSIP/trunk-1",
        started_at=at,
        queue="general",
        answered_at=at + timedelta(seconds=90),
        wait_seconds=90.0,
    )
    callbacks = [
        CallRecord(
            uniqueid=f"cb.{n}",
            linkedid=f"cb.{n}",
            channel=f"PJSIP/1001-{n}",
            started_at=at,
            direction="outbound",
            answered_at=at + timedelta(seconds=5),
        )
        for n in (1, 2)
    ]
    await repo.save_calls([queued, *callbacks])
    s = await repo.summary(since, since + timedelta(days=1))
    assert (s["answered"], s["queued"], s["answered_within_target"]) == (3, 1, 0)
    assert s["service_level"] == 0.0


async def test_concurrent_writers_all_land(repo: CallRepository) -> None:
    # the tracker, the IVR runner and a reconcile may all write at once (SQLite: WAL + timeout)
    records = [full_record(f"1764291700.{i}") for i in range(20)]
    steps = [IvrStep(r.uniqueid, n, T0, "menu_main", "menu", "1") for r in records for n in (1, 2)]
    await asyncio.gather(
        *(repo.save_call(r) for r in records),
        *(repo.save_call(r) for r in records),
        *(repo.record_step(s) for s in steps),
    )
    assert await repo.count_calls() == 20
    assert [len(await repo.get_steps(r.uniqueid)) for r in records] == [2] * 20


async def test_timestamps_are_stored_in_utc(
    repo: CallRepository, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await repo.save_call(full_record())  # started 09:00:00.123456 +08:00
    async with session_factory() as session:
        if session.get_bind().dialect.name == "sqlite":
            query = "SELECT started_at FROM calls"
        else:
            utc = "started_at AT TIME ZONE 'UTC'"
            query = f"SELECT to_char({utc}, 'YYYY-MM-DD HH24:MI:SS.US') FROM calls"
        stored = (await session.execute(text(query))).scalar_one()
    assert str(stored) == "2026-11-28 01:00:00.123456"


@pytest.mark.parametrize("bad", [2**31, -(2**31) - 1, 10**30])
async def test_an_integer_beyond_its_column_is_dropped_not_the_call(
    repo: CallRepository, bad: int, caplog: pytest.LogCaptureFixture
) -> None:
    # CALLCENTER_QUEUE_PRIO comes from the dialplan: int() accepts any size, the column is int32
    record = dataclasses.replace(full_record(), queue_priority=bad, hangup_cause=bad)
    with caplog.at_level("WARNING", logger="callcenter.calls.repository"):
        await repo.save_call(record)
    stored = await repo.get_call(record.uniqueid)
    assert stored == dataclasses.replace(record, queue_priority=None, hangup_cause=None)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("queue_priority" in m and str(bad) in m for m in warned)
    assert any("hangup_cause" in m for m in warned)


async def test_integers_at_the_column_limits_are_stored(repo: CallRepository) -> None:
    low = dataclasses.replace(full_record("1.1"), queue_priority=-(2**31), hangup_cause=0)
    high = dataclasses.replace(full_record("1.2"), queue_priority=2**31 - 1, hangup_cause=127)
    await repo.save_calls([low, high])
    assert await repo.get_call("1.1") == low
    assert await repo.get_call("1.2") == high
