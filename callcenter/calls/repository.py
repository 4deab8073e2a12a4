"""Call-log storage: calls, the IVR steps of each call, and callback requests.

`CallRepository` also satisfies the IVR's `IvrRecorder` protocol (record_steps, record_callback),
so the ivr package stays free of database code. Every write is idempotent: saving a call again
(after a reconcile, say) overwrites its row, except that an adopted record (first seen mid-call,
e.g. after a restart) is merged into a row saved from the call's start; a step or callback
request recorded twice is kept once. An integer beyond its column's range is not stored (NULL).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal, TypedDict, cast, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Dialect,
    Integer,
    Select,
    String,
    Text,
    and_,
    case,
    func,
    literal_column,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.calls.model import (
    AbandonStage,
    CallbackRequest,
    CallRecord,
    EndReason,
    IvrStep,
    Transfer,
)
from callcenter.customers.service import normalise_number
from callcenter.db.engine import dialect_insert
from callcenter.db.models import (
    CALLBACK_STATUSES,
    CallbackRequestRow,
    CallRow,
    IvrStepRow,
    UTCDateTime,
    check_lengths,
    utcnow,
)
from callcenter.timeutil import require_aware

__all__ = [
    "CallDetail",
    "CallRepository",
    "CallSummary",
    "CallbackEntry",
    "CallbackStatus",
    "QueueSummary",
]

log = logging.getLogger(__name__)

CallbackStatus = Literal["pending", "done", "cancelled"]
_DIRECTIONS = ("inbound", "outbound")
_ABANDON_STAGES: tuple[str, ...] = get_args(AbandonStage)
_END_REASONS: tuple[str, ...] = get_args(EndReason)
_MAX_PAGE = 1000
# uniqueids per UPDATE when closing open calls: well below SQLite's 999 bound parameters
_CLOSE_BATCH = 500


def _text_limits() -> tuple[tuple[str, int], ...]:
    """(column, max length) of the calls table's text columns."""
    limits = []
    for column in CallRow.__table__.columns:
        length = getattr(column.type, "length", None)
        if isinstance(length, int):
            limits.append((column.name, length))
    return tuple(limits)


_CALL_TEXT_LIMITS = _text_limits()


def _integer_columns() -> tuple[tuple[str, int, int], ...]:
    """(column, lowest, highest) of the calls table's integer columns: PostgreSQL's integer is
    32 bits, BIGINT 64 (SQLite would store anything; both dialects get the same range)."""
    columns = []
    for column in CallRow.__table__.columns:
        if isinstance(column.type, Integer):
            bits = 63 if isinstance(column.type, BigInteger) else 31
            columns.append((column.name, -(2**bits), 2**bits - 1))
    return tuple(columns)


_CALL_INTEGERS = _integer_columns()


@lru_cache(maxsize=4096)
def _normalised(number: str, country: str) -> str:
    # one call is saved several times with the same caller number
    return normalise_number(number, country)


