"""The pure ticket rules: booking and complaint state machines, first-contact ownership and
handover, business-time deadlines (weekends, holidays, midnight, time zones), breaches."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from typing import get_args
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.ivr.calendar import BusinessCalendar, Holiday, TimeRange, always_open
from callcenter.tickets.model import BookingStatus, Complaint, ComplaintStatus
from callcenter.tickets.service import (
    BOOKING_TRANSITIONS,
    COMPLAINT_TRANSITIONS,
    DEFAULT_SLA,
    ComplaintDecision,
    NotAllowed,
    TicketRuleError,
    TransitionInvalid,
    add_business_days,
    add_business_time,
    booking_transition,
    breached_flags,
    complaint_deadlines,
    complaint_transition,
    due_breaches,
    handover,
    initial_owner,
    take,
)

SH = ZoneInfo("Asia/Shanghai")
H = timedelta(hours=1)


def hours(*ranges: str) -> tuple[TimeRange, ...]:
    out = []
    for r in ranges:
        a, b = r.split("-")
        end = None if b == "24:00" else time.fromisoformat(b)
        out.append(TimeRange(time.fromisoformat(a), end))
    return tuple(out)


def calendar(
    weekly: dict[int, tuple[TimeRange, ...]] | None = None,
    holidays: tuple[Holiday, ...] = (),
    tz: ZoneInfo = SH,
) -> BusinessCalendar:
    if weekly is None:  # the demo calendar: Mon-Sat 08:00-20:00
        weekly = {d: hours("08:00-20:00") for d in range(6)}
    return BusinessCalendar(
        tz, MappingProxyType(weekly), MappingProxyType({h.day: h for h in holidays})
    )


def sh(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=SH)


def complaint(**kw: object) -> Complaint:
    base = Complaint(
        id=1,
        customer_id=1,
        category="delivery",
        severity="medium",
        description="late",
        status="open",
        owner_id=10,
        created_by=10,
        first_response_due=datetime(2026, 12, 1, 4, tzinfo=UTC),
        resolution_due=datetime(2026, 12, 3, 12, tzinfo=UTC),
        created_at=datetime(2026, 11, 30, 2, tzinfo=UTC),
        updated_at=datetime(2026, 11, 30, 2, tzinfo=UTC),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


NOW = datetime(2026, 11, 30, 3, tzinfo=UTC)

# ------------------------------------------------------------------------------ bookings


@pytest.mark.parametrize(
    ("current", "target"),
    list(itertools.product(get_args(BookingStatus), repeat=2)),
)
def test_booking_transition_table_is_exhaustive(
    current: BookingStatus, target: BookingStatus
) -> None:
    allowed = {
        ("new", "confirmed"),
        ("new", "cancelled"),
        ("confirmed", "fulfilled"),
        ("confirmed", "cancelled"),
    }
    if (current, target) in allowed:
        assert booking_transition(current, target) == target
    else:
        with pytest.raises(TransitionInvalid) as info:
            booking_transition(current, target)
        assert info.value.code == "invalid_transition"
    assert set(BOOKING_TRANSITIONS) == set(get_args(BookingStatus))


# ------------------------------------------------------------------------------ complaints

ALLOWED_COMPLAINT = {
    ("open", "investigating"),
    ("open", "resolved"),
    ("investigating", "escalated"),
    ("escalated", "investigating"),
    ("investigating", "resolved"),
    ("escalated", "resolved"),
    ("resolved", "closed"),
    ("resolved", "investigating"),
    ("closed", "investigating"),
}


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product(get_args(ComplaintStatus), repeat=2))
)
def test_complaint_transition_table_is_exhaustive(
    current: ComplaintStatus, target: ComplaintStatus
) -> None:
    c = complaint(status=current, outcome="explained", customer_informed_at=NOW)
    if (current, target) in ALLOWED_COMPLAINT:
        decision = complaint_transition(c, target, user_id=10, role="agent", now=NOW)
        assert decision.changes["status"] == target
        assert decision.action == COMPLAINT_TRANSITIONS[(current, target)]
    else:
        with pytest.raises(TransitionInvalid):
            complaint_transition(c, target, user_id=10, role="agent", now=NOW)
    assert set(COMPLAINT_TRANSITIONS) == ALLOWED_COMPLAINT


def test_first_response_is_stamped_once() -> None:
    decision = complaint_transition(complaint(), "investigating", user_id=10, role="agent", now=NOW)
    assert decision.changes["first_responded_at"] == NOW
    started = complaint(status="investigating", first_responded_at=NOW)
    later = NOW + H
    decision = complaint_transition(started, "escalated", user_id=10, role="agent", now=later)
    assert "first_responded_at" not in decision.changes


def test_resolving_needs_an_outcome_and_closing_needs_the_customer_told() -> None:
    c = complaint(status="investigating")
    with pytest.raises(TicketRuleError) as info:
        complaint_transition(c, "resolved", user_id=10, role="agent", now=NOW)
    assert info.value.code == "outcome_required"
    d = complaint_transition(c, "resolved", user_id=10, role="agent", now=NOW, outcome="refund")
    assert d.changes["outcome"] == "refund" and d.changes["resolved_at"] == NOW
    resolved = complaint(status="resolved", outcome="refund", resolved_at=NOW)
    with pytest.raises(TicketRuleError) as info:
        complaint_transition(resolved, "closed", user_id=10, role="agent", now=NOW)
    assert info.value.code == "customer_not_informed"
    d = complaint_transition(
        resolved, "closed", user_id=10, role="agent", now=NOW, customer_informed=True
    )
    assert d.changes["customer_informed_at"] == NOW and d.changes["closed_at"] == NOW
    told = replace(resolved, customer_informed_at=NOW - H)
    d = complaint_transition(told, "closed", user_id=10, role="agent", now=NOW)
    assert d.changes["customer_informed_at"] == NOW - H


def test_reopen_counts_and_clears_the_outcome_stamps() -> None:
    closed = complaint(
        status="closed", reopen_count=2, resolved_at=NOW, closed_at=NOW, customer_informed_at=NOW
    )
    d = complaint_transition(closed, "investigating", user_id=10, role="agent", now=NOW)
    assert d.action == "reopen"
    assert d.changes == {
        "status": "investigating",
        "reopen_count": 3,
        "resolved_at": None,
        "closed_at": None,
        "customer_informed_at": None,
        "first_responded_at": NOW,
    }


@pytest.mark.parametrize(
    ("owner", "user", "role", "code"),
    [
        (None, 10, "agent", "complaint_unowned"),
        (None, 10, "specialist", "complaint_unowned"),
        (11, 10, "agent", "not_case_owner"),
        (11, 10, "specialist", "not_case_owner"),
        (11, 10, "qa", "not_case_owner"),
    ],
)
def test_only_the_owner_or_a_supervisor_acts(
    owner: int | None, user: int, role: str, code: str
) -> None:
    with pytest.raises(NotAllowed) as info:
        complaint_transition(
            complaint(owner_id=owner), "investigating", user_id=user, role=role, now=NOW
        )
    assert info.value.code == code
    for manager in ("supervisor", "admin"):
        d = complaint_transition(
            complaint(owner_id=owner), "investigating", user_id=user, role=manager, now=NOW
        )
        assert d.changes["status"] == "investigating"


def test_first_contact_ownership() -> None:
    assert initial_owner(creator_id=5, creator_role="agent", from_call=True) == 5
    assert initial_owner(creator_id=5, creator_role="specialist", from_call=True) == 5
    assert initial_owner(creator_id=5, creator_role="agent", from_call=False) is None
    assert initial_owner(creator_id=5, creator_role="supervisor", from_call=True) is None


def test_take_only_an_unowned_open_complaint() -> None:
    assert take(complaint(owner_id=None), user_id=7, role="agent").changes == {"owner_id": 7}
    with pytest.raises(TicketRuleError) as info:
        take(complaint(owner_id=8), user_id=7, role="specialist")
    assert info.value.code == "already_owned"
    with pytest.raises(TicketRuleError) as info:
        take(complaint(owner_id=7), user_id=7, role="agent")
    assert info.value.code == "already_owner"
    with pytest.raises(NotAllowed) as info:
        take(complaint(owner_id=None), user_id=7, role="qa")
    assert info.value.code == "cannot_own"
    with pytest.raises(TransitionInvalid):
        take(complaint(owner_id=None, status="closed"), user_id=7, role="agent")


def _handover(c: Complaint, **kw: object) -> ComplaintDecision:
    args: dict[str, object] = {
        "user_id": 10,
        "role": "agent",
        "to_user_id": 20,
        "to_role": "specialist",
        "to_disabled": False,
        "reason": "trade dispute",
    }
    args.update(kw)
    return handover(c, **args)  # type: ignore[arg-type]


def test_handover_rules() -> None:
    d = _handover(complaint())
    assert d.changes == {"owner_id": 20} and d.action == "handover"
    cases: list[tuple[Complaint, dict[str, object], type[TicketRuleError], str]] = [
        (complaint(), {"reason": "  "}, TicketRuleError, "reason_required"),
        (complaint(owner_id=11), {}, NotAllowed, "not_case_owner"),
        (complaint(owner_id=None), {}, NotAllowed, "complaint_unowned"),
        (complaint(), {"to_role": "qa"}, TicketRuleError, "invalid_new_owner"),
        (complaint(), {"to_disabled": True}, TicketRuleError, "invalid_new_owner"),
        (complaint(), {"to_user_id": 10}, TicketRuleError, "already_owner"),
        (complaint(status="closed"), {}, TransitionInvalid, "invalid_transition"),
    ]
    for c, kw, exc, code in cases:
        with pytest.raises(exc) as info:
            _handover(c, **kw)
        assert info.value.code == code, kw
    # a supervisor reassigns what others own, and assigns the unowned
    assert _handover(complaint(owner_id=11), role="supervisor").changes == {"owner_id": 20}
    assert _handover(complaint(owner_id=None), role="admin").changes == {"owner_id": 20}


# ------------------------------------------------------------------------------ business time


def test_within_one_day() -> None:
    cal = calendar()
    assert add_business_time(cal, sh(2026, 11, 30, 10), 2 * H) == sh(2026, 11, 30, 12)


def test_start_before_opening_and_after_closing() -> None:
    cal = calendar()
    assert add_business_time(cal, sh(2026, 11, 30, 6), 2 * H) == sh(2026, 11, 30, 10)
    assert add_business_time(cal, sh(2026, 11, 30, 21), 2 * H) == sh(2026, 12, 1, 10)


def test_skips_the_weekend_and_holidays() -> None:
    cal = calendar(holidays=(Holiday(date(2026, 12, 7), "closed Monday"),))
    # Saturday 19:00 + 3h: 1h Saturday, Sunday closed, Monday a holiday, 2h Tuesday
    assert add_business_time(cal, sh(2026, 12, 5, 19), 3 * H) == sh(2026, 12, 8, 10)


def test_holiday_with_short_hours() -> None:
    cal = calendar(holidays=(Holiday(date(2026, 12, 31), "NYE", hours("08:00-16:00")),))
    assert add_business_time(cal, sh(2026, 12, 31, 15), 2 * H) == sh(2027, 1, 1, 9)


def test_across_midnight_with_split_and_overnight_hours() -> None:
    night = {d: hours("00:00-02:00", "22:00-24:00") for d in range(7)}
    cal = calendar(night)
    assert add_business_time(cal, sh(2026, 11, 30, 23), 2 * H) == sh(2026, 12, 1, 1)
    # started inside yesterday's late range that runs to midnight
    assert add_business_time(cal, sh(2026, 12, 1, 1, 30), H) == sh(2026, 12, 1, 22, 30)


def test_result_is_utc_and_start_time_zone_does_not_matter() -> None:
    cal = calendar()
    start_utc = datetime(2026, 11, 30, 2, tzinfo=UTC)  # 10:00 Shanghai
    start_ny = start_utc.astimezone(ZoneInfo("America/New_York"))
    a = add_business_time(cal, start_utc, 90 * timedelta(minutes=1))
    b = add_business_time(cal, start_ny, 90 * timedelta(minutes=1))
    assert a == b == datetime(2026, 11, 30, 3, 30, tzinfo=UTC)
    assert a.tzinfo == UTC


def test_daylight_saving_change_counts_real_hours() -> None:
    # Europe/Berlin, 2026-10-25 03:00 CEST -> 02:00 CET: the night is 25 hours long
    berlin = ZoneInfo("Europe/Berlin")
    cal = calendar({d: hours("00:00-24:00") for d in range(7)}, tz=berlin)
    start = datetime(2026, 10, 24, 23, 0, tzinfo=berlin)
    assert add_business_time(cal, start, 4 * H) == start.astimezone(UTC) + 4 * H


def test_zero_negative_naive_and_never_open() -> None:
    cal = calendar()
    start = sh(2026, 11, 29, 12)  # a Sunday: zero needs no open time
    assert add_business_time(cal, start, timedelta(0)) == start
    with pytest.raises(ValueError, match="negative"):
        add_business_time(cal, start, -H)
    with pytest.raises(ValueError, match="aware"):
        add_business_time(cal, datetime(2026, 11, 30, 10), H)
    with pytest.raises(ValueError, match="no open hours"):
        add_business_time(calendar({}), start, H)
    with pytest.raises(ValueError, match="no open hours"):
        add_business_days(calendar({}), start, 1)


def test_business_days_end_at_closing_time() -> None:
    cal = calendar()
    # Friday 10:00 + 1 business day = Saturday close; + 2 skips Sunday = Monday close
    assert add_business_days(cal, sh(2026, 12, 4, 10), 1) == sh(2026, 12, 5, 20)
    assert add_business_days(cal, sh(2026, 12, 4, 10), 2) == sh(2026, 12, 7, 20)
    assert add_business_days(cal, sh(2026, 12, 6, 10), 0) == sh(2026, 12, 7, 20)  # Sunday


def test_complaint_deadlines_by_severity() -> None:
    cal = calendar()
    created = sh(2026, 11, 30, 10)  # Monday
    first, resolution = complaint_deadlines(cal, created, "critical")
    assert first == sh(2026, 11, 30, 12) and resolution == sh(2026, 12, 1, 20)
    first, resolution = complaint_deadlines(cal, created, "medium")
    assert first == sh(2026, 11, 30, 18) and resolution == sh(2026, 12, 3, 20)
    assert [DEFAULT_SLA[s].resolution_days for s in ("critical", "high", "medium", "low")] == [
        1,
        2,
        3,
        3,
    ]


@given(
    start=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    a=st.integers(min_value=0, max_value=60 * 40),
    b=st.integers(min_value=0, max_value=60 * 40),
)
def test_business_time_adds_up(start: datetime, a: int, b: int) -> None:
    cal = calendar(holidays=(Holiday(date(2026, 12, 31), "NYE", hours("08:00-16:00")),))
    da, db = timedelta(minutes=a), timedelta(minutes=b)
    one = add_business_time(cal, start, da + db)
    two = add_business_time(cal, add_business_time(cal, start, da), db)
    assert one == two
    assert one >= start
    if a + b > 0:
        # the deadline falls in (or at the end of) open time
        assert cal.is_open(one - timedelta(microseconds=1))


def test_always_open_calendar_is_plain_addition() -> None:
    start = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)
    assert add_business_time(always_open(), start, 5 * H) == start + 5 * H


# ------------------------------------------------------------------------------ breaches


def test_breach_flags_and_due_breaches() -> None:
    c = complaint()
    before = c.first_response_due - H
    assert breached_flags(c, before) == (False, False) and due_breaches(c, before) == []
    after_first = c.first_response_due + H
    assert breached_flags(c, after_first) == (True, False)
    assert due_breaches(c, after_first) == ["first_response"]
    late = c.resolution_due + H
    assert due_breaches(c, late) == ["first_response", "resolution"]
    # notified ones are not due again, but stay shown
    stamped = replace(c, first_response_breached_at=after_first)
    assert due_breaches(stamped, late) == ["resolution"]
    assert breached_flags(stamped, before) == (True, False)
    # responded in time: never a first-response breach
    answered = replace(c, first_responded_at=c.first_response_due - H)
    assert due_breaches(answered, late) == ["resolution"]
    assert breached_flags(answered, late) == (False, True)
    # resolved in time: no resolution breach, even later
    resolved = replace(answered, status="resolved", resolved_at=c.resolution_due - H)
    assert due_breaches(resolved, late) == [] and breached_flags(resolved, late) == (False, False)
    # resolved late stays red
    late_fix = replace(answered, status="closed", resolved_at=c.resolution_due + H)
    assert breached_flags(late_fix, late + H) == (False, True)
    assert due_breaches(late_fix, late + H) == []
