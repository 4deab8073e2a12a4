"""callcenter.db.availability on SQLite files: the Database gate (one foreground attempt,
background retries with backoff, migrations once, one log line per change of state, a session
factory that refuses while down) and DeferredCallLog (held while down, in order, latest record
per call, bounded, written when the database is back; with a spool file, kept across a
restart; queued without waiting behind a write in progress and written in a batch right
after it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from callcenter.calls.model import (
    CallbackRequest,
    CallRecord,
    IvrStep,
    Transfer,
    call_record_from_json,
    ivr_step_from_json,
)
from callcenter.calls.repository import CallRepository
from callcenter.db.availability import (
    Backoff,
    Database,
    DatabaseUnavailable,
    DeferredCallLog,
    DeferredIvrRecorder,
    HeldWrites,
    is_database_down,
)
from callcenter.db.migrate import upgrade_database
from callcenter.db.spool import Spool

FAST = Backoff(initial=0.01, maximum=0.05)
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


class FlakyMigrations:
    """Refuses the first `failures` attempts like an unreachable server, then migrates."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self, url: str | URL) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError(111, "Connect call failed")
        await upgrade_database(url)


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "callcenter.db.availability" and r.levelno == level
    ]


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    b = Backoff(initial=0.5, maximum=4.0)
    assert [b.delay(n, rand=lambda: 1.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [b.delay(n, rand=lambda: 0.0) for n in range(4)] == [0.25, 0.5, 1.0, 2.0]
    assert b.delay(10_000, rand=lambda: 1.0) == 4.0
    for bad in ((0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)):
        with pytest.raises(ValueError):
            Backoff(*bad)


async def test_down_at_start_then_retried_migrated_once_logged_once(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="callcenter.db.availability")
    migrate = FlakyMigrations(failures=3)
    db = Database(sqlite_url, retry=FAST, migrate=migrate)
    ready_hooks: list[bool] = []

    async def hook() -> None:
        ready_hooks.append(db.available)

    db.on_ready(hook)
    try:
        assert await db.start() is False
        assert not db.available and "ConnectionRefusedError" in db.reason
        with pytest.raises(DatabaseUnavailable, match="ConnectionRefusedError"):
            db.sessions()
        async with asyncio.timeout(30):
            await db.wait_until_ready()
        assert migrate.calls == 4 and ready_hooks == [True] and db.reason == ""
        async with db.sessions() as session:
            assert await session.scalar(text("SELECT count(*) FROM calls")) == 0
        assert len(_records(caplog, logging.WARNING)) == 1  # not one per try
        assert len(_records(caplog, logging.INFO)) == 1
        assert db.outages == 1 and db.attempts == 0

        # lost at run time: retried with SELECT 1, the migrations are not run again
        db.mark_down(ConnectionResetError(104, "reset"))
        assert not db.available and "ConnectionResetError" in db.reason
        async with asyncio.timeout(30):
            await db.wait_until_ready()
        assert migrate.calls == 4 and ready_hooks == [True, True] and db.outages == 2
    finally:
        await db.close()


async def test_a_database_that_is_up_starts_in_the_foreground(sqlite_url: str) -> None:
    db = Database(sqlite_url, retry=FAST)
    try:
        assert await db.start() is True
        await db.ping()
        assert db.status()["outages"] == 0
    finally:
        await db.close()


async def test_an_unopenable_sqlite_path_is_down_not_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    db = Database(f"sqlite+aiosqlite:///{blocker / 'cc.db'}", retry=FAST)
    try:
        assert await db.start() is False
        assert "unable to open database file" in db.reason
        blocker.unlink()
        async with asyncio.timeout(30):
            await db.wait_until_ready()
        assert (blocker / "cc.db").is_file()
    finally:
        await db.close()


def test_what_counts_as_down() -> None:
    assert is_database_down(ConnectionRefusedError())
    assert is_database_down(DatabaseUnavailable("x"))
    assert is_database_down(TimeoutError())
    assert not is_database_down(TimeoutError(), strict=True)
    assert not is_database_down(FileNotFoundError(), strict=True)
    assert is_database_down(ConnectionResetError(), strict=True)
    assert not is_database_down(ValueError("bad record"))


# --- DeferredCallLog --------------------------------------------------------------------------


class Gate:
    def __init__(self, available: bool) -> None:
        self.available = available
        self.marked: list[BaseException] = []

    def mark_down(self, exc: BaseException) -> None:
        self.marked.append(exc)
        self.available = False


class FakeLog:
    def __init__(self) -> None:
        self.batches: list[list[tuple[str, str | None]]] = []
        self.fail: BaseException | None = None
        self.refuse: set[str] = set()  # uniqueids the database rejects (a bad record)
        self.gate: asyncio.Event | None = None

    async def save_calls(self, records: Sequence[CallRecord]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if any(r.uniqueid in self.refuse for r in records):
            raise ValueError("bad record")
        self.batches.append([(r.uniqueid, r.queue) for r in records])


def rec(uid: str, queue: str | None = None) -> CallRecord:
    return CallRecord(
        uniqueid=uid, linkedid=uid, channel=f"PJSIP/t-{uid}", started_at=T0, queue=queue
    )


async def test_held_while_down_in_order_latest_wins_then_written() -> None:
    gate, inner = Gate(False), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate, batch=2)
    await log.save_calls([rec("a"), rec("b")])
    await log.save_calls([rec("a", "sales"), rec("c")])
    assert log.held == 3 and inner.batches == []
    gate.available = True
    await log.save_calls([rec("d")])  # behind what is held, never before it
    assert inner.batches == []
    await log.flush()
    assert inner.batches == [[("a", "sales"), ("b", None)], [("c", None), ("d", None)]]
    assert log.held == 0 and log.flushed == 4
    await log.save_calls([rec("e")])  # nothing held: straight through
    assert inner.batches[-1] == [("e", None)]


async def test_a_write_failing_on_a_lost_connection_is_held_and_reported() -> None:
    gate, inner = Gate(True), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate)
    inner.fail = ConnectionResetError(104, "reset")
    await log.save_calls([rec("a")])
    assert log.held == 1 and len(gate.marked) == 1
    inner.fail = ConnectionRefusedError(111, "refused")
    gate.available = True
    with pytest.raises(ConnectionRefusedError):
        await log.flush()  # still down: kept for the next try
    assert log.held == 1
    inner.fail = None
    await log.flush()
    assert inner.batches == [[("a", None)]]


async def test_other_errors_are_not_held() -> None:
    gate, inner = Gate(True), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate)
    inner.refuse = {"bad"}
    with pytest.raises(ValueError):
        await log.save_calls([rec("bad")])
    assert log.held == 0 and gate.marked == []