class _CompiledUpsert:
    """An INSERT .. ON CONFLICT of every column of the calls table, compiled once for a dialect.

    Rows go to the driver's executemany with each value converted by its column type's own
    bind processor (the same conversion SQLAlchemy applies), without SQLAlchemy's per-row
    statement bookkeeping: the call log is written on the AMI hot path."""

    def __init__(self, stmt: Any, dialect: Dialect) -> None:
        columns = [column.name for column in CallRow.__table__.columns]
        compiled = stmt.compile(dialect=dialect, column_keys=columns)
        order = compiled.positiontup
        if order is None:
            raise RuntimeError(f"{dialect.name}: expected a positional paramstyle")
        self.sql: str = compiled.string
        types = {column.name: column.type for column in CallRow.__table__.columns}
        self._keys = tuple(order)
        self._processors = tuple(
            types[key].dialect_impl(dialect).bind_processor(dialect) for key in order
        )
        self._timestamps = frozenset(k for k in order if isinstance(types[k], UTCDateTime))
        self._documents = frozenset(k for k in order if isinstance(types[k], JSON))

    def rows(self, values: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """Driver parameters for `values` (one mapping per row), converted column by column;
        a timestamp or JSON document is converted once per distinct value in the batch (rows
        share created_at, empty lists, the same IVR paths and queues)."""
        columns: list[list[Any]] = []
        for key, process in zip(self._keys, self._processors, strict=True):
            column = [row[key] for row in values]
            if process is not None:
                if key in self._timestamps:
                    converted = {value: process(value) for value in set(column)}
                    column = list(map(converted.__getitem__, column))
                elif key in self._documents:
                    # JSON of str/number lists and dicts: equal repr, equal JSON
                    texts: dict[str, Any] = {}
                    reprs = list(map(repr, column))
                    for text, value in zip(reprs, column, strict=True):
                        if text not in texts:
                            texts[text] = process(value)
                    column = list(map(texts.__getitem__, reprs))
                else:
                    column = list(map(process, column))
            columns.append(column)
        return list(zip(*columns, strict=True))


@dataclass(frozen=True, slots=True)
class CallbackEntry:
    """A stored callback request with its handling status."""

    request: CallbackRequest
    number_normalised: str
    status: CallbackStatus
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CallDetail:
    """A call with the IVR steps the caller took and the callback request it left, if any."""

    call: CallRecord
    steps: tuple[IvrStep, ...]
    callback: CallbackEntry | None


class QueueSummary(TypedDict):
    calls: int
    answered: int
    abandoned: int
    answered_within_target: int
    avg_wait_seconds: float | None


class CallSummary(TypedDict):
    """Operating statistics for [since, until). "Within target" means a call that reached a
    queue was answered after a wait of at most `answer_target_seconds` (a queued call whose wait
    is unknown, first seen mid-call, counts as within); calls that never queued (outbound,
    direct) are in neither side of `service_level`, which stays within 0..1."""

    since: datetime
    until: datetime
    answer_target_seconds: int
    calls: int
    answered: int
    abandoned: int
    abandoned_in_ivr: int
    abandoned_in_queue: int
    queued: int  # calls that reached a queue
    answered_within_target: int
    service_level: float | None  # answered_within_target / queued, 0..1; None without queued calls
    avg_wait_seconds: float | None  # over answered calls
    avg_talk_seconds: float | None  # over answered calls
    recordings: int
    callbacks: int  # callback requests made in the period
    ivr_choices: dict[str, int]
    by_queue: dict[str, QueueSummary]
    by_agent: dict[str, int]  # answered calls per agent


class CallRepository:
    """The call log. Methods open their own short session on `session_factory`."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        answer_target_seconds: int = 60,
        default_country: str = "86",
    ) -> None:
        if answer_target_seconds <= 0:
            raise ValueError("answer_target_seconds must be positive")
        self._sessions = session_factory
        self._target = answer_target_seconds
        self._country = default_country
        self._upserts: dict[str, _CompiledUpsert] = {}

    # --- writes -------------------------------------------------------------------------------

    async def save_call(self, record: CallRecord) -> None:
        """Insert or overwrite the call `record.uniqueid` (idempotent UPSERT; an adopted record
        is merged into a row that is not, see `_upsert_set`)."""
        await self.save_calls((record,))

    async def save_calls(self, records: Sequence[CallRecord]) -> None:
        """Upsert several calls in one transaction (one executemany). When a uniqueid appears
        more than once, the last record wins, as if they had been saved one by one."""
        latest = {record.uniqueid: record for record in records}
        if not latest:
            return
        now = utcnow()
        values = [
            {**self._call_values(record), "created_at": now, "updated_at": now}
            for record in latest.values()
        ]
        async with self._sessions() as session, session.begin():
            upsert = self._upsert(session)
            conn = await session.connection()
            await conn.exec_driver_sql(upsert.sql, upsert.rows(values))

    def _upsert(self, session: AsyncSession) -> _CompiledUpsert:
        """The call upsert for this session's dialect, compiled once."""
        dialect = session.get_bind().dialect
        upsert = self._upserts.get(dialect.name)
        if upsert is None:
            insert = dialect_insert(session, CallRow.__table__)
            update = _upsert_set(insert.excluded)
            stmt = insert.on_conflict_do_update(index_elements=["uniqueid"], set_=update)
            upsert = self._upserts[dialect.name] = _CompiledUpsert(stmt, dialect)
        return upsert

    async def close_open_calls(
        self,
        *,
        started_before: datetime,
        ended_at: datetime,
        keep: Callable[[str], bool],
        reason: EndReason = "ended_while_disconnected",
    ) -> int:
        """Close the calls still open in the log (ended_at NULL) that started before
        `started_before` and for whose uniqueid `keep` is false (not live, not followed): set
        ended_at and end_reason, nothing else (no hangup cause is known). Returns how many were
        closed. The open rows are listed first and updated in batches, so neither the live
        list nor the open rows meet a database's limit on bound parameters; a row saved ended
        (or reopened) meanwhile is left as it is. Idempotent."""
        started_before = require_aware("started_before", started_before)
        ended_at = require_aware("ended_at", ended_at)
        if reason not in _END_REASONS:
            raise ValueError(f"unknown end_reason {reason!r}")
        calls = CallRow.__table__.c
        still_open = and_(calls.ended_at.is_(None), calls.started_at < started_before)
        async with self._sessions() as session:
            listed = await session.scalars(select(calls.uniqueid).where(still_open))
            gone = [uniqueid for uniqueid in listed if not keep(uniqueid)]
        closed = 0
        for start in range(0, len(gone), _CLOSE_BATCH):
            stmt = (
                update(CallRow)
                .where(calls.uniqueid.in_(gone[start : start + _CLOSE_BATCH]), still_open)
                .values(ended_at=ended_at, end_reason=reason, updated_at=utcnow())
            )
            async with self._sessions() as session, session.begin():
                conn = await session.connection()
                closed += (await conn.execute(stmt)).rowcount
        return closed

    async def record_step(self, step: IvrStep) -> None:
        """Store one IVR step; a step already stored under (call_uniqueid, seq) is kept as is."""
        await self.record_steps((step,))

    async def record_steps(self, steps: Sequence[IvrStep]) -> None:
        """Store a caller's IVR steps in one transaction; steps already stored under
        (call_uniqueid, seq) are kept as they are."""
        rows: list[dict[str, Any]] = []
        for step in steps:
            values: dict[str, Any] = {
                "call_uniqueid": step.call_uniqueid,
                "seq": step.seq,
                "at": require_aware("at", step.at),
                "node": step.node,
                "kind": step.kind,
                "input": step.input,
                "result": step.result,
            }
            _check_required(values, ("call_uniqueid", "node", "kind"))
            check_lengths(IvrStepRow.__table__, values)
            rows.append(values)
        if not rows:
            return
        async with self._sessions() as session, session.begin():
            stmt = dialect_insert(session, IvrStepRow.__table__)
            await session.execute(
                stmt.on_conflict_do_nothing(index_elements=["call_uniqueid", "seq"]), rows
            )

    async def record_callback(self, req: CallbackRequest) -> None:
        """Store a callback request as pending; one per call, a repeat is ignored."""
        values: dict[str, Any] = {
            "call_uniqueid": req.call_uniqueid,
            "number_raw": req.number.strip(),
            "number": normalise_number(req.number, self._country),
            "requested_at": require_aware("requested_at", req.requested_at),
            "queue": req.queue,
            "status": "pending",
            "note": req.note,
            "updated_at": utcnow(),
        }
        _check_required(values, ("call_uniqueid", "number_raw"))
        check_lengths(CallbackRequestRow.__table__, values)
        async with self._sessions() as session, session.begin():
            stmt = dialect_insert(session, CallbackRequestRow.__table__).values(**values)
            await session.execute(stmt.on_conflict_do_nothing(index_elements=["call_uniqueid"]))

    async def set_callback_status(self, call_uniqueid: str, status: CallbackStatus) -> bool:
        """Mark a callback request done or cancelled (or pending again); False if unknown."""
        if status not in CALLBACK_STATUSES:
            raise ValueError(f"status must be one of {', '.join(CALLBACK_STATUSES)}")
        async with self._sessions() as session, session.begin():
            row = (await session.scalars(_callback_of(call_uniqueid))).first()
            if row is None:
                return False
            row.status = status
            row.updated_at = utcnow()
            return True

    # --- reads --------------------------------------------------------------------------------

    async def get_call(self, uniqueid: str) -> CallRecord | None:
        async with self._sessions() as session:
            row = await session.get(CallRow, uniqueid)
            return _to_record(row) if row is not None else None

    async def get_steps(self, uniqueid: str) -> list[IvrStep]:
        """The IVR steps of a call in order (steps exist before the call row is written)."""
        async with self._sessions() as session:
            return [_to_step(row) for row in await session.scalars(_steps_of(uniqueid))]

    async def get_call_detail(self, uniqueid: str) -> CallDetail | None:
        """The call with its IVR steps and callback request; None if the call is not logged."""
        async with self._sessions() as session:
            row = await session.get(CallRow, uniqueid)
            if row is None:
                return None
            steps = await session.scalars(_steps_of(uniqueid))
            callback = (await session.scalars(_callback_of(uniqueid))).first()
            return CallDetail(
                call=_to_record(row),
                steps=tuple(_to_step(s) for s in steps),
                callback=_to_callback(callback) if callback is not None else None,
            )

    async def list_calls(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        queue: str | None = None,
        agent: str | None = None,
        abandoned: bool | None = None,
        caller: str | None = None,
        caller_normalised: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[CallRecord]:
        """Calls started in [since, until), newest first. `agent` matches the member name or the
        interface; `caller` matches the caller number in any format; `caller_normalised` is a
        canonical number (`normalise_number`'s result, e.g. a customer's stored number), matched
        as it is: normalising "13125550100" (+1 312...) again would read it as a Chinese mobile."""
        _check_page(limit, offset)
        where = self._filters(since, until, queue, agent, abandoned, caller, caller_normalised)
        stmt = (
            select(CallRow)
            .where(*where)
            .order_by(CallRow.started_at.desc(), CallRow.uniqueid.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self._sessions() as session:
            return [_to_record(row) for row in await session.scalars(stmt)]

    async def count_calls(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        queue: str | None = None,
        agent: str | None = None,
        abandoned: bool | None = None,
        caller: str | None = None,
        caller_normalised: str | None = None,
    ) -> int:
        """How many calls `list_calls` with the same filters would page through."""
        stmt = select(func.count()).select_from(CallRow)
        where = self._filters(since, until, queue, agent, abandoned, caller, caller_normalised)
        stmt = stmt.where(*where)
        async with self._sessions() as session:
            return int(await session.scalar(stmt) or 0)

    async def list_callbacks(
        self,
        *,
        status: CallbackStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[CallbackEntry]:
        """Callback requests, oldest first (the order they should be worked)."""
        _check_page(limit, offset)
        stmt = select(CallbackRequestRow)
        if status is not None:
            stmt = stmt.where(CallbackRequestRow.status == status)
        if since is not None:
            stmt = stmt.where(CallbackRequestRow.requested_at >= require_aware("since", since))
        if until is not None:
            stmt = stmt.where(CallbackRequestRow.requested_at < require_aware("until", until))
        stmt = stmt.order_by(CallbackRequestRow.requested_at, CallbackRequestRow.id)
        async with self._sessions() as session:
            rows = await session.scalars(stmt.limit(limit).offset(offset))
            return [_to_callback(row) for row in rows]

    async def summary(self, since: datetime, until: datetime) -> CallSummary:
        """Operating statistics for calls started in [since, until) (see CallSummary)."""
        since = require_aware("since", since)
        until = require_aware("until", until)
        if until <= since:
            raise ValueError("until must be later than since")
        period = and_(CallRow.started_at >= since, CallRow.started_at < until)
        answered = CallRow.answered_at.is_not(None)
        # the same calls as the service level's denominator (queued): never above 100%
        within = and_(
            answered,
            CallRow.queue.is_not(None),
            func.coalesce(CallRow.wait_seconds, 0.0) <= self._target,
        )
        totals = select(
            func.count(),
            _count_if(answered),
            _count_if(CallRow.abandoned.is_(True)),
            _count_if(and_(CallRow.abandoned.is_(True), CallRow.abandon_stage == "ivr")),
            _count_if(and_(CallRow.abandoned.is_(True), CallRow.abandon_stage == "queue")),
            _count_if(CallRow.queue.is_not(None)),
            _count_if(within),
            func.avg(case((answered, CallRow.wait_seconds))),
            func.avg(case((answered, CallRow.talk_seconds))),
            _count_if(CallRow.recording_file.is_not(None)),
        ).where(period)
        per_queue = (
            select(
                CallRow.queue,
                func.count(),
                _count_if(answered),
                _count_if(CallRow.abandoned.is_(True)),
                _count_if(within),
                func.avg(case((answered, CallRow.wait_seconds))),
            )
            .where(period, CallRow.queue.is_not(None))
            .group_by(CallRow.queue)
        )
        per_agent = (
            select(CallRow.agent, func.count())
            .where(period, answered, CallRow.agent.is_not(None))
            .group_by(CallRow.agent)
        )
        choices = (
            select(CallRow.ivr_choice, func.count())
            .where(period, CallRow.ivr_choice.is_not(None))
            .group_by(CallRow.ivr_choice)
        )
        callbacks = select(func.count()).where(
            CallbackRequestRow.requested_at >= since, CallbackRequestRow.requested_at < until
        )
        async with self._sessions() as session:
            t = (await session.execute(totals)).one()
            queues = (await session.execute(per_queue)).all()
            agents = (await session.execute(per_agent)).all()
            ivr = (await session.execute(choices)).all()
            n_callbacks = int(await session.scalar(callbacks) or 0)
        queued = int(t[5])
        within_target = int(t[6])
        return CallSummary(
            since=since,
            until=until,
            answer_target_seconds=self._target,
            calls=int(t[0]),
            answered=int(t[1]),
            abandoned=int(t[2]),
            abandoned_in_ivr=int(t[3]),
            abandoned_in_queue=int(t[4]),
            queued=queued,
            answered_within_target=within_target,
            service_level=within_target / queued if queued else None,
            avg_wait_seconds=_float(t[7]),
            avg_talk_seconds=_float(t[8]),
            recordings=int(t[9]),
            callbacks=n_callbacks,
            ivr_choices={str(choice): int(n) for choice, n in ivr},
            by_queue={
                str(q[0]): QueueSummary(
                    calls=int(q[1]),
                    answered=int(q[2]),
                    abandoned=int(q[3]),
                    answered_within_target=int(q[4]),
                    avg_wait_seconds=_float(q[5]),
                )
                for q in queues
            },
            by_agent={str(name): int(n) for name, n in agents},
        )

    # --- helpers ------------------------------------------------------------------------------

    def _call_values(self, r: CallRecord) -> dict[str, Any]:
        if r.direction not in _DIRECTIONS:
            raise ValueError(f"direction must be inbound or outbound, got {r.direction!r}")
        if r.abandon_stage is not None and r.abandon_stage not in _ABANDON_STAGES:
            raise ValueError(f"unknown abandon_stage {r.abandon_stage!r}")
        if r.end_reason is not None and r.end_reason not in _END_REASONS:
            raise ValueError(f"unknown end_reason {r.end_reason!r}")
        values: dict[str, Any] = {
            "uniqueid": r.uniqueid,
            "linkedid": r.linkedid,
            "channel": r.channel,
            "started_at": require_aware("started_at", r.started_at),
            "caller_number": r.caller_number,
            "caller_number_normalised": _normalised(r.caller_number, self._country),
            "caller_name": r.caller_name,
            "dialed_number": r.dialed_number,
            "direction": r.direction,
            "ivr_path": [str(p) for p in r.ivr_path],
            "ivr_choice": r.ivr_choice,
            "queue": r.queue,
            "queue_priority": r.queue_priority,
            "queue_joined_at": _aware_or_none("queue_joined_at", r.queue_joined_at),
            "queue_left_at": _aware_or_none("queue_left_at", r.queue_left_at),
            "agent": r.agent,
            "agent_interface": r.agent_interface,
            "answered_at": _aware_or_none("answered_at", r.answered_at),
            "ended_at": _aware_or_none("ended_at", r.ended_at),
            "wait_seconds": r.wait_seconds,
            "talk_seconds": r.talk_seconds,
            "abandoned": bool(r.abandoned),
            "abandon_stage": r.abandon_stage,
            "abandon_after_seconds": r.abandon_after_seconds,
            "transfers": [_transfer_json(t) for t in r.transfers],
            "hangup_cause": r.hangup_cause,
            "hangup_cause_text": r.hangup_cause_text,
            "recording_file": r.recording_file,
            "end_reason": r.end_reason,
            "variables": {str(k): str(v) for k, v in r.variables.items()},
            "queues": [str(q) for q in r.queues],
            "agents": [str(a) for a in r.agents],
            "adopted": bool(r.adopted),
        }
        _check_required(values, ("uniqueid",))
        for name, lowest, highest in _CALL_INTEGERS:
            number = values[name]
            if number is not None and not lowest <= number <= highest:
                # from the wire (a dialplan's CALLCENTER_QUEUE_PRIO, a hangup cause): keep the call
                log.warning("call %s: %s %d out of range, not stored", r.uniqueid, name, number)
                values[name] = None
        for name, length in _CALL_TEXT_LIMITS:  # check_lengths(CallRow), on the hot path
            value = values.get(name)
            if isinstance(value, str) and len(value) > length:
                check_lengths(CallRow.__table__, {name: value})  # raises its clear error
        return values

    def _filters(
        self,
        since: datetime | None,
        until: datetime | None,
        queue: str | None,
        agent: str | None,
        abandoned: bool | None,
        caller: str | None,
        caller_normalised: str | None,
    ) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if since is not None:
            where.append(CallRow.started_at >= require_aware("since", since))
        if until is not None:
            where.append(CallRow.started_at < require_aware("until", until))
        if queue is not None:
            where.append(CallRow.queue == queue)
        if agent is not None:
            where.append(or_(CallRow.agent == agent, CallRow.agent_interface == agent))
        if abandoned is not None:
            where.append(CallRow.abandoned.is_(abandoned))
        if caller is not None:
            normalised = normalise_number(caller, self._country)
            if normalised:
                where.append(CallRow.caller_number_normalised == normalised)
            else:  # "anonymous" and friends: match what was stored
                where.append(CallRow.caller_number == caller)
        if caller_normalised is not None:
            where.append(CallRow.caller_number_normalised == caller_normalised)
        return where


# Kept from the stored row when an adopted record meets one followed from the call's start:
# the adopted start time is approximate and an adopted call always looks inbound.
_KEPT_FROM_START = frozenset({"started_at", "direction", "adopted"})


def _upsert_set(excluded: Any) -> dict[str, ColumnElement[Any]]:
    """The ON CONFLICT DO UPDATE assignments of the call upsert.

    A record overwrites the stored row, except when the record is adopted (the call was first
    seen mid-call, e.g. after a restart) and the stored row is not: then the two are merged.
    The stored start time, direction and adopted=false stay; every other fact the adopted
    record has (answer, agent, end...) is taken, and the stored one fills what it lacks (NULL,
    "" or an empty list/document). A stored non-empty list or document (IVR path, queues,
    variables, agents, transfers) is kept: the old process saw the call from its start."""
    calls = CallRow.__table__.c
    merge = and_(excluded.adopted, not_(calls.adopted))
    update: dict[str, ColumnElement[Any]] = {}
    for column in CallRow.__table__.columns:
        name = column.name
        new, old = excluded[name], calls[name]
        if name in ("uniqueid", "created_at"):
            continue
        if name in _KEPT_FROM_START:
            merged: ColumnElement[Any] = old
        elif name == "caller_number_normalised":  # follows the caller number kept
            merged = case((excluded.caller_number == literal_column("''"), old), else_=new)
        elif isinstance(column.type, JSON):
            empty: ColumnElement[str] = literal_column("'{}'" if name == "variables" else "'[]'")
            merged = case((old.cast(Text) == empty, new), else_=old)
        elif column.nullable:
            merged = func.coalesce(new, old)
        elif isinstance(column.type, String):
            merged = func.coalesce(func.nullif(new, literal_column("''")), old)
        else:  # abandoned, updated_at: the newer record's
            update[name] = new
            continue
        update[name] = case((merge, merged), else_=new)
    return update


def _steps_of(uniqueid: str) -> Select[IvrStepRow]:
    return select(IvrStepRow).where(IvrStepRow.call_uniqueid == uniqueid).order_by(IvrStepRow.seq)


def _callback_of(uniqueid: str) -> Select[CallbackRequestRow]:
    return select(CallbackRequestRow).where(CallbackRequestRow.call_uniqueid == uniqueid)


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _aware_or_none(name: str, value: datetime | None) -> datetime | None:
    return None if value is None else require_aware(name, value)


def _check_required(values: Mapping[str, Any], names: Sequence[str]) -> None:
    for name in names:
        if not values[name]:
            raise ValueError(f"{name} must not be empty")


def _check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= _MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {_MAX_PAGE}, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must not be negative, got {offset}")


def _transfer_json(t: Transfer) -> dict[str, str]:
    out = {
        "at": require_aware("transfer.at", t.at).astimezone(UTC).isoformat(),
        "kind": t.kind,
        "target": t.target,
        "source": t.source,
    }
    if t.answered_at is not None:
        answered = require_aware("transfer.answered_at", t.answered_at)
        out["answered_at"] = answered.astimezone(UTC).isoformat()
    return out


def _stored_time(value: object) -> datetime:
    at = datetime.fromisoformat(str(value))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _transfer_from_json(data: Mapping[str, Any]) -> Transfer:
    kind: Literal["blind", "attended"] = "attended" if data.get("kind") == "attended" else "blind"
    answered = data.get("answered_at")
    return Transfer(
        at=_stored_time(data["at"]),
        kind=kind,
        target=str(data.get("target", "")),
        source=str(data.get("source", "")),
        answered_at=_stored_time(answered) if answered else None,
    )


def _to_record(row: CallRow) -> CallRecord:
    return CallRecord(
        uniqueid=row.uniqueid,
        linkedid=row.linkedid,
        channel=row.channel,
        started_at=row.started_at,
        caller_number=row.caller_number,
        caller_name=row.caller_name,
        dialed_number=row.dialed_number,
        direction="outbound" if row.direction == "outbound" else "inbound",
        ivr_path=tuple(str(p) for p in row.ivr_path or ()),
        ivr_choice=row.ivr_choice,
        queue=row.queue,
        queue_priority=row.queue_priority,
        queue_joined_at=row.queue_joined_at,
        queue_left_at=row.queue_left_at,
        agent=row.agent,
        agent_interface=row.agent_interface,
        answered_at=row.answered_at,
        ended_at=row.ended_at,
        wait_seconds=row.wait_seconds,
        talk_seconds=row.talk_seconds,
        abandoned=bool(row.abandoned),
        abandon_stage=cast(AbandonStage | None, row.abandon_stage),
        abandon_after_seconds=row.abandon_after_seconds,
        transfers=tuple(_transfer_from_json(t) for t in row.transfers or ()),
        hangup_cause=row.hangup_cause,
        hangup_cause_text=row.hangup_cause_text,
        recording_file=row.recording_file,
        end_reason=cast(EndReason | None, row.end_reason),
        variables={str(k): str(v) for k, v in (row.variables or {}).items()},
        queues=tuple(str(q) for q in row.queues or ()),
        agents=tuple(str(a) for a in row.agents or ()),
        adopted=bool(row.adopted),
    )


def _to_step(row: IvrStepRow) -> IvrStep:
    return IvrStep(
        call_uniqueid=row.call_uniqueid,
        seq=row.seq,
        at=row.at,
        node=row.node,
        kind=row.kind,
        input=row.input,
        result=row.result,
    )


def _to_callback(row: CallbackRequestRow) -> CallbackEntry:
    return CallbackEntry(
        request=CallbackRequest(
            call_uniqueid=row.call_uniqueid,
            number=row.number_raw,
            requested_at=row.requested_at,
            queue=row.queue,
            note=row.note,
        ),
        number_normalised=row.number,
        status=cast(CallbackStatus, row.status),
        updated_at=row.updated_at,
    )
