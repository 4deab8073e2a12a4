"""Demo bookings and complaints (some overdue, so the red breach marking shows). Idempotent:
nothing is written when the database already has a booking or a complaint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.customers.repository import CustomerRepository
from callcenter.db.models import BookingRow, ComplaintRow, UserRow
from callcenter.ivr.calendar import BusinessCalendar, always_open
from callcenter.ivr.loader import CALENDAR_FILE, load_calendar
from callcenter.tickets.model import BookingStatus, ComplaintStatus, Severity
from callcenter.tickets.repository import TicketRepository

__all__ = ["DEMO_BOOKINGS", "DEMO_COMPLAINTS", "seed_demo_tickets"]

DEFAULT_CALENDAR = Path(__file__).resolve().parents[2] / "ivr_flows" / CALENDAR_FILE


@dataclass(frozen=True, slots=True)
class DemoBooking:
    number: str  # the customer's (a DEMO_CUSTOMERS number)
    username: str
    item: str
    age: timedelta
    for_whom: str = ""
    urgent: bool = False
    status: BookingStatus = "new"
    scheduled_in: timedelta | None = None


@dataclass(frozen=True, slots=True)
class DemoComplaint:
    number: str
    username: str
    category: str
    severity: Severity
    description: str
    age: timedelta
    from_call: bool = True
    status: ComplaintStatus = "open"
    outcome: str | None = None


DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

DEMO_BOOKINGS: tuple[DemoBooking, ...] = (
    DemoBooking(
        "+86 138-0013-8000",
        "agent1001",
        "整车冷链运输 上海→北京 (refrigerated truck)",
        2 * HOUR,
        "华东物流有限公司",
        urgent=True,
        status="confirmed",
        scheduled_in=DAY,
    ),
    DemoBooking("13900139001", "agent1002", "包间 12 人 (private room for 12)", 3 * HOUR, "李秀英"),
    DemoBooking("+8615000150005", "agent1001", "软件年度维护续约", 3 * DAY, status="fulfilled"),
    DemoBooking("18800188015", "agent1002", "快递上门取件", 5 * HOUR, status="cancelled"),
)

DEMO_COMPLAINTS: tuple[DemoComplaint, ...] = (
    DemoComplaint(
        "+86 177 0017 7011",
        "agent1004",
        "delivery",
        "high",
        "第三次配送延误, 客户要求赔偿 (third late delivery, asks for compensation)",
        4 * DAY,
        status="investigating",
    ),
    DemoComplaint(
        "0086 137 0013 7002",
        "supervisor",
        "billing",
        "medium",
        "发票金额与合同不符 (invoice does not match the contract)",
        DAY,
        from_call=False,
    ),
    DemoComplaint(
        "010-87654321",
        "agent1007",
        "technical",
        "critical",
        "理赔系统无法登录 (claims portal login fails)",
        5 * HOUR,
        status="escalated",
    ),
    DemoComplaint(
        "+86 138-0013-8000",
        "specialist1003",
        "service_attitude",
        "low",
        "客服态度不好 (rude agent on the phone)",
        6 * DAY,
        status="closed",
        outcome="apologised",
    ),
)

_STEPS: dict[ComplaintStatus, tuple[ComplaintStatus, ...]] = {
    "open": (),
    "investigating": ("investigating",),
    "escalated": ("investigating", "escalated"),
    "resolved": ("investigating", "resolved"),
    "closed": ("investigating", "resolved", "closed"),
}


_BOOKING_STEPS: dict[BookingStatus, tuple[BookingStatus, ...]] = {
    "new": (),
    "confirmed": ("confirmed",),
    "fulfilled": ("confirmed", "fulfilled"),
    "cancelled": ("cancelled",),
}


def _fixed(at: datetime) -> Callable[[], datetime]:
    return lambda: at


def _calendar() -> BusinessCalendar:
    if DEFAULT_CALENDAR.is_file():
        return load_calendar(DEFAULT_CALENDAR)
    return always_open("Asia/Shanghai")


async def seed_demo_tickets(
    session_factory: async_sessionmaker[AsyncSession],
    *,
    now: datetime | None = None,
    calendar: BusinessCalendar | None = None,
) -> int:
    """Write the demo bookings and complaints; returns how many were created (0 when the
    database already has tickets, or the demo users/customers are missing)."""
    now = now or datetime.now(UTC)
    cal = calendar or _calendar()
    async with session_factory() as session:
        existing = await session.scalar(select(func.count()).select_from(BookingRow))
        existing = (existing or 0) + (
            await session.scalar(select(func.count()).select_from(ComplaintRow)) or 0
        )
        users = {u.username: (u.id, u.role) for u in await session.scalars(select(UserRow))}
    if existing:
        return 0
    customers = CustomerRepository(session_factory=session_factory)
    created = 0
    for i, b in enumerate(DEMO_BOOKINGS):
        customer = await customers.find_by_number(b.number)
        user = users.get(b.username)
        if customer is None or user is None:
            continue
        at = now - b.age
        repo = TicketRepository(session_factory=session_factory, calendar=cal, clock=_fixed(at))
        booking = await repo.create_booking(
            actor_id=user[0],
            customer_id=customer.id,
            item=b.item,
            for_whom=b.for_whom,
            urgent=b.urgent,
            scheduled_for=None if b.scheduled_in is None else now + b.scheduled_in,
            call_uniqueid=f"demo-booking-{i}",
        )
        for step in _BOOKING_STEPS[b.status]:
            await repo.change_booking_status(booking.id, actor_id=user[0], status=step)
        created += 1
    for i, c in enumerate(DEMO_COMPLAINTS):
        customer = await customers.find_by_number(c.number)
        user = users.get(c.username)
        if customer is None or user is None:
            continue
        at = now - c.age
        repo = TicketRepository(session_factory=session_factory, calendar=cal, clock=_fixed(at))
        complaint = await repo.create_complaint(
            actor_id=user[0],
            actor_role=user[1],
            customer_id=customer.id,
            category=c.category,
            severity=c.severity,
            description=c.description,
            call_uniqueid=f"demo-complaint-{i}" if c.from_call else None,
        )
        for status in _STEPS[c.status]:
            await repo.change_complaint_status(
                complaint.id,
                actor_id=user[0],
                actor_role=user[1],
                status=status,
                outcome=c.outcome if status == "resolved" else None,
                customer_informed=status == "closed",
            )
        created += 1
    return created