async def test_a_bad_held_record_does_not_block_the_others() -> None:
    gate, inner = Gate(False), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate)
    await log.save_calls([rec("a"), rec("bad"), rec("c")])
    inner.refuse = {"bad"}
    gate.available = True
    await log.flush()
    assert inner.batches == [[("a", None)], [("c", None)]]
    assert log.held == 0 and log.dropped == 1


async def test_holding_is_bounded() -> None:
    gate, inner = Gate(False), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate, limit=2)
    await log.save_calls([rec("a"), rec("b"), rec("c"), rec("a", "x")])
    assert log.held == 2 and log.dropped == 1


async def test_a_record_arriving_during_the_flush_is_not_lost() -> None:
    gate, inner = Gate(False), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate)
    await log.save_calls([rec("a")])
    gate.available = True
    inner.gate = asyncio.Event()
    flushing = asyncio.create_task(log.flush())
    await asyncio.sleep(0)
    await log.save_calls([rec("a", "sales")])  # a newer record of the call being written
    inner.gate.set()
    await flushing
    # the older record went out first, the newer one after it (not dropped, not reordered)
    assert inner.batches == [[("a", None)], [("a", "sales")]] and log.held == 0


async def queue_flushed(writes: HeldWrites[Any, Any]) -> None:
    """Wait for the flush that writes what was queued behind a write in progress."""
    flusher = writes._flusher
    assert flusher is not None, "nothing was queued"
    async with asyncio.timeout(30):
        await flusher


