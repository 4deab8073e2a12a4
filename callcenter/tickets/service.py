"""Ticket decisions that need no I/O: the booking and complaint state machines, first-contact
ownership (首问负责制) and handover, business-time deadlines, breach detection, who sees what.

Everything here is a pure function of its arguments; the repository applies the decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Literal

from callcenter.ivr.calendar import BusinessCalendar, TimeRange
from callcenter.tickets.model import (
    BookingStatus,
    Complaint,
    ComplaintStatus,
    Severity,
)
from callcenter.timeutil import require_aware

__all__ = [
    "BOOKING_TRANSITIONS",
    "COMPLAINT_TRANSITIONS",
    "DEFAULT_SLA",
    "FRONT_ROLES",
    "HANDLER_ROLES",
    "MANAGER_ROLES",
    "MAX_CALENDAR_DAYS",
    "OWNER_ROLES",
    "BreachKind",
    "ComplaintDecision",
    "NotAllowed",
    "SlaTarget",
    "TicketRuleError",
    "TransitionInvalid",
    "add_business_days",
    "add_business_time",
    "booking_transition",
    "breached_flags",
    "complaint_deadlines",
    "complaint_transition",
    "due_breaches",
    "handover",
    "initial_owner",
    "open_ranges",
    "take",
]

# A calendar with no open hour in this many days cannot produce a deadline.
MAX_CALENDAR_DAYS: Final = 3 * 366

FRONT_ROLES: Final = frozenset({"agent", "specialist"})
MANAGER_ROLES: Final = frozenset({"supervisor", "admin"})
# who may own a complaint (and so be handed one)
OWNER_ROLES: Final = FRONT_ROLES | MANAGER_ROLES
# who may act on a complaint they do not own (reassign, change status)
HANDLER_ROLES: Final = MANAGER_ROLES

BreachKind = Literal["first_response", "resolution"]


class TicketRuleError(Exception):
    """A rule refused the action; `code` is the stable API error code."""

    code: str = "ticket_rule"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class TransitionInvalid(TicketRuleError):
    """The status change is not in the transition table (HTTP 409 `invalid_transition`)."""

    code = "invalid_transition"


class NotAllowed(TicketRuleError):
    """This person may not do this to this case (HTTP 403)."""

    code = "not_case_owner"


# ------------------------------------------------------------------------------ bookings

BOOKING_TRANSITIONS: Final[Mapping[BookingStatus, frozenset[BookingStatus]]] = {
    "new": frozenset({"confirmed", "cancelled"}),
    "confirmed": frozenset({"fulfilled", "cancelled"}),
    "fulfilled": frozenset(),
    "cancelled": frozenset(),
}


def booking_transition(current: BookingStatus, target: BookingStatus) -> BookingStatus:
    """`target` if new -> confirmed -> fulfilled / cancelled allows it; else TransitionInvalid."""
    if target not in BOOKING_TRANSITIONS[current]:
        allowed = ", ".join(sorted(BOOKING_TRANSITIONS[current])) or "none (final status)"
        raise TransitionInvalid(
            f"a booking cannot go from {current} to {target} (allowed: {allowed})"
        )
    return target


# ------------------------------------------------------------------------------ complaints

# (from, to) -> action name recorded on the timeline
COMPLAINT_TRANSITIONS: Final[Mapping[tuple[ComplaintStatus, ComplaintStatus], str]] = {
    ("open", "investigating"): "start",
    ("open", "resolved"): "resolve",  # solved on first contact (route 1)
    ("investigating", "escalated"): "escalate",  # to the technical department (route 4)
    ("escalated", "investigating"): "return",  # back from the technical department
    ("investigating", "resolved"): "resolve",
    ("escalated", "resolved"): "resolve",
    ("resolved", "closed"): "close",
    ("resolved", "investigating"): "reopen",
    ("closed", "investigating"): "reopen",
}


@dataclass(frozen=True, slots=True)
class ComplaintDecision:
    """What a complaint action changes: the action name and the new field values."""

    action: str
    changes: Mapping[str, object]


def _may_act(complaint: Complaint, user_id: int, role: str) -> None:
    if role in HANDLER_ROLES:
        return
    if complaint.owner_id is None:
        raise NotAllowed("nobody owns this complaint yet: take it first", code="complaint_unowned")
    if complaint.owner_id != user_id:
        raise NotAllowed(
            "only the complaint's owner acts on it; ask for a handover", code="not_case_owner"
        )


def complaint_transition(
    complaint: Complaint,
    target: ComplaintStatus,
    *,
    user_id: int,
    role: str,
    now: datetime,
    outcome: str | None = None,
    customer_informed: bool = False,
) -> ComplaintDecision:
    """Move `complaint` to `target`: checks the table, the actor, and the closing rule (the
    customer must have been told the outcome). Stamps first response, resolution, closing."""
    _may_act(complaint, user_id, role)
    action = COMPLAINT_TRANSITIONS.get((complaint.status, target))
    if action is None:
        allowed = sorted(to for (frm, to) in COMPLAINT_TRANSITIONS if frm == complaint.status)
        raise TransitionInvalid(
            f"a complaint cannot go from {complaint.status} to {target} "
            f"(allowed: {', '.join(allowed) or 'none'})"
        )
    changes: dict[str, object] = {"status": target}
    if complaint.first_responded_at is None:
        changes["first_responded_at"] = now
    if target == "resolved":
        if not (outcome or complaint.outcome):
            raise TicketRuleError("say what the outcome is when resolving", code="outcome_required")
        changes["resolved_at"] = now
        if outcome:
            changes["outcome"] = outcome
    elif target == "closed":
        informed_at = complaint.customer_informed_at or (now if customer_informed else None)
        if informed_at is None:
            raise TicketRuleError(
                "tell the customer the outcome before closing (customer_informed)",
                code="customer_not_informed",
            )
        changes["customer_informed_at"] = informed_at
        changes["closed_at"] = now
    elif action == "reopen":
        changes.update(
            reopen_count=complaint.reopen_count + 1,
            resolved_at=None,
            closed_at=None,
            customer_informed_at=None,
        )
    return ComplaintDecision(action, changes)


def initial_owner(*, creator_id: int, creator_role: str, from_call: bool) -> int | None:
    """First-contact ownership: a front-line agent who files a complaint from a call owns it;
    filed any other way it waits, unowned, for the first agent who takes it."""
    return creator_id if from_call and creator_role in FRONT_ROLES else None


def take(complaint: Complaint, *, user_id: int, role: str) -> ComplaintDecision:
    """The first agent who takes an unowned complaint owns it. Ownership never moves by taking."""
    if role not in OWNER_ROLES:
        raise NotAllowed(f"role {role} cannot own complaints", code="cannot_own")
    if complaint.status == "closed":
        raise TransitionInvalid("a closed complaint cannot be taken; reopen it first")
    if complaint.owner_id is not None:
        if complaint.owner_id == user_id:
            raise TicketRuleError("you already own this complaint", code="already_owner")
        raise TicketRuleError(
            "this complaint already has an owner; ownership moves only by handover",
            code="already_owned",
        )
    return ComplaintDecision("take", {"owner_id": user_id})


def handover(
    complaint: Complaint,
    *,
    user_id: int,
    role: str,
    to_user_id: int,
    to_role: str,
    to_disabled: bool,
    reason: str,
) -> ComplaintDecision:
    """An explicit handover with a reason, by the owner (or a supervisor reassigning)."""
    if not reason.strip():
        raise TicketRuleError("a handover needs a reason", code="reason_required")
    if role not in HANDLER_ROLES:
        if complaint.owner_id is None:
            raise NotAllowed(
                "nobody owns this complaint yet: take it first", code="complaint_unowned"
            )
        if complaint.owner_id != user_id:
            raise NotAllowed("only the owner (or a supervisor) can hand a complaint over")
    if complaint.status == "closed":
        raise TransitionInvalid("a closed complaint cannot be handed over; reopen it first")
    if to_disabled or to_role not in OWNER_ROLES:
        raise TicketRuleError(
            "the new owner must be an active agent, specialist or supervisor",
            code="invalid_new_owner",
        )
    if to_user_id == complaint.owner_id:
        raise TicketRuleError("that person already owns this complaint", code="already_owner")
    return ComplaintDecision("handover", {"owner_id": to_user_id})


# ------------------------------------------------------------------------------ deadlines


@dataclass(frozen=True, slots=True)
class SlaTarget:
    """First response within `first_response` of business time; resolution by the close of
    the `resolution_days`-th business day after the complaint's day."""

    first_response: timedelta
    resolution_days: int


