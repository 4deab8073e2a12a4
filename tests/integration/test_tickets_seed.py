"""The demo tickets: written once, and some complaints are overdue (red in the demo)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.db.seed import seed_demo_data
from callcenter.ivr.calendar import always_open
from callcenter.tickets.repository import ComplaintFilter, TicketRepository, Visibility
from callcenter.tickets.seed import DEMO_BOOKINGS, DEMO_COMPLAINTS, seed_demo_tickets
from callcenter.tickets.service import breached_flags


async def test_demo_tickets_are_seeded_once(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime.now(UTC)
    first = await seed_demo_data(session_factory)
    assert first.tickets_created == len(DEMO_BOOKINGS) + len(DEMO_COMPLAINTS)
    assert (await seed_demo_data(session_factory)).tickets_created == 0
    assert await seed_demo_tickets(session_factory) == 0

    repo = TicketRepository(
        session_factory=session_factory, calendar=always_open("Asia/Shanghai"), clock=lambda: now
    )
    listing = await repo.list_complaints(ComplaintFilter(), Visibility())
    complaints = listing.items
    assert listing.total == len(DEMO_COMPLAINTS) and listing.exact
    by_status = {c.status for c in complaints}
    assert by_status == {"open", "investigating", "escalated", "closed"}
    assert any(c.owner_id is None for c in complaints)  # waiting to be taken
    assert any(any(breached_flags(c, now)) for c in complaints)
    closed = next(c for c in complaints if c.status == "closed")
    assert closed.customer_informed_at is not None and closed.outcome == "apologised"
    breaches = await repo.record_breaches()
    assert breaches and await repo.record_breaches() == []