async def test_writes_behind_a_write_in_progress_are_queued_and_written_in_a_batch(
    tmp_path: Path,
) -> None:
    """The database is up and several calls end together: the first write goes straight
    through, the others queue behind it without waiting and a flush of their own writes them,
    in one batch, as soon as it is done. Nothing is left held, nothing goes to the spool."""
    gate, inner = Gate(True), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate, spool=_spool(tmp_path))
    inner.gate = asyncio.Event()
    first = asyncio.create_task(log.save_calls([rec("a")]))
    await asyncio.sleep(0)  # its write is in progress
    await asyncio.gather(*(log.save_calls([rec(uid)]) for uid in "bcd"))  # none of them waits
    assert log.held == 3 and inner.batches == []
    inner.gate.set()
    await first
    await queue_flushed(log)
    assert log.held == 0
    assert inner.batches == [[("a", None)], [("b", None), ("c", None), ("d", None)]]
    assert gate.marked == [] and not (tmp_path / "spool").exists()
    await log.save_calls([rec("e")])  # nothing queued any more: straight through
    assert inner.batches[-1] == [("e", None)]
    await log.close()


async def test_what_was_queued_goes_to_the_spool_when_the_database_goes_down(
    tmp_path: Path,
) -> None:
    gate, inner = Gate(True), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate, spool=_spool(tmp_path))
    inner.gate = asyncio.Event()
    first = asyncio.create_task(log.save_calls([rec("a")]))
    await asyncio.sleep(0)
    await log.save_calls([rec("b")])  # queued behind "a", not spooled: the database is up
    inner.fail = ConnectionResetError(104, "reset")
    inner.gate.set()
    await first  # its write fails: held, the database marked down
    await queue_flushed(log)  # finds the database down: spools the queue too
    again = DeferredCallLog(call_log=FakeLog(), database=Gate(False), spool=_spool(tmp_path))
    assert sorted(again._held) == ["a", "b"]
    assert log.held == 2 and len(gate.marked) == 1
    await log.close()


async def test_shutdown_spools_what_was_queued_while_the_database_was_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate, inner = Gate(True), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate, spool=_spool(tmp_path), write_timeout=0.1)
    inner.gate = asyncio.Event()  # never set: the database hangs
    first = asyncio.create_task(log.save_calls([rec("a")]))
    await asyncio.sleep(0)
    await log.save_calls([rec("b")])
    await first  # timed out: held, marked down
    gate.available = False
    with caplog.at_level(logging.WARNING):
        await log.close()
    again = DeferredCallLog(call_log=FakeLog(), database=Gate(False), spool=_spool(tmp_path))
    assert sorted(again._held) == ["a", "b"]
    assert any("kept in" in m for m in _records(caplog, logging.WARNING))


async def test_ivr_steps_of_sessions_ending_together_are_all_written(db_url: str) -> None:
    """The IVR runner's recorder with the database up and 200 sessions ending at once (real
    repository, SQLite and PostgreSQL): every step is stored, without any outage."""
    db = Database(db_url, retry=FAST)
    calls = CallRepository(session_factory=db.sessions)
    recorder = DeferredIvrRecorder(recorder=calls, database=db)
    db.on_ready(recorder.flush)
    try:
        assert await db.start()
        sessions = [
            [IvrStep(f"3.{n}", seq, T0, node=f"n{seq}", kind="menu") for seq in (1, 2, 3)]
            for n in range(200)
        ]
        await asyncio.gather(*(recorder.record_steps(steps) for steps in sessions))
        await queue_flushed(recorder)
        assert recorder.held == 0
        for n in (0, 99, 199):
            assert [s.node for s in await calls.get_steps(f"3.{n}")] == ["n1", "n2", "n3"]
        assert recorder.flushed > 0 and recorder.dropped == 0 and db.outages == 0
    finally:
        await recorder.close()
        await db.close()


async def test_a_write_cancelled_midway_is_kept_and_written_at_close() -> None:
    """Shutdown cancels a writer whose write is in progress: the records are kept, not lost,
    and close() writes them while the database is up."""
    gate, inner = Gate(True), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate)
    inner.gate = asyncio.Event()  # the database is slow
    writer = asyncio.create_task(log.save_calls([rec("a"), rec("b")]))
    await asyncio.sleep(0)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert log.held == 2
    inner.gate.set()
    await log.close()
    assert inner.batches == [[("a", None), ("b", None)]] and log.held == 0