# the insurer's desk: problem cases within 3 (business) days
DEFAULT_SLA: Final[Mapping[Severity, SlaTarget]] = {
    "critical": SlaTarget(timedelta(hours=2), 1),
    "high": SlaTarget(timedelta(hours=4), 2),
    "medium": SlaTarget(timedelta(hours=8), 3),
    "low": SlaTarget(timedelta(hours=8), 3),
}


def open_ranges(calendar: BusinessCalendar, day: date) -> tuple[TimeRange, ...]:
    """The opening hours of a local calendar day (a holiday's own hours replace the week's)."""
    holiday = calendar.holidays.get(day)
    if holiday is not None:
        return holiday.hours
    return calendar.weekly.get(day.weekday(), ())


def _intervals(calendar: BusinessCalendar, day: date) -> list[tuple[datetime, datetime]]:
    """The day's open intervals as UTC datetimes (arithmetic in UTC: DST-safe)."""
    tz = calendar.timezone
    out: list[tuple[datetime, datetime]] = []
    for r in open_ranges(calendar, day):
        start = datetime.combine(day, r.start, tzinfo=tz).astimezone(UTC)
        if r.end is None:
            end_local = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
        else:
            end_local = datetime.combine(day, r.end, tzinfo=tz)
        end = end_local.astimezone(UTC)
        if end > start:
            out.append((start, end))
    return sorted(out)


