"""TicketRepository on both backends: list totals beyond the exact-count cap, dispositions,
record_event, and the breach stamp under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.customers.repository import CustomerRepository
from callcenter.db.models import BookingRow, ComplaintRow
from callcenter.ivr.calendar import always_open
from callcenter.tickets.model import ListOrder, PagePosition
from callcenter.tickets.repository import (
    COUNT_CAP,
    BookingFilter,
    ComplaintFilter,
    TicketRepository,
    Visibility,
)
from callcenter.users.repository import UserRepository

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


async def _setup(
    session_factory: async_sessionmaker[AsyncSession],
) -> tuple[TicketRepository, int, int]:
    users = UserRepository(session_factory=session_factory)
    user = await users.create(username="amy", password="test-pass-123", role="agent")
    customer = await CustomerRepository(session_factory=session_factory).create(name="c")
    repo = TicketRepository(
        session_factory=session_factory, calendar=always_open("Asia/Shanghai"), clock=lambda: NOW
    )
    return repo, user.id, customer.id


async def test_totals_are_exact_up_to_the_cap_then_estimated_on_postgresql(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    repo, user_id, customer_id = await _setup(session_factory)
    rows = [
        {
            "customer_id": customer_id,
            "category": "delivery" if i % 2 else "billing",
            "severity": "low",
            "description": "d",
            "status": "open",
            "owner_id": user_id,
            "created_by": user_id,
            "first_response_due": NOW,
            "resolution_due": NOW,
            "reopen_count": 0,
            "version": 0,
            "created_at": NOW - timedelta(seconds=i),
            "updated_at": NOW,
        }
        for i in range(COUNT_CAP + 50)
    ]
    async with session_factory() as session, session.begin():
        await session.execute(insert(ComplaintRow), rows)
    small = await repo.list_complaints(ComplaintFilter(category="nothing"), Visibility())
    assert (small.total, small.exact, small.items) == (0, True, [])
    half = await repo.list_complaints(ComplaintFilter(category="billing"), Visibility(), limit=3)
    assert (half.total, half.exact) == ((COUNT_CAP + 50) // 2, True)
    assert [c.created_at for c in half.items] == [
        NOW,
        NOW - timedelta(seconds=2),
        NOW - timedelta(seconds=4),
    ]
    everything = await repo.list_complaints(ComplaintFilter(), Visibility(), limit=5, offset=10)
    assert len(everything.items) == 5
    if db_backend == "sqlite":
        assert (everything.total, everything.exact) == (COUNT_CAP + 50, True)
    else:
        assert everything.exact is False and everything.total > COUNT_CAP


async def test_dispositions_one_per_call_and_user(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    repo, user_id, _ = await _setup(session_factory)
    first = await repo.save_disposition(
        call_uniqueid="u1", user_id=user_id, category="booking", outcome="booked"
    )
    again = await repo.save_disposition(
        call_uniqueid="u1", user_id=user_id, category="complaint", outcome="filed", note="n"
    )
    assert again.id == first.id and again.category == "complaint" and again.note == "n"
    assert [d.category for d in await repo.dispositions("u1")] == ["complaint"]
    assert await repo.dispositions("u2") == []


async def test_concurrent_breach_checks_notify_each_breach_once(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    repo, user_id, customer_id = await _setup(session_factory)
    for _ in range(3):
        await repo.create_complaint(
            actor_id=user_id,
            actor_role="agent",
            customer_id=customer_id,
            category="delivery",
            description="late",
            severity="critical",
            call_uniqueid=None,
        )
    later = TicketRepository(
        session_factory=session_factory,
        calendar=always_open("Asia/Shanghai"),
        clock=lambda: NOW + timedelta(days=3),
    )
    results = await asyncio.gather(*(later.record_breaches() for _ in range(4)))
    kinds = sorted((b.complaint.id, b.kind) for found in results for b in found)
    assert len(kinds) == 6 and len(set(kinds)) == 6  # 3 complaints x 2 deadlines, once each
    assert await later.record_breaches() == []
    bookings = await repo.list_bookings(BookingFilter(), Visibility(frozenset({user_id})))
    assert bookings.total == 0 and bookings.exact


def _complaint_rows(user_id: int, customer_id: int, at: list[datetime]) -> list[dict[str, object]]:
    return [
        {
            "customer_id": customer_id,
            "category": "billing" if i % 2 else "delivery",
            "severity": "low",
            "description": f"d{i}",
            "status": "open",
            "owner_id": user_id,
            "created_by": user_id,
            "first_response_due": NOW,
            "resolution_due": NOW,
            "reopen_count": 0,
            "version": 0,
            "created_at": when,
            "updated_at": NOW,
        }
        for i, when in enumerate(at)
    ]


@pytest.mark.parametrize("order", ["newest", "oldest"])
async def test_cursor_pages_are_stable_while_cases_arrive(
    session_factory: async_sessionmaker[AsyncSession], order: ListOrder
) -> None:
    repo, user_id, customer_id = await _setup(session_factory)
    # three complaints per second (equal sort keys, the id breaks the tie), and microseconds
    at = [NOW - timedelta(seconds=i // 3, microseconds=7 * (i % 2)) for i in range(20)]
    async with session_factory() as session, session.begin():
        await session.execute(insert(ComplaintRow), _complaint_rows(user_id, customer_id, at))
    everything = await repo.list_complaints(ComplaintFilter(), Visibility(), limit=100, order=order)
    expected = [c.id for c in everything.items]
    assert len(expected) == 20 and everything.next is None
    key = [(c.created_at, c.id) for c in everything.items]
    assert key == sorted(key, reverse=order == "newest")

    seen: list[int] = []
    after: PagePosition | None = None
    arrived = 0
    while True:
        page = await repo.list_complaints(
            ComplaintFilter(), Visibility(), limit=3, order=order, after=after
        )
        seen += [c.id for c in page.items]
        arrived += 1  # a new complaint between two pages
        async with session_factory() as session, session.begin():
            newer = NOW + timedelta(minutes=arrived)
            await session.execute(
                insert(ComplaintRow), _complaint_rows(user_id, customer_id, [newer])
            )
        if page.next is None:
            break
        assert page.next.order == order
        after = PagePosition.decode(page.next.encode())  # what a client sends back
    if order == "newest":
        assert seen == expected  # the new ones are above the first page: none repeated
    else:
        assert seen[:20] == expected and len(seen) == len(set(seen))  # new ones at the end

    billing = await repo.list_complaints(
        ComplaintFilter(category="billing"), Visibility(), limit=4, order=order
    )
    assert billing.next is not None
    rest = await repo.list_complaints(
        ComplaintFilter(category="billing"),
        Visibility(),
        limit=100,
        order=order,
        after=billing.next,
    )
    ids = [c.id for c in billing.items + rest.items]
    assert len(ids) == len(set(ids)) and all(c.category == "billing" for c in rest.items)


async def test_booking_cursor_pages_follow_the_filter(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    repo, user_id, customer_id = await _setup(session_factory)
    rows = [
        {
            "customer_id": customer_id,
            "item": f"b{i}",
            "status": "new" if i % 3 else "confirmed",
            "created_by": user_id,
            "urgent": False,
            "for_whom": "",
            "notes": "",
            "version": 0,
            "created_at": NOW - timedelta(seconds=i // 2),
            "updated_at": NOW,
        }
        for i in range(12)
    ]
    async with session_factory() as session, session.begin():
        await session.execute(insert(BookingRow), rows)
    seen: list[str] = []
    after: PagePosition | None = None
    while True:
        page = await repo.list_bookings(
            BookingFilter(status="new"), Visibility(frozenset({user_id})), limit=3, after=after
        )
        assert page.total == 8
        seen += [b.item for b in page.items]
        if page.next is None:
            break
        after = page.next
    everything = await repo.list_bookings(BookingFilter(status="new"), Visibility(), limit=50)
    assert seen == [b.item for b in everything.items] and len(seen) == 8


async def test_the_cursor_query_reads_an_index_on_postgresql(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    if db_backend != "postgres":
        pytest.skip("the plan is PostgreSQL's")
    repo, user_id, customer_id = await _setup(session_factory)
    at = [NOW - timedelta(seconds=i) for i in range(3000)]
    async with session_factory() as session, session.begin():
        await session.execute(insert(ComplaintRow), _complaint_rows(user_id, customer_id, at))
        await session.execute(text("ANALYZE complaints"))
    first = await repo.list_complaints(ComplaintFilter(), Visibility(), limit=50)
    assert first.next is not None

    executed: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "LIMIT" in statement.upper():
            executed.append((statement, params))

    engine = session_factory.kw["bind"].sync_engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        page = await repo.list_complaints(ComplaintFilter(), Visibility(), after=first.next)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert page.items[0].created_at == NOW - timedelta(seconds=50)
    statement, params = next((s, p) for s, p in executed if "ORDER BY" in s.upper())
    async with session_factory() as session:
        conn = await session.connection()
        plan = "\n".join(
            str(row[0]) for row in await conn.exec_driver_sql("EXPLAIN " + statement, tuple(params))
        )
    assert "Index Scan" in plan and "ix_complaints_created_at_id" in plan, plan
    assert "Seq Scan" not in plan and "Sort" not in plan, plan
