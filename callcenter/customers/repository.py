"""Customer archive storage: customers and their numbers, found by any way of writing a number."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.calls.model import CallRecord
from callcenter.calls.repository import CallRepository
from callcenter.customers.model import (
    Customer,
    CustomerChanges,
    CustomerNumber,
    CustomerTier,
    HistoryEntry,
)
from callcenter.customers.service import InvalidNumberError, normalise_number, parse_number
from callcenter.db.engine import LIKE_ESCAPE, contains_pattern
from callcenter.db.models import (
    CUSTOMER_TIERS,
    CallbackRequestRow,
    CustomerNumberRow,
    CustomerRow,
    check_lengths,
    utcnow,
)
from callcenter.ivr.model import CustomerInfo
from callcenter.tickets.repository import TicketRepository

__all__ = [
    "CustomerHistory",
    "CustomerLookupAdapter",
    "CustomerNotFoundError",
    "CustomerRepository",
    "NumberInUseError",
]


_RAW_NUMBER_MAX = 80
_CHANGEABLE = frozenset(CustomerChanges.__annotations__)


class CustomerNotFoundError(LookupError):
    def __init__(self, customer_id: int) -> None:
        super().__init__(f"no customer with id {customer_id}")
        self.customer_id = customer_id


class NumberInUseError(ValueError):
    """The number already belongs to another customer (a number identifies one customer)."""

    def __init__(self, number: str, customer_id: int) -> None:
        super().__init__(f"number {number} already belongs to customer {customer_id}")
        self.number = number
        self.customer_id = customer_id


class CustomerRepository:
    """Customers and their numbers. Numbers are stored raw and normalised; a lookup of a number
    as written goes through `normalise_number`, so "+86 138-0013-8000" finds a customer saved as
    "13800138000"; a stored (canonical) number is looked up as it is (`find_by_normalised`)."""

    def __init__(
        self, *, session_factory: async_sessionmaker[AsyncSession], default_country: str = "86"
    ) -> None:
        self._sessions = session_factory
        self._country = default_country

    async def create(
        self,
        *,
        name: str,
        numbers: Iterable[str] = (),
        tier: CustomerTier = "normal",
        company: str | None = None,
        credit_grade: str | None = None,
        notes: str = "",
        preferred_language: str | None = None,
        do_not_call: bool = False,
        provisional: bool = False,
        contact_user_id: int | None = None,
    ) -> Customer:
        """Create a customer with its numbers. Raises InvalidNumberError for a non-number,
        NumberInUseError when a number belongs to someone else (nothing is saved then)."""
        _check_name(name)
        _check_tier(tier)
        check_lengths(
            CustomerRow.__table__,
            {
                "company": company,
                "credit_grade": credit_grade,
                "preferred_language": preferred_language,
            },
        )
        parsed = self._parse_all(numbers)
        async with self._numbers_guard(parsed, owner=None), self._sessions() as session:
            async with session.begin():
                await _ensure_free(session, [n for _, n in parsed], owner=None)
                row = CustomerRow(
                    name=name.strip(),
                    tier=tier,
                    company=company,
                    credit_grade=credit_grade,
                    notes=notes or "",
                    preferred_language=preferred_language,
                    do_not_call=do_not_call,
                    provisional=provisional,
                    contact_user_id=contact_user_id,
                    numbers=[CustomerNumberRow(raw=raw, normalised=norm) for raw, norm in parsed],
                )
                session.add(row)
            return _to_customer(row)

    async def find_or_create_provisional(
        self, number: str, *, name: str | None = None
    ) -> tuple[Customer, bool]:
        """The customer owning `number`, or a new provisional record for it (an unknown caller
        the agent completes later). Returns (customer, created). Safe against a concurrent
        caller doing the same: the loser finds the winner's record. Raises InvalidNumberError
        for a withheld or non-number."""
        normalised = parse_number(number, self._country)
        found = await self.find_by_normalised(normalised)
        if found is not None:
            return found, False
        label = name.strip() if name and name.strip() else f"New caller {number.strip()}"
        try:
            created = await self.create(
                name=label[:255], numbers=[number.strip()], provisional=True
            )
        except NumberInUseError:
            winner = await self.find_by_normalised(normalised)
            if winner is None:
                raise
            return winner, False
        return created, True

    async def numbers_of(self, customer_id: int) -> list[str]:
        """The normalised numbers of a customer (for call-log and callback history)."""
        async with self._sessions() as session:
            stmt = select(CustomerNumberRow.normalised).where(
                CustomerNumberRow.customer_id == customer_id
            )
            return list(await session.scalars(stmt))

    async def get(self, customer_id: int) -> Customer | None:
        async with self._sessions() as session:
            row = await session.get(CustomerRow, customer_id)
            return _to_customer(row) if row is not None else None

    async def find_by_number(self, number: str) -> Customer | None:
        """The customer owning `number` in any format, or None (also for non-numbers)."""
        try:
            normalised = parse_number(number, self._country)
        except ValueError:
            return None
        return await self.find_by_normalised(normalised)

    async def find_by_normalised(self, normalised: str) -> Customer | None:
        """The customer owning the canonical number `normalised` (a `normalise_number` result,
        used as it is: a canonical number is not a way of writing one), or None."""
        async with self._sessions() as session:
            stmt = (
                select(CustomerRow)
                .join(CustomerNumberRow)
                .where(CustomerNumberRow.normalised == normalised)
            )
            row = (await session.scalars(stmt)).first()
            return _to_customer(row) if row is not None else None

    async def search(
        self,
        text: str,
        *,
        tier: CustomerTier | None = None,
        provisional: bool | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> list[Customer]:
        """Customers whose name or company contains `text`, or who own a number matching it."""
        _check_page(limit, offset)
        async with self._sessions() as session:
            stmt = (
                select(CustomerRow)
                .where(await self._search_where(session, text), *_list_filters(tier, provisional))
                .order_by(CustomerRow.name, CustomerRow.id)
                .limit(limit)
                .offset(offset)
            )
            return [_to_customer(row) for row in await session.scalars(stmt)]

    async def list_customers(
        self,
        *,
        tier: CustomerTier | None = None,
        provisional: bool | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Customer]:
        _check_page(limit, offset)
        stmt = select(CustomerRow).order_by(CustomerRow.id).limit(limit).offset(offset)
        stmt = stmt.where(*_list_filters(tier, provisional))
        async with self._sessions() as session:
            return [_to_customer(row) for row in await session.scalars(stmt)]

    async def count(
        self, *, tier: CustomerTier | None = None, provisional: bool | None = None
    ) -> int:
        stmt = select(func.count()).select_from(CustomerRow)
        stmt = stmt.where(*_list_filters(tier, provisional))
        async with self._sessions() as session:
            return int(await session.scalar(stmt) or 0)

    async def count_search(
        self, text: str, *, tier: CustomerTier | None = None, provisional: bool | None = None
    ) -> int:
        """How many customers `search(text)` finds in all."""
        async with self._sessions() as session:
            stmt = (
                select(func.count())
                .select_from(CustomerRow)
                .where(await self._search_where(session, text), *_list_filters(tier, provisional))
            )
            return int(await session.scalar(stmt) or 0)

    async def update(self, customer_id: int, changes: CustomerChanges) -> Customer:
        """Apply `changes`; raises CustomerNotFoundError."""
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
        if "name" in changes:
            _check_name(changes["name"])
        if "tier" in changes:
            _check_tier(changes["tier"])
        check_lengths(CustomerRow.__table__, changes)
        async with self._sessions() as session, session.begin():
            row = await _get_row(session, customer_id)
            for key, value in changes.items():
                setattr(row, key, value)
            if "name" in changes:
                row.name = changes["name"].strip()
            if "notes" in changes:
                row.notes = changes["notes"] or ""
            row.updated_at = utcnow()
            await session.flush()
            return _to_customer(row)

    async def mark_key_customer(self, customer_id: int, key: bool = True) -> Customer:
        """Make the customer a key customer (大客户), or a normal one with key=False."""
        return await self.update(customer_id, {"tier": "key" if key else "normal"})

    async def attach_numbers(self, customer_id: int, numbers: Iterable[str]) -> Customer:
        """Add numbers to a customer; numbers it already has are ignored (idempotent)."""
        parsed = self._parse_all(numbers)
        async with self._numbers_guard(parsed, owner=customer_id), self._sessions() as session:
            async with session.begin():
                row = await _get_row(session, customer_id)
                await _ensure_free(session, [n for _, n in parsed], owner=customer_id)
                have = {n.normalised for n in row.numbers}
                for raw, norm in parsed:
                    if norm not in have:
                        row.numbers.append(CustomerNumberRow(raw=raw, normalised=norm))
                        have.add(norm)
                row.updated_at = utcnow()
            return _to_customer(row)

    async def detach_number(self, customer_id: int, number: str) -> Customer:
        """`number` in any format, or one of the customer's stored (canonical) numbers as it is:
        normalising "13125550100" (+1 312...) again would read it as a Chinese mobile."""
        async with self._sessions() as session, session.begin():
            row = await _get_row(session, customer_id)
            normalised = number.strip()
            if not any(n.normalised == normalised for n in row.numbers):
                normalised = parse_number(number, self._country)
            row.numbers = [n for n in row.numbers if n.normalised != normalised]
            row.updated_at = utcnow()
            await session.flush()
            return _to_customer(row)

    async def delete(self, customer_id: int) -> bool:
        async with self._sessions() as session, session.begin():
            row = await session.get(CustomerRow, customer_id)
            if row is None:
                return False
            await session.delete(row)
            return True

    async def _search_where(self, session: AsyncSession, text: str) -> ColumnElement[bool]:
        """Name or company contains `text` (the trigram index on PostgreSQL), or the customer
        owns the number `text` is a way of writing."""
        pattern = contains_pattern(text.strip())
        conditions: list[ColumnElement[bool]] = [
            CustomerRow.name.ilike(pattern, escape=LIKE_ESCAPE),
            CustomerRow.company.ilike(pattern, escape=LIKE_ESCAPE),
        ]
        normalised = normalise_number(text, self._country)
        if normalised:
            # the owner is looked up first: with plain ids every branch of the OR is an index
            # lookup, where a correlated EXISTS would make PostgreSQL scan every customer
            owners = await session.scalars(
                select(CustomerNumberRow.customer_id).where(
                    CustomerNumberRow.normalised == normalised
                )
            )
            conditions.append(CustomerRow.id.in_(sorted(set(owners))))
        return or_(*conditions)

    @asynccontextmanager
    async def _numbers_guard(
        self, parsed: Sequence[tuple[str, str]], *, owner: int | None
    ) -> AsyncIterator[None]:
        """Turn the unique-index violation of a concurrent writer into NumberInUseError."""
        try:
            yield
        except IntegrityError:
            async with self._sessions() as session:
                await _ensure_free(session, [n for _, n in parsed], owner=owner)
            raise

    def _parse_all(self, numbers: Iterable[str]) -> list[tuple[str, str]]:
        if isinstance(numbers, str):
            raise TypeError("numbers must be a collection of strings, not one string")
        parsed: dict[str, str] = {}
        for raw in numbers:
            text = raw.strip()
            if len(text) > _RAW_NUMBER_MAX:
                raise InvalidNumberError(f"number longer than {_RAW_NUMBER_MAX} characters")
            parsed.setdefault(parse_number(text, self._country), text)
        return [(raw, norm) for norm, raw in parsed.items()]


class CustomerLookupAdapter:
    """The IVR's CustomerLookup over CustomerRepository."""

    def __init__(self, *, repository: CustomerRepository) -> None:
        self._repository = repository

    async def lookup(self, number: str) -> CustomerInfo | None:
        customer = await self._repository.find_by_number(number)
        if customer is None:
            return None
        return CustomerInfo(
            customer_id=str(customer.id),
            name=customer.name,
            is_key_customer=customer.is_key_customer,
            language=customer.preferred_language,
        )


