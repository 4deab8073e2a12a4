"""Storage of bookings, complaints, their timeline (case_events) and call dispositions.

Every change runs in one transaction that reads the row (FOR UPDATE on PostgreSQL), lets the
pure rules in `callcenter.tickets.service` decide, writes the row and appends the timeline entry
with who, when, what, before and after.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    UnaryExpression,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from callcenter.customers.service import normalise_number
from callcenter.db.engine import LIKE_ESCAPE, contains_pattern, dialect_insert
from callcenter.db.models import (
    FIRST_RESPONSE_PENDING,
    RESOLUTION_PENDING,
    BookingRow,
    CaseEventRow,
    ComplaintCallRow,
    ComplaintRow,
    CustomerNumberRow,
    CustomerRow,
    DispositionRow,
    UserRow,
    UTCDateTime,
    check_lengths,
)
from callcenter.ivr.calendar import BusinessCalendar
from callcenter.tickets.model import (
    Booking,
    BookingStatus,
    CaseEvent,
    CaseType,
    Complaint,
    ComplaintStats,
    ComplaintStatus,
    Disposition,
    ListOrder,
    PagePosition,
    Severity,
)
from callcenter.tickets.service import (
    DEFAULT_SLA,
    FRONT_ROLES,
    HANDLER_ROLES,
    BreachKind,
    ComplaintDecision,
    NotAllowed,
    SlaTarget,
    TicketRuleError,
    as_utc,
    booking_transition,
    complaint_deadlines,
    complaint_transition,
    due_breaches,
    handover,
    initial_owner,
    take,
)

__all__ = [
    "BookingFilter",
    "Breach",
    "CaseNotFoundError",
    "ComplaintFilter",
    "CustomerMissingError",
    "Listing",
    "TicketRepository",
    "UserMissingError",
    "Visibility",
]

Clock = Callable[[], datetime]
MAX_SEARCH_CUSTOMERS: Final = 200
MAX_ATTEMPTS: Final = 5
# list totals are exact up to this many matches, estimated above (PostgreSQL)
COUNT_CAP: Final = 1_000
T = TypeVar("T")


class CaseNotFoundError(LookupError):
    def __init__(self, case_type: str, case_id: int) -> None:
        super().__init__(f"no {case_type} with id {case_id}")
        self.case_type = case_type
        self.case_id = case_id


class CustomerMissingError(LookupError):
    def __init__(self, customer_id: int) -> None:
        super().__init__(f"no customer with id {customer_id}")
        self.customer_id = customer_id


class UserMissingError(LookupError):
    def __init__(self, user_id: int) -> None:
        super().__init__(f"no user with id {user_id}")
        self.user_id = user_id


@dataclass(frozen=True, slots=True)
class Visibility:
    """Whose cases a person sees: everybody's (`user_ids` None) or the cases created or owned
    by one of `user_ids` (themselves and their group) - plus, for complaints, the unowned ones
    waiting for the first agent to take them."""

    user_ids: frozenset[int] | None = None

    @property
    def everything(self) -> bool:
        return self.user_ids is None


@dataclass(frozen=True, slots=True)
class Listing(Generic[T]):
    """One page of a list: `total` is exact when `exact`, else PostgreSQL's estimate (lists
    matching more than COUNT_CAP rows); `next` is where the next page starts (None: this is
    the last one)."""

    items: list[T]
    total: int
    exact: bool = True
    next: PagePosition | None = None


@dataclass(frozen=True, slots=True)
class BookingFilter:
    since: datetime | None = None
    until: datetime | None = None
    status: BookingStatus | None = None
    customer_id: int | None = None
    created_by: int | None = None
    urgent: bool | None = None
    call_uniqueid: str | None = None


@dataclass(frozen=True, slots=True)
class ComplaintFilter:
    since: datetime | None = None
    until: datetime | None = None
    statuses: tuple[ComplaintStatus, ...] = ()
    customer_id: int | None = None
    created_by: int | None = None
    owner_id: int | None = None
    unowned: bool | None = None
    category: str | None = None
    severity: Severity | None = None
    overdue: bool | None = None
    q: str | None = None


@dataclass(frozen=True, slots=True)
class Breach:
    complaint: Complaint
    kind: BreachKind


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def _diff(row: Any, changes: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(before, after) of the fields that really change."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key, value in changes.items():
        old = getattr(row, key)
        if old != value:
            before[key] = _json(old)
            after[key] = _json(value)
    return before, after


class TicketRepository:
    """Bookings, complaints, their timeline and dispositions."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        calendar: BusinessCalendar | Callable[[], BusinessCalendar],
        clock: Clock,
        sla: Mapping[Severity, SlaTarget] = DEFAULT_SLA,
        default_country: str = "86",
    ) -> None:
        self._sessions = session_factory
        # a callable gives the current calendar (the flow registry reloads calendar.yaml)
        self._calendar_of: Callable[[], BusinessCalendar] = (
            (lambda: calendar) if isinstance(calendar, BusinessCalendar) else calendar
        )
        self._clock = clock
        self._sla = sla
        self._country = default_country

    @property
    def calendar(self) -> BusinessCalendar:
        return self._calendar_of()

    def now(self) -> datetime:
        return as_utc("clock", self._clock())

    # -------------------------------------------------------------------------- visibility

    async def visibility(
        self, *, user_id: int, role: str, group: str | None, kind: CaseType
    ) -> Visibility:
        """Agents see their own and their group's cases; complaint specialists see every
        complaint (they own and handle them); QA, supervisors and admins see everything."""
        if role not in FRONT_ROLES or (role == "specialist" and kind == "complaint"):
            return Visibility()
        ids = {user_id}
        if group:
            async with self._sessions() as session:
                ids.update(await session.scalars(select(UserRow.id).where(UserRow.group == group)))
        return Visibility(frozenset(ids))

    @staticmethod
    def can_see_booking(booking: Booking, visibility: Visibility) -> bool:
        return visibility.user_ids is None or booking.created_by in visibility.user_ids

    @staticmethod
    def can_see_complaint(complaint: Complaint, visibility: Visibility) -> bool:
        ids = visibility.user_ids
        return (
            ids is None
            or complaint.owner_id is None  # unowned: waiting for the first agent to take it
            or complaint.created_by in ids
            or complaint.owner_id in ids
        )

    # -------------------------------------------------------------------------- bookings

    async def create_booking(
        self,
        *,
        actor_id: int,
        customer_id: int,
        item: str,
        scheduled_for: datetime | None = None,
        for_whom: str = "",
        urgent: bool = False,
        notes: str = "",
        call_uniqueid: str | None = None,
    ) -> Booking:
        now = self.now()
        values: dict[str, Any] = {
            "customer_id": customer_id,
            "item": item.strip(),
            "scheduled_for": None
            if scheduled_for is None
            else as_utc("scheduled_for", scheduled_for),
            "for_whom": for_whom,
            "urgent": urgent,
            "notes": notes,
            "call_uniqueid": call_uniqueid,
        }
        if not values["item"]:
            raise ValueError("a booking needs an item")
        check_lengths(BookingRow.__table__, values)
        async with self._sessions() as session, session.begin():
            await _require_customer(session, customer_id)
            row = BookingRow(
                **values, status="new", created_by=actor_id, created_at=now, updated_at=now
            )
            session.add(row)
            await session.flush()
            _event(
                session,
                "booking",
                row.id,
                now,
                actor_id,
                "create",
                {},
                {k: _json(v) for k, v in values.items()} | {"status": "new"},
            )
            return _to_booking(row)

    async def get_booking(self, booking_id: int) -> Booking | None:
        async with self._sessions() as session:
            row = await session.get(BookingRow, booking_id)
            return _to_booking(row) if row is not None else None

    async def list_bookings(
        self,
        flt: BookingFilter,
        visibility: Visibility,
        *,
        limit: int = 50,
        offset: int = 0,
        order: ListOrder = "newest",
        after: PagePosition | None = None,
    ) -> Listing[Booking]:
        """Newest (or oldest) first from `after` (a page's `next`), and the number matching
        (see Listing)."""
        where = _booking_where(flt, visibility)
        keyset, order_by = _keyset(BookingRow, order, after)
        stmt = (
            select(BookingRow)
            .where(*where, *keyset)
            .order_by(*order_by)
            .limit(limit + 1)
            .offset(offset)
        )
        async with self._sessions() as session:
            rows = list(await session.scalars(stmt))
            total, exact = await _page_total(session, select(BookingRow.id).where(*where))
        rows, following = _page(rows, limit, order)
        return Listing([_to_booking(r) for r in rows], total, exact, following)

    async def update_booking(
        self, booking_id: int, *, actor_id: int, changes: Mapping[str, Any], note: str = ""
    ) -> Booking:
        allowed = {"item", "scheduled_for", "for_whom", "urgent", "notes"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
        values = dict(changes)
        if values.get("scheduled_for") is not None:
            values["scheduled_for"] = as_utc("scheduled_for", values["scheduled_for"])
        check_lengths(BookingRow.__table__, values)

        async def attempt() -> Booking:
            async with self._sessions() as session, session.begin():
                row = await _locked(session, BookingRow, booking_id, "booking")
                if row.status in ("fulfilled", "cancelled"):
                    raise TicketRuleError(
                        f"a {row.status} booking cannot be changed", code="booking_final"
                    )
                return await self._apply_booking(session, row, actor_id, "update", values, note)

        return await _retrying(attempt)

    async def change_booking_status(
        self, booking_id: int, *, actor_id: int, status: BookingStatus, note: str = ""
    ) -> Booking:
        async def attempt() -> Booking:
            async with self._sessions() as session, session.begin():
                row = await _locked(session, BookingRow, booking_id, "booking")
                booking_transition(cast(BookingStatus, row.status), status)
                return await self._apply_booking(
                    session, row, actor_id, status, {"status": status}, note
                )

        return await _retrying(attempt)

    async def _apply_booking(
        self,
        session: AsyncSession,
        row: BookingRow,
        actor_id: int,
        action: str,
        changes: Mapping[str, Any],
        note: str,
    ) -> Booking:
        now = self.now()
        before, after = _diff(row, changes)
        for key, value in changes.items():
            setattr(row, key, value)
        row.updated_at = now
        _event(session, "booking", row.id, now, actor_id, action, before, after, note)
        await session.flush()
        return _to_booking(row)

    # -------------------------------------------------------------------------- complaints

    async def create_complaint(
        self,
        *,
        actor_id: int,
        actor_role: str,
        customer_id: int,
        category: str,
        description: str,
        severity: Severity = "medium",
        call_uniqueid: str | None = None,
    ) -> Complaint:
        """File a complaint; from a call, the front-line agent filing it owns it (首问负责制)."""
        now = self.now()
        first_due, resolution_due = complaint_deadlines(self.calendar, now, severity, self._sla)
        owner = initial_owner(
            creator_id=actor_id, creator_role=actor_role, from_call=call_uniqueid is not None
        )
        values: dict[str, Any] = {
            "customer_id": customer_id,
            "category": category.strip(),
            "severity": severity,
            "description": description.strip(),
            "status": "open",
            "owner_id": owner,
            "created_by": actor_id,
            "first_response_due": first_due,
            "resolution_due": resolution_due,
        }
        if not values["category"] or not values["description"]:
            raise ValueError("a complaint needs a category and a description")
        check_lengths(ComplaintRow.__table__, values)
        if call_uniqueid is not None:
            check_lengths(ComplaintCallRow.__table__, {"call_uniqueid": call_uniqueid})
        async with self._sessions() as session, session.begin():
            await _require_customer(session, customer_id)
            row = ComplaintRow(**values, reopen_count=0, created_at=now, updated_at=now)
            session.add(row)
            await session.flush()
            calls: tuple[str, ...] = ()
            if call_uniqueid is not None:
                session.add(
                    ComplaintCallRow(
                        complaint_id=row.id, call_uniqueid=call_uniqueid, linked_at=now
                    )
                )
                calls = (call_uniqueid,)
            after = {k: _json(v) for k, v in values.items()}
            if calls:
                after["calls"] = list(calls)
            _event(session, "complaint", row.id, now, actor_id, "create", {}, after)
            return _to_complaint(row, calls)

    async def get_complaint(self, complaint_id: int) -> Complaint | None:
        async with self._sessions() as session:
            row = await session.get(ComplaintRow, complaint_id)
            if row is None:
                return None
            return _to_complaint(row, await _calls_of(session, row.id))

    async def list_complaints(
        self,
        flt: ComplaintFilter,
        visibility: Visibility,
        *,
        limit: int = 50,
        offset: int = 0,
        order: ListOrder = "newest",
        after: PagePosition | None = None,
    ) -> Listing[Complaint]:
        """Newest (or oldest) first from `after` (a page's `next`), and the number matching
        (see Listing)."""
        now = self.now()
        keyset, order_by = _keyset(ComplaintRow, order, after)
        async with self._sessions() as session:
            where = await self._complaint_where(session, flt, visibility, now)
            stmt = (
                select(ComplaintRow)
                .where(*where, *keyset)
                .order_by(*order_by)
                .limit(limit + 1)
                .offset(offset)
            )
            rows, following = _page(list(await session.scalars(stmt)), limit, order)
            total, exact = await _page_total(session, select(ComplaintRow.id).where(*where))
            calls = await _calls_of_many(session, [r.id for r in rows])
        items = [_to_complaint(r, calls.get(r.id, ())) for r in rows]
        return Listing(items, total, exact, following)

    async def take_complaint(
        self, complaint_id: int, *, actor_id: int, actor_role: str
    ) -> Complaint:
        return await self._decide(
            complaint_id,
            actor_id,
            lambda c, _now: take(c, user_id=actor_id, role=actor_role),
        )

    async def handover_complaint(
        self, complaint_id: int, *, actor_id: int, actor_role: str, to_user_id: int, reason: str
    ) -> Complaint:
        async with self._sessions() as session:
            target = await session.get(UserRow, to_user_id)
            if target is None:
                raise UserMissingError(to_user_id)
            to_role, to_disabled = target.role, target.disabled
        return await self._decide(
            complaint_id,
            actor_id,
            lambda c, _now: handover(
                c,
                user_id=actor_id,
                role=actor_role,
                to_user_id=to_user_id,
                to_role=to_role,
                to_disabled=to_disabled,
                reason=reason,
            ),
            note=reason.strip(),
        )

    async def change_complaint_status(
        self,
        complaint_id: int,
        *,
        actor_id: int,
        actor_role: str,
        status: ComplaintStatus,
        note: str = "",
        outcome: str | None = None,
        customer_informed: bool = False,
    ) -> Complaint:
        return await self._decide(
            complaint_id,
            actor_id,
            lambda c, now: complaint_transition(
                c,
                status,
                user_id=actor_id,
                role=actor_role,
                now=now,
                outcome=outcome,
                customer_informed=customer_informed,
            ),
            note=note,
        )

    async def add_complaint_note(
        self,
        complaint_id: int,
        *,
        actor_id: int,
        actor_role: str,
        note: str,
        customer_informed: bool = False,
    ) -> Complaint:
        """A note on the timeline; `customer_informed` records that the customer was told the
        outcome (required before closing). Owner or supervisor only."""

        def decide(c: Complaint, now: datetime) -> ComplaintDecision:
            _check_actor(c, actor_id, actor_role)
            if customer_informed:
                if c.status not in ("resolved", "closed"):
                    raise TicketRuleError(
                        "the customer can be told the outcome once it is resolved",
                        code="not_resolved",
                    )
                return ComplaintDecision("customer_informed", {"customer_informed_at": now})
            return ComplaintDecision("note", {})

        return await self._decide(complaint_id, actor_id, decide, note=note.strip())

    async def update_complaint(
        self,
        complaint_id: int,
        *,
        actor_id: int,
        actor_role: str,
        changes: Mapping[str, Any],
        note: str = "",
    ) -> Complaint:
        """Change category/description/severity; a new severity re-computes the deadlines from
        the filing time."""
        unknown = set(changes) - {"category", "severity", "description"}
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
        check_lengths(ComplaintRow.__table__, changes)

        def decide(c: Complaint, _now: datetime) -> ComplaintDecision:
            _check_actor(c, actor_id, actor_role)
            if c.status == "closed":
                raise TicketRuleError(
                    "a closed complaint cannot be edited", code="complaint_closed"
                )
            values = dict(changes)
            severity = values.get("severity")
            if severity is not None and severity != c.severity:
                first, resolution = complaint_deadlines(
                    self.calendar, c.created_at, severity, self._sla
                )
                values.update(first_response_due=first, resolution_due=resolution)
            return ComplaintDecision("update", values)

        return await self._decide(complaint_id, actor_id, decide, note=note)

    async def link_call(
        self, complaint_id: int, *, actor_id: int, actor_role: str, call_uniqueid: str
    ) -> Complaint:
        """Attach another call to the complaint (idempotent; no timeline entry if already on)."""
        check_lengths(ComplaintCallRow.__table__, {"call_uniqueid": call_uniqueid})
        now = self.now()
        async with self._sessions() as session, session.begin():
            row = await _locked(session, ComplaintRow, complaint_id, "complaint")
            calls = await _calls_of(session, row.id)
            current = _to_complaint(row, calls)
            _check_actor(current, actor_id, actor_role, allow_unowned=True)
            if call_uniqueid not in calls:
                stmt = dialect_insert(session, ComplaintCallRow.__table__).values(
                    complaint_id=row.id, call_uniqueid=call_uniqueid, linked_at=now
                )
                await session.execute(stmt.on_conflict_do_nothing())
                _event(
                    session,
                    "complaint",
                    row.id,
                    now,
                    actor_id,
                    "link_call",
                    {"calls": list(calls)},
                    {"calls": [*calls, call_uniqueid]},
                )
                row.updated_at = now
                calls = (*calls, call_uniqueid)
            return _to_complaint(row, calls)

    async def _decide(
        self,
        complaint_id: int,
        actor_id: int | None,
        decide: Callable[[Complaint, datetime], ComplaintDecision],
        *,
        note: str = "",
    ) -> Complaint:
        now = self.now()

        async def attempt() -> Complaint:
            async with self._sessions() as session, session.begin():
                row = await _locked(session, ComplaintRow, complaint_id, "complaint")
                calls = await _calls_of(session, row.id)
                decision = decide(_to_complaint(row, calls), now)
                before, after = _diff(row, decision.changes)
                for key, value in decision.changes.items():
                    setattr(row, key, value)
                # every action bumps the version, so a concurrent writer's read is stale
                row.updated_at = now
                _event(
                    session,
                    "complaint",
                    row.id,
                    now,
                    actor_id,
                    decision.action,
                    before,
                    after,
                    note,
                )
                await session.flush()
                return _to_complaint(row, calls)

        return await _retrying(attempt)

    async def _complaint_where(
        self,
        session: AsyncSession,
        flt: ComplaintFilter,
        visibility: Visibility,
        now: datetime,
    ) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if visibility.user_ids is not None:
            ids = sorted(visibility.user_ids)
            where.append(
                or_(
                    ComplaintRow.created_by.in_(ids),
                    ComplaintRow.owner_id.in_(ids),
                    ComplaintRow.owner_id.is_(None),  # the pool waiting to be taken
                )
            )
        if flt.since is not None:
            where.append(ComplaintRow.created_at >= as_utc("since", flt.since))
        if flt.until is not None:
            where.append(ComplaintRow.created_at < as_utc("until", flt.until))
        if flt.statuses:
            where.append(ComplaintRow.status.in_(flt.statuses))
        if flt.customer_id is not None:
            where.append(ComplaintRow.customer_id == flt.customer_id)
        if flt.created_by is not None:
            where.append(ComplaintRow.created_by == flt.created_by)
        if flt.owner_id is not None:
            where.append(ComplaintRow.owner_id == flt.owner_id)
        if flt.unowned is not None:
            where.append(
                ComplaintRow.owner_id.is_(None)
                if flt.unowned
                else ComplaintRow.owner_id.is_not(None)
            )
        if flt.category is not None:
            where.append(ComplaintRow.category == flt.category)
        if flt.severity is not None:
            where.append(ComplaintRow.severity == flt.severity)
        if flt.overdue is not None:
            overdue = _overdue(now)
            where.append(overdue if flt.overdue else ~overdue)
        if flt.q:
            where.append(await self._search(session, flt.q))
        return where

    async def _search(self, session: AsyncSession, text: str) -> ColumnElement[bool]:
        """A complaint id, or a customer's number (any format) or name."""
        text = text.strip()
        conditions: list[ColumnElement[bool]] = []
        if text.isascii() and text.isdigit() and len(text) <= 9:
            conditions.append(ComplaintRow.id == int(text))
        normalised = normalise_number(text, self._country)
        customers: set[int] = set()
        if normalised:
            customers.update(
                await session.scalars(
                    select(CustomerNumberRow.customer_id).where(
                        CustomerNumberRow.normalised == normalised
                    )
                )
            )
        if not normalised:  # a phone number is not also looked for in names
            customers.update(
                await session.scalars(
                    select(CustomerRow.id)
                    .where(CustomerRow.name.ilike(contains_pattern(text), escape=LIKE_ESCAPE))
                    .limit(MAX_SEARCH_CUSTOMERS)
                )
            )
        if customers:
            conditions.append(ComplaintRow.customer_id.in_(sorted(customers)))
        return or_(*conditions) if conditions else ComplaintRow.id.is_(None)

    async def complaint_stats(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> ComplaintStats:
        """Counts by category, status, outcome and severity; how many are overdue now and how
        many ever breached a deadline (投诉统计报表)."""
        now = self.now()
        where: list[ColumnElement[bool]] = []
        if since is not None:
            where.append(ComplaintRow.created_at >= as_utc("since", since))
        if until is not None:
            where.append(ComplaintRow.created_at < as_utc("until", until))

        async def grouped(session: AsyncSession, column: Any) -> dict[str, int]:
            stmt = select(column, func.count()).where(*where).group_by(column)
            return {
                str(k if k is not None else "none"): int(n) for k, n in await session.execute(stmt)
            }

        async with self._sessions() as session:
            by_status = await grouped(session, ComplaintRow.status)
            by_category = await grouped(session, ComplaintRow.category)
            by_outcome = await grouped(session, ComplaintRow.outcome)
            by_severity = await grouped(session, ComplaintRow.severity)
            overdue = await _count(session, select(ComplaintRow.id).where(*where, _overdue(now)))
            breached = await _count(
                session,
                select(ComplaintRow.id).where(
                    *where,
                    or_(
                        ComplaintRow.first_response_breached_at.is_not(None),
                        ComplaintRow.resolution_breached_at.is_not(None),
                    ),
                ),
            )
        return ComplaintStats(
            total=sum(by_status.values()),
            by_category=by_category,
            by_status=by_status,
            by_outcome=by_outcome,
            by_severity=by_severity,
            overdue=overdue,
            breached=breached,
        )

    # -------------------------------------------------------------------------- breaches

    async def record_breaches(self, *, limit: int = 500) -> list[Breach]:
        """Stamp deadlines missed as of now and return them; each breach is returned once
        (the stamp is set with a guarded UPDATE, so two checkers never both report it)."""
        now = self.now()
        found: list[Breach] = []
        # two scans, each over its partial index (only deadlines still watched are in it)
        first_due = (
            select(ComplaintRow.id)
            .where(text(FIRST_RESPONSE_PENDING), ComplaintRow.first_response_due < now)
            .order_by(ComplaintRow.first_response_due)
            .limit(limit)
        )
        resolution_due = (
            select(ComplaintRow.id)
            .where(text(RESOLUTION_PENDING), ComplaintRow.resolution_due < now)
            .order_by(ComplaintRow.resolution_due)
            .limit(limit)
        )
        async with self._sessions() as session, session.begin():
            pending = set(await session.scalars(first_due))
            pending |= set(await session.scalars(resolution_due))
            if not pending:
                return found
            rows = await session.scalars(
                select(ComplaintRow)
                .where(ComplaintRow.id.in_(sorted(pending)))
                .order_by(ComplaintRow.id)
            )
            current = [_to_complaint(r, ()) for r in rows]
            due = {c.id: due_breaches(c, now) for c in current}
            stamped: dict[BreachKind, set[int]] = {}
            for kind, column in (
                ("first_response", ComplaintRow.first_response_breached_at),
                ("resolution", ComplaintRow.resolution_breached_at),
            ):
                ids = sorted(cid for cid, kinds in due.items() if kind in kinds)
                if not ids:
                    continue
                # guarded: another checker that stamped first keeps it (each breach once)
                result = await session.execute(
                    update(ComplaintRow)
                    .where(ComplaintRow.id.in_(ids), column.is_(None))
                    .values({column.key: now})
                    .returning(ComplaintRow.id)
                    .execution_options(synchronize_session=False)
                )
                stamped[cast(BreachKind, kind)] = set(result.scalars())
            for complaint in current:
                for kind in due[complaint.id]:
                    if complaint.id not in stamped.get(kind, ()):
                        continue
                    # the ORM rows stay untouched: their flush would bump the version
                    if kind == "first_response":
                        complaint = replace(complaint, first_response_breached_at=now)
                        key = "first_response_breached_at"
                    else:
                        complaint = replace(complaint, resolution_breached_at=now)
                        key = "resolution_breached_at"
                    _event(
                        session,
                        "complaint",
                        complaint.id,
                        now,
                        None,
                        f"{kind}_breached",
                        {},
                        {key: _json(now)},
                    )
                    found.append(Breach(complaint, kind))
        return found

    # -------------------------------------------------------------------------- timeline

    async def timeline(self, case_type: CaseType, case_id: int) -> list[CaseEvent]:
        """Every action on the case, oldest first."""
        stmt = (
            select(CaseEventRow)
            .where(CaseEventRow.case_type == case_type, CaseEventRow.case_id == case_id)
            .order_by(CaseEventRow.at, CaseEventRow.id)
        )
        async with self._sessions() as session:
            return [_to_event(r) for r in await session.scalars(stmt)]

    async def record_event(
        self,
        case_type: CaseType,
        case_id: int,
        *,
        actor_id: int | None,
        action: str,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        note: str = "",
    ) -> None:
        """Append a timeline entry for a change made elsewhere (e.g. a customer record)."""
        now = self.now()
        async with self._sessions() as session, session.begin():
            _event(
                session,
                case_type,
                case_id,
                now,
                actor_id,
                action,
                {k: _json(v) for k, v in (before or {}).items()},
                {k: _json(v) for k, v in (after or {}).items()},
                note,
            )

    # -------------------------------------------------------------------------- customer history

    async def customer_cases(
        self, customer_id: int, *, limit: int = 50
    ) -> tuple[list[Booking], list[Complaint]]:
        """The customer's newest bookings and complaints (for the archive's timeline)."""
        async with self._sessions() as session:
            bookings = await session.scalars(
                select(BookingRow)
                .where(BookingRow.customer_id == customer_id)
                .order_by(BookingRow.created_at.desc(), BookingRow.id.desc())
                .limit(limit)
            )
            booking_list = [_to_booking(r) for r in bookings]
            complaint_rows = list(
                await session.scalars(
                    select(ComplaintRow)
                    .where(ComplaintRow.customer_id == customer_id)
                    .order_by(ComplaintRow.created_at.desc(), ComplaintRow.id.desc())
                    .limit(limit)
                )
            )
            calls = await _calls_of_many(session, [r.id for r in complaint_rows])
        return booking_list, [_to_complaint(r, calls.get(r.id, ())) for r in complaint_rows]

    # -------------------------------------------------------------------------- dispositions

    async def save_disposition(
        self, *, call_uniqueid: str, user_id: int, category: str, outcome: str, note: str = ""
    ) -> Disposition:
        """File (or correct) the user's disposition of a call: one per (call, user)."""
        now = self.now()
        values = {
            "call_uniqueid": call_uniqueid,
            "user_id": user_id,
            "category": category.strip(),
            "outcome": outcome.strip(),
            "note": note,
        }
        if not values["category"] or not values["outcome"]:
            raise ValueError("a disposition needs a category and an outcome")
        check_lengths(DispositionRow.__table__, values)
        async with self._sessions() as session, session.begin():
            stmt = dialect_insert(session, DispositionRow.__table__).values(
                **values, created_at=now, updated_at=now
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["call_uniqueid", "user_id"],
                set_={
                    "category": stmt.excluded.category,
                    "outcome": stmt.excluded.outcome,
                    "note": stmt.excluded.note,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
            await session.execute(stmt)
        found = await self.dispositions(call_uniqueid, user_id=user_id)
        return found[0]

    async def dispositions(
        self, call_uniqueid: str, *, user_id: int | None = None
    ) -> list[Disposition]:
        stmt = select(DispositionRow).where(DispositionRow.call_uniqueid == call_uniqueid)
        if user_id is not None:
            stmt = stmt.where(DispositionRow.user_id == user_id)
        async with self._sessions() as session:
            rows = await session.scalars(stmt.order_by(DispositionRow.id))
            return [_to_disposition(r) for r in rows]


# ------------------------------------------------------------------------------ helpers


def _check_actor(
    complaint: Complaint, actor_id: int, role: str, *, allow_unowned: bool = False
) -> None:
    if role in HANDLER_ROLES:
        return
    if complaint.owner_id is None:
        if allow_unowned:
            return
        raise NotAllowed("nobody owns this complaint yet: take it first", code="complaint_unowned")
    if complaint.owner_id != actor_id:
        raise NotAllowed("only the complaint's owner acts on it; ask for a handover")


def _overdue(now: datetime) -> ColumnElement[bool]:
    active = ComplaintRow.status.not_in(("resolved", "closed"))
    return active & (
        (ComplaintRow.resolution_due < now)
        | (ComplaintRow.first_responded_at.is_(None) & (ComplaintRow.first_response_due < now))
    )


def _booking_where(flt: BookingFilter, visibility: Visibility) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if visibility.user_ids is not None:
        where.append(BookingRow.created_by.in_(sorted(visibility.user_ids)))
    if flt.since is not None:
        where.append(BookingRow.created_at >= as_utc("since", flt.since))
    if flt.until is not None:
        where.append(BookingRow.created_at < as_utc("until", flt.until))
    if flt.status is not None:
        where.append(BookingRow.status == flt.status)
    if flt.customer_id is not None:
        where.append(BookingRow.customer_id == flt.customer_id)
    if flt.created_by is not None:
        where.append(BookingRow.created_by == flt.created_by)
    if flt.urgent is not None:
        where.append(BookingRow.urgent.is_(flt.urgent))
    if flt.call_uniqueid is not None:
        where.append(BookingRow.call_uniqueid == flt.call_uniqueid)
    return where


_Cased = TypeVar("_Cased", BookingRow, ComplaintRow)


def _keyset(
    model: type[_Cased], order: ListOrder, after: PagePosition | None
) -> tuple[list[ColumnElement[bool]], list[UnaryExpression[Any]]]:
    """(where, order by) of a list page in `order` by (created_at, id), after `after`. One row
    comparison, so PostgreSQL reads the (.., created_at, id) indexes from the position on."""
    if after is not None and after.order != order:
        raise ValueError(f"the position is of the list {after.order} first")
    newest = order == "newest"
    key = (model.created_at, model.id)
    order_by = [k.desc() if newest else k.asc() for k in key]
    if after is None:
        return [], order_by
    row = tuple_(*key)
    mark = tuple_(literal(after.at, UTCDateTime()), literal(after.id, Integer()))
    return [row < mark if newest else row > mark], order_by


def _page(
    rows: list[_Cased], limit: int, order: ListOrder
) -> tuple[list[_Cased], PagePosition | None]:
    """The page of `limit` rows read with one more (there is a next page if it came)."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], PagePosition(order=order, at=last.created_at, id=last.id)


async def _retrying(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run a read-decide-write transaction again when another writer changed the row between
    the read and the write (the version check; PostgreSQL's FOR UPDATE makes it rare)."""
    for _ in range(MAX_ATTEMPTS - 1):
        try:
            return await attempt()
        except StaleDataError:
            continue
    try:
        return await attempt()
    except StaleDataError:
        raise TicketRuleError(
            "the case changed meanwhile; try again", code="concurrent_update"
        ) from None


async def _page_total(session: AsyncSession, ids: Select[Any]) -> tuple[int, bool]:
    """(total, exact): exact up to COUNT_CAP matches; beyond that PostgreSQL's planner estimate
    (counting a million index entries would cost more than the page itself)."""
    capped = select(func.count()).select_from(ids.limit(COUNT_CAP + 1).subquery())
    found = int(await session.scalar(capped) or 0)
    if found <= COUNT_CAP:
        return found, True
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        return await _count(session, ids), True
    # values are validated (ints, enums, text without NUL) and quoted by SQLAlchemy
    sql = str(ids.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    conn = await session.connection()
    plan = (await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql)).scalar_one()
    if isinstance(plan, str):
        plan = json.loads(plan)
    estimate = int(plan[0]["Plan"]["Plan Rows"])
    return max(found, estimate), False


async def _count(session: AsyncSession, ids: Select[Any]) -> int:
    return int(await session.scalar(select(func.count()).select_from(ids.subquery())) or 0)


async def _require_customer(session: AsyncSession, customer_id: int) -> None:
    found = await session.scalar(select(CustomerRow.id).where(CustomerRow.id == customer_id))
    if found is None:
        raise CustomerMissingError(customer_id)


async def _locked(session: AsyncSession, model: Any, key: int, case_type: str) -> Any:
    row = await session.scalar(select(model).where(model.id == key).with_for_update())
    if row is None:
        raise CaseNotFoundError(case_type, key)
    return row


async def _calls_of(session: AsyncSession, complaint_id: int) -> tuple[str, ...]:
    return (await _calls_of_many(session, [complaint_id])).get(complaint_id, ())


async def _calls_of_many(
    session: AsyncSession, complaint_ids: Sequence[int]
) -> dict[int, tuple[str, ...]]:
    if not complaint_ids:
        return {}
    stmt = (
        select(ComplaintCallRow.complaint_id, ComplaintCallRow.call_uniqueid)
        .where(ComplaintCallRow.complaint_id.in_(complaint_ids))
        .order_by(ComplaintCallRow.linked_at, ComplaintCallRow.call_uniqueid)
    )
    out: dict[int, list[str]] = {}
    for cid, uniqueid in await session.execute(stmt):
        out.setdefault(cid, []).append(uniqueid)
    return {k: tuple(v) for k, v in out.items()}


def _event(
    session: AsyncSession,
    case_type: str,
    case_id: int,
    at: datetime,
    actor_id: int | None,
    action: str,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    note: str = "",
) -> None:
    session.add(
        CaseEventRow(
            case_type=case_type,
            case_id=case_id,
            at=at,
            actor_user_id=actor_id,
            action=action[:32],
            before=dict(before),
            after=dict(after),
            note=note,
        )
    )


def _to_booking(row: BookingRow) -> Booking:
    return Booking(
        id=row.id,
        customer_id=row.customer_id,
        item=row.item,
        status=cast(BookingStatus, row.status),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        call_uniqueid=row.call_uniqueid,
        scheduled_for=row.scheduled_for,
        for_whom=row.for_whom,
        urgent=row.urgent,
        notes=row.notes,
    )


def _to_complaint(row: ComplaintRow, calls: Iterable[str]) -> Complaint:
    return Complaint(
        id=row.id,
        customer_id=row.customer_id,
        category=row.category,
        severity=cast(Severity, row.severity),
        description=row.description,
        status=cast(ComplaintStatus, row.status),
        owner_id=row.owner_id,
        created_by=row.created_by,
        first_response_due=row.first_response_due,
        resolution_due=row.resolution_due,
        created_at=row.created_at,
        updated_at=row.updated_at,
        first_responded_at=row.first_responded_at,
        resolved_at=row.resolved_at,
        closed_at=row.closed_at,
        customer_informed_at=row.customer_informed_at,
        outcome=row.outcome,
        reopen_count=row.reopen_count,
        first_response_breached_at=row.first_response_breached_at,
        resolution_breached_at=row.resolution_breached_at,
        calls=tuple(calls),
    )


def _to_event(row: CaseEventRow) -> CaseEvent:
    return CaseEvent(
        id=row.id,
        case_type=cast(CaseType, row.case_type),
        case_id=row.case_id,
        at=row.at,
        actor_user_id=row.actor_user_id,
        action=row.action,
        before=dict(row.before or {}),
        after=dict(row.after or {}),
        note=row.note,
    )


def _to_disposition(row: DispositionRow) -> Disposition:
    return Disposition(
        id=row.id,
        call_uniqueid=row.call_uniqueid,
        user_id=row.user_id,
        category=row.category,
        outcome=row.outcome,
        note=row.note,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
