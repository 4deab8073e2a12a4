"""TicketRepository on both backends: list totals beyond the exact-count cap, dispositions,
record_event, and the breach stamp under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.customers.repository import CustomerRepository
from callcenter.db.models import ComplaintRow
from callcenter.ivr.calendar import always_open
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