async def test_a_write_cancelled_while_the_database_hangs_is_spooled_at_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate, inner = Gate(True), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate, spool=_spool(tmp_path), write_timeout=0.05)
    inner.gate = asyncio.Event()  # never set: the database hangs
    writer = asyncio.create_task(log.save_calls([rec("a")]))
    await asyncio.sleep(0)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    with caplog.at_level(logging.WARNING):
        await log.close()  # its last try times out too
    again = DeferredCallLog(call_log=FakeLog(), database=Gate(False), spool=_spool(tmp_path))
    assert list(again._held) == ["a"]
    assert any("kept in" in m for m in _records(caplog, logging.WARNING))


class SlowDiskSpool(Spool[CallRecord]):
    """A spool whose appends wait until `disk` is set (a slow disk)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, decode=call_record_from_json)
        self.disk = asyncio.Event()

    async def append(self, items: Sequence[CallRecord]) -> None:
        await self.disk.wait()
        await super().append(items)


async def test_a_spool_append_cancelled_midway_is_written_whole_at_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """During an outage the caller stops waiting for the disk: what it held is still spooled
    by close(), and close() says so truthfully."""
    spool = SlowDiskSpool(tmp_path / "spool" / "call_log.jsonl")
    log = DeferredCallLog(call_log=FakeLog(), database=Gate(False), spool=spool)
    spool.disk.set()
    await log.save_calls([rec("a")])  # appended
    spool.disk.clear()  # the disk is slow from now on
    writer = asyncio.create_task(log.save_calls([rec("b")]))
    await asyncio.sleep(0)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    spool.disk.set()
    with caplog.at_level(logging.WARNING):
        await log.close()
    again = DeferredCallLog(call_log=FakeLog(), database=Gate(False), spool=_spool(tmp_path))
    assert sorted(again._held) == ["a", "b"]
    assert any("kept in" in m for m in _records(caplog, logging.WARNING))


async def test_the_flush_after_an_outage_gives_up_on_a_hanging_database() -> None:
    """The database answers again but the first write hangs (a lock, a half-open connection
    after a failover): the flush gives up after the write timeout, as for the database being
    down, and keeps everything held for the next try."""
    gate, inner = Gate(False), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate, write_timeout=0.05)
    await log.save_calls([rec("a"), rec("b")])
    gate.available = True
    inner.gate = asyncio.Event()  # never set
    with pytest.raises(TimeoutError) as caught:
        await log.flush()
    assert is_database_down(caught.value)
    assert log.held == 2 and inner.batches == []


class SlowRemoveSpool(Spool[CallRecord]):
    """A spool whose removal (after a flush has written everything) waits for `disk`."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, decode=call_record_from_json)
        self.disk = asyncio.Event()
        self.removing = asyncio.Event()

    async def remove(self) -> None:
        self.removing.set()
        await self.disk.wait()
        await super().remove()


async def test_a_write_queued_while_the_flush_tidies_the_spool_is_written_too(
    tmp_path: Path,
) -> None:
    """A record that comes in while the flush of the queue is removing the spool file (its last
    step) is written by that flush too, not left in memory until some later write."""
    spool = SlowRemoveSpool(tmp_path / "spool" / "call_log.jsonl")
    gate, inner = Gate(False), FakeLog()
    log = DeferredCallLog(call_log=inner, database=gate, spool=spool)
    await log.save_calls([rec("a")])  # held and spooled during an outage
    gate.available = True
    await log.save_calls([rec("b")])  # queued behind "a": the flush of the queue starts
    await spool.removing.wait()  # "a" and "b" are written; the file is being removed
    await log.save_calls([rec("c")])
    spool.disk.set()
    await queue_flushed(log)
    assert log.held == 0
    assert [uid for batch in inner.batches for uid, _ in batch] == ["a", "b", "c"]
    await log.close()