def as_utc(name: str, value: datetime) -> datetime:
    """`value` in UTC; ValueError for a naive datetime (its zone would be a guess)."""
    return require_aware(name, value).astimezone(UTC)


def add_business_time(calendar: BusinessCalendar, start: datetime, duration: timedelta) -> datetime:
    """The moment `duration` of open business time has passed after `start` (aware, UTC).

    Closed time (nights, closed weekdays, holidays) does not count; a start outside hours
    begins counting at the next opening. A zero duration returns `start` itself. Raises
    ValueError for a negative duration, a naive start, or a calendar that never opens.
    """
    cursor = as_utc("start", start)
    if duration < timedelta(0):
        raise ValueError("duration must not be negative")
    if duration == timedelta(0):
        return cursor
    remaining = duration
    day = cursor.astimezone(calendar.timezone).date() - timedelta(days=1)  # ranges past midnight
    for _ in range(MAX_CALENDAR_DAYS):
        for begin, end in _intervals(calendar, day):
            if end <= cursor:
                continue
            begin = max(begin, cursor)
            available = end - begin
            if available >= remaining:
                return begin + remaining
            remaining -= available
            cursor = end
        day += timedelta(days=1)
    raise ValueError(f"the calendar has no open hours within {MAX_CALENDAR_DAYS} days")


def add_business_days(calendar: BusinessCalendar, start: datetime, days: int) -> datetime:
    """Close of business on the `days`-th business day after `start`'s local day (a day with
    any opening hours counts). `days` 0 means the close of `start`'s own day if it is open,
    else of the next business day."""
    cursor = as_utc("start", start)
    if days < 0:
        raise ValueError("days must not be negative")
    day = cursor.astimezone(calendar.timezone).date()
    counted = 0
    for _ in range(MAX_CALENDAR_DAYS):
        intervals = _intervals(calendar, day)
        if intervals:
            if counted == days:
                return intervals[-1][1]
            counted += 1
        day += timedelta(days=1)
    raise ValueError(f"the calendar has no open hours within {MAX_CALENDAR_DAYS} days")


def complaint_deadlines(
    calendar: BusinessCalendar,
    created_at: datetime,
    severity: Severity,
    targets: Mapping[Severity, SlaTarget] = DEFAULT_SLA,
) -> tuple[datetime, datetime]:
    """(first response due, resolution due) for a complaint filed at `created_at`."""
    target = targets[severity]
    first = add_business_time(calendar, created_at, target.first_response)
    resolution = add_business_days(calendar, created_at, target.resolution_days)
    return first, max(first, resolution)


def breached_flags(complaint: Complaint, now: datetime) -> tuple[bool, bool]:
    """(first response breached, resolution breached) as of `now`, for display (red)."""
    responded = complaint.first_responded_at
    first = (responded or now) > complaint.first_response_due
    done = complaint.resolved_at if complaint.status in ("resolved", "closed") else None
    resolution = (done or now) > complaint.resolution_due
    return first or complaint.first_response_breached_at is not None, (
        resolution or complaint.resolution_breached_at is not None
    )


def due_breaches(complaint: Complaint, now: datetime) -> list[BreachKind]:
    """Breaches that happened and were not yet notified (each is notified once)."""
    out: list[BreachKind] = []
    if (
        complaint.first_response_breached_at is None
        and complaint.first_responded_at is None
        and now > complaint.first_response_due
    ):
        out.append("first_response")
    if (
        complaint.resolution_breached_at is None
        and complaint.status not in ("resolved", "closed")
        and now > complaint.resolution_due
    ):
        out.append("resolution")
    return out