class CustomerHistory:
    """A customer's calls (from the call log, by any of their numbers), bookings, complaints
    and callback requests, merged into one timeline, newest first."""

    def __init__(
        self,
        *,
        customers: CustomerRepository,
        calls: CallRepository,
        tickets: TicketRepository,
        session_factory: async_sessionmaker[AsyncSession],
    ) -> None:
        self._customers = customers
        self._calls = calls
        self._tickets = tickets
        self._sessions = session_factory

    async def timeline(
        self, customer_id: int, *, limit: int = 50, include_calls: bool = True
    ) -> list[HistoryEntry]:
        """Raises CustomerNotFoundError."""
        _check_page(limit, 0)
        if await self._customers.get(customer_id) is None:
            raise CustomerNotFoundError(customer_id)
        numbers = await self._customers.numbers_of(customer_id)
        entries: list[HistoryEntry] = []
        if include_calls:
            for number in numbers:
                calls = await self._calls.list_calls(caller_normalised=number, limit=limit)
                for call in calls:
                    entries.append(_call_entry(call, number))
        bookings, complaints = await self._tickets.customer_cases(customer_id, limit=limit)
        for b in bookings:
            urgent = "URGENT " if b.urgent else ""
            entries.append(
                HistoryEntry(
                    kind="booking",
                    at=b.created_at,
                    ref=str(b.id),
                    summary=f"{urgent}{b.item}" + (f" for {b.for_whom}" if b.for_whom else ""),
                    status=b.status,
                )
            )
        for c in complaints:
            entries.append(
                HistoryEntry(
                    kind="complaint",
                    at=c.created_at,
                    ref=str(c.id),
                    summary=f"[{c.severity}] {c.category}: {c.description[:120]}",
                    status=c.status,
                )
            )
        if numbers:
            async with self._sessions() as session:
                rows = await session.scalars(
                    select(CallbackRequestRow)
                    .where(CallbackRequestRow.number.in_(numbers))
                    .order_by(CallbackRequestRow.requested_at.desc())
                    .limit(limit)
                )
                for row in rows:
                    entries.append(
                        HistoryEntry(
                            kind="callback",
                            at=row.requested_at,
                            ref=row.call_uniqueid,
                            summary=f"callback requested ({row.queue or 'any queue'})",
                            status=row.status,
                            number=row.number,
                        )
                    )
        entries.sort(key=lambda e: (e.at, e.kind, e.ref), reverse=True)
        return entries[:limit]