async def test_a_record_the_spool_cannot_encode_does_not_stop_spooling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A value from the wire beyond what JSON carries (an integer over 64 bits) leaves that
    record out of the file with an error; the others are spooled, now and later."""
    gate = Gate(False)
    log = DeferredCallLog(call_log=FakeLog(), database=gate, spool=_spool(tmp_path))
    bad = CallRecord(
        uniqueid="bad", linkedid="bad", channel="PJSIP/t-bad", started_at=T0, queue_priority=2**70
    )
    with caplog.at_level(logging.ERROR):
        await log.save_calls([rec("a"), bad])
        await log.save_calls([rec("b")])
    assert log.held == 3
    assert any("cannot be written" in m for m in caplog.messages)
    again = DeferredCallLog(call_log=FakeLog(), database=Gate(False), spool=_spool(tmp_path))
    assert sorted(again._held) == ["a", "b"]


async def test_with_the_real_repository_records_wait_for_the_database(sqlite_url: str) -> None:
    db = Database(sqlite_url, retry=FAST, migrate=FlakyMigrations(failures=2))
    calls = CallRepository(session_factory=db.sessions)
    log = DeferredCallLog(call_log=calls, database=db)
    db.on_ready(log.flush)
    try:
        await db.start()
        await log.save_calls([rec("1.1", "general")])
        assert log.held == 1
        async with asyncio.timeout(30):
            await db.wait_until_ready()
        stored = await calls.get_call("1.1")
        assert stored is not None and stored.queue == "general"
    finally:
        await log.close()
        await db.close()


async def test_ivr_steps_are_held_and_callback_requests_go_straight_through(
    sqlite_url: str,
) -> None:
    db = Database(sqlite_url, retry=FAST, migrate=FlakyMigrations(failures=1))
    calls = CallRepository(session_factory=db.sessions)
    recorder = DeferredIvrRecorder(recorder=calls, database=db)
    db.on_ready(recorder.flush)
    steps = [IvrStep("2.1", n, T0, node=f"n{n}", kind="menu") for n in range(1, 4)]
    try:
        await db.start()
        await recorder.record_steps(steps)
        await recorder.record_steps(steps[:1])  # a repeat is the same step
        assert recorder.held == 3
        with pytest.raises(DatabaseUnavailable):  # the caller must hear it was not taken
            await recorder.record_callback(CallbackRequest("2.1", "13800138000", T0))
        async with asyncio.timeout(30):
            await db.wait_until_ready()
        assert [s.node for s in await calls.get_steps("2.1")] == ["n1", "n2", "n3"]
    finally:
        await recorder.close()
        await db.close()


# --- spool: what is held survives a restart ---------------------------------------------------


def _spool(tmp_path: Path) -> Spool[CallRecord]:
    return Spool(tmp_path / "spool" / "call_log.jsonl", decode=call_record_from_json)


async def test_held_records_survive_a_restart_and_the_file_goes_once_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate, inner = Gate(False), FakeLog()
    first = DeferredCallLog(call_log=inner, database=gate, spool=_spool(tmp_path))
    full = CallRecord(
        uniqueid="a",
        linkedid="a",
        channel="PJSIP/t-a",
        started_at=T0,
        caller_name="张三",
        ivr_path=("main", "2"),
        transfers=(Transfer(T0, "blind", "1002"),),
        variables={"CALLCENTER_DID": "4008001234"},
        queues=("sales",),
        wait_seconds=12.5,
        answered_at=T0,
        queue="sales",
    )
    await first.save_calls([rec("a"), rec("b")])
    await first.save_calls([full])
    with caplog.at_level(logging.WARNING):
        await first.close()  # the database never came back
    assert any("kept in" in m for m in _records(caplog, logging.WARNING))
    path = _spool(tmp_path).path
    assert len(path.read_bytes().splitlines()) == 3  # appended, latest line wins on reading

    # the next run: the held records come back, in their order, the latest of each call
    again = DeferredCallLog(call_log=inner, database=gate, spool=_spool(tmp_path))
    assert again.held == 2
    gate.available = True
    await again.save_calls([rec("c")])  # behind the held ones
    await again.flush()
    assert inner.batches == [[("a", "sales"), ("b", None), ("c", None)]]
    assert not path.exists()
    third = DeferredCallLog(call_log=inner, database=gate, spool=_spool(tmp_path))
    assert third.held == 0


async def test_written_records_are_the_same_records(tmp_path: Path, sqlite_url: str) -> None:
    db = Database(sqlite_url, retry=FAST, migrate=FlakyMigrations(failures=1))
    calls = CallRepository(session_factory=db.sessions)
    record = CallRecord(
        uniqueid="9.1",
        linkedid="9.1",
        channel="PJSIP/trunk-9",
        started_at=T0,
        caller_number="13800138000",
        caller_name="欧阳娜娜",
        ivr_path=("lookup", "main", "1"),
        queue="bookings",
        queues=("bookings",),
        ended_at=T0,
        end_reason="completed",
    )
    try:
        await db.start()  # down
        held = DeferredCallLog(call_log=calls, database=db, spool=_spool(tmp_path))
        await held.save_calls([record])
        await held.close()
        back = DeferredCallLog(call_log=calls, database=db, spool=_spool(tmp_path))
        db.on_ready(back.flush)
        async with asyncio.timeout(30):
            await db.wait_until_ready()
        stored = await calls.get_call("9.1")
        assert stored == record
    finally:
        await db.close()


async def test_a_torn_last_line_is_skipped_and_the_rest_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = _spool(tmp_path)
    await spool.append([rec("a"), rec("b")])
    with spool.path.open("ab") as f:
        f.write(b'{"uniqueid":"c","linked')  # killed mid-write
    with caplog.at_level(logging.ERROR):
        held = DeferredCallLog(call_log=FakeLog(), database=Gate(False), spool=_spool(tmp_path))
    assert held.held == 2
    assert any("line 3 unreadable" in r.getMessage() for r in caplog.records)


async def test_the_file_is_compacted_to_the_latest_records(tmp_path: Path) -> None:
    gate = Gate(False)
    log = DeferredCallLog(call_log=FakeLog(), database=gate, spool=_spool(tmp_path))
    for n in range(1500):
        await log.save_calls([rec("a", f"q{n}"), rec("b")])
    lines = _spool(tmp_path).path.read_bytes().splitlines()
    assert len(lines) <= 2 * log.held + 1000
    again = DeferredCallLog(call_log=FakeLog(), database=gate, spool=_spool(tmp_path))
    assert again.held == 2
    assert [r.queue for r in again._held.values()] == ["q1499", None]


async def test_ivr_steps_spool_too(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "ivr_steps.jsonl", decode=ivr_step_from_json)
    steps = [IvrStep("2.1", n, T0, node=f"n{n}", kind="menu", input="1") for n in (1, 2)]
    recorder = DeferredIvrRecorder(recorder=FakeRecorder(), database=Gate(False), spool=spool)
    await recorder.record_steps(steps)
    again = DeferredIvrRecorder(
        recorder=FakeRecorder(),
        database=Gate(False),
        spool=Spool(tmp_path / "ivr_steps.jsonl", decode=ivr_step_from_json),
    )
    assert list(again._held.values()) == steps


async def test_an_unwritable_spool_still_holds_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "spool").write_text("a file where the spool directory should be")
    gate, inner = Gate(False), FakeLog()
    with caplog.at_level(logging.ERROR):
        log = DeferredCallLog(call_log=inner, database=gate, spool=_spool(tmp_path))
        await log.save_calls([rec("a")])
    assert log.held == 1
    assert any("held in memory only" in m for m in _records(caplog, logging.ERROR))
    (tmp_path / "spool").unlink()  # writable again: the next hold writes the whole file
    await log.save_calls([rec("b")])
    again = DeferredCallLog(call_log=FakeLog(), database=gate, spool=_spool(tmp_path))
    assert [r.uniqueid for r in again._held.values()] == ["a", "b"]
    gate.available = True
    await log.flush()
    assert inner.batches == [[("a", None), ("b", None)]]


async def test_shutdown_after_a_failed_spool_write_says_what_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "spool").write_text("not a directory")
    log = DeferredCallLog(call_log=FakeLog(), database=Gate(False), spool=_spool(tmp_path))
    await log.save_calls([rec("a")])
    with caplog.at_level(logging.WARNING):
        await log.close()
    assert any("not saved (database unavailable" in m for m in _records(caplog, logging.ERROR))
    assert not any("kept in" in m for m in _records(caplog, logging.WARNING))


class FakeRecorder:
    async def record_steps(self, steps: Sequence[IvrStep]) -> None:
        return None

    async def record_callback(self, req: CallbackRequest) -> None:
        return None