def _call_entry(call: CallRecord, number: str) -> HistoryEntry:
    if call.abandoned:
        status = "abandoned"
    elif call.answered_at is not None:
        status = "answered"
    else:
        status = "ended" if call.ended_at is not None else "in progress"
    parts = [call.queue or "", f"IVR {call.ivr_choice}" if call.ivr_choice else ""]
    if call.agent:
        parts.append(f"agent {call.agent}")
    return HistoryEntry(
        kind="call",
        at=call.started_at,
        ref=call.uniqueid,
        summary=" · ".join(p for p in parts if p) or call.direction,
        status=status,
        number=number,
    )


async def _ensure_free(
    session: AsyncSession, normalised: Sequence[str], *, owner: int | None
) -> None:
    if not normalised:
        return
    # the unique index still guards against a concurrent writer; this gives the clear error
    stmt = select(CustomerNumberRow).where(CustomerNumberRow.normalised.in_(normalised))
    for taken in await session.scalars(stmt):
        if taken.customer_id != owner:
            raise NumberInUseError(taken.normalised, taken.customer_id)


async def _get_row(session: AsyncSession, customer_id: int) -> CustomerRow:
    row = await session.get(CustomerRow, customer_id)
    if row is None:
        raise CustomerNotFoundError(customer_id)
    return row


def _to_customer(row: CustomerRow) -> Customer:
    tier: CustomerTier = "key" if row.tier == "key" else "normal"
    return Customer(
        id=row.id,
        name=row.name,
        tier=tier,
        company=row.company,
        credit_grade=row.credit_grade,
        notes=row.notes,
        preferred_language=row.preferred_language,
        do_not_call=row.do_not_call,
        provisional=row.provisional,
        contact_user_id=row.contact_user_id,
        numbers=tuple(CustomerNumber(raw=n.raw, normalised=n.normalised) for n in row.numbers),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _list_filters(tier: CustomerTier | None, provisional: bool | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if tier is not None:
        where.append(CustomerRow.tier == tier)
    if provisional is not None:
        where.append(CustomerRow.provisional.is_(provisional))
    return where


def _check_name(name: str) -> None:
    if not name.strip():
        raise ValueError("a customer needs a name")
    if len(name.strip()) > 255:
        raise ValueError("customer name longer than 255 characters")


def _check_tier(tier: str) -> None:
    if tier not in CUSTOMER_TIERS:
        raise ValueError(f"tier must be one of {', '.join(CUSTOMER_TIERS)}, got {tier!r}")


def _check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be between 1 and 1000, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must not be negative, got {offset}")
