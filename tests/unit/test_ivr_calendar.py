"""Business calendar: weekdays, holidays, special hours, timezones (fixed-offset and DST)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from callcenter.ivr.calendar import always_open
from callcenter.ivr.loader import load_calendar, parse_calendar

ROOT = Path(__file__).resolve().parents[2]
SHANGHAI = load_calendar(ROOT / "ivr_flows" / "calendar.yaml")
CST = timezone(timedelta(hours=8))


@pytest.mark.parametrize(
    ("local", "is_open"),
    [
        (datetime(2026, 12, 2, 7, 59), False),  # Wednesday before opening
        (datetime(2026, 12, 2, 8, 0), True),  # opening minute is open
        (datetime(2026, 12, 2, 19, 59), True),
        (datetime(2026, 12, 2, 20, 0), False),  # end is exclusive
        (datetime(2026, 12, 5, 12, 0), True),  # Saturday
        (datetime(2026, 12, 6, 12, 0), False),  # Sunday: closed
    ],
)
def test_weekly_hours_in_shanghai(local: datetime, is_open: bool) -> None:
    assert SHANGHAI.is_open(local.replace(tzinfo=CST)) is is_open


def test_utc_instant_is_converted_to_local_time() -> None:
    # 2026-12-02 00:30 UTC is 08:30 in Shanghai: open. 12:30 UTC is 20:30: closed.
    assert SHANGHAI.is_open(datetime(2026, 12, 2, 0, 30, tzinfo=UTC))
    assert not SHANGHAI.is_open(datetime(2026, 12, 2, 12, 30, tzinfo=UTC))
    # 23:30 UTC on Saturday is 07:30 Sunday in Shanghai: closed although Saturday in UTC.
    assert not SHANGHAI.is_open(datetime(2026, 12, 5, 23, 30, tzinfo=UTC))


def test_holiday_closed_and_named() -> None:
    status = SHANGHAI.status(datetime(2026, 10, 1, 10, 0, tzinfo=CST))  # a Thursday
    assert not status.open
    assert status.holiday is not None and "National Day" in status.holiday


def test_holiday_with_special_hours() -> None:
    assert SHANGHAI.is_open(datetime(2026, 12, 31, 15, 0, tzinfo=CST))
    status = SHANGHAI.status(datetime(2026, 12, 31, 17, 0, tzinfo=CST))  # normally open
    assert not status.open and status.holiday is not None


def test_naive_datetime_rejected() -> None:
    with pytest.raises(ValueError):
        SHANGHAI.is_open(datetime(2026, 12, 2, 10, 0))


def test_dst_zone() -> None:
    text = """
timezone: Europe/Berlin
weekly:
  mon-fri: ["09:00-17:00"]
  sat, sun: []
"""
    cal, errors = parse_calendar(text, source="c.yaml")
    assert errors == [] and cal is not None
    # Winter (CET, UTC+1): 08:30 UTC = 09:30 local -> open; 07:30 UTC = 08:30 -> closed.
    assert cal.is_open(datetime(2026, 1, 14, 8, 30, tzinfo=UTC))
    assert not cal.is_open(datetime(2026, 1, 14, 7, 30, tzinfo=UTC))
    # Summer (CEST, UTC+2): 07:30 UTC = 09:30 local -> open; 15:30 UTC = 17:30 -> closed.
    assert cal.is_open(datetime(2026, 7, 15, 7, 30, tzinfo=UTC))
    assert not cal.is_open(datetime(2026, 7, 15, 15, 30, tzinfo=UTC))
    # The DST switch day (Sunday 2026-03-29) is closed; Monday after it opens at 07:00 UTC.
    assert not cal.is_open(datetime(2026, 3, 29, 10, 0, tzinfo=UTC))
    assert cal.is_open(datetime(2026, 3, 30, 7, 0, tzinfo=UTC))
    assert not cal.is_open(datetime(2026, 3, 30, 6, 59, tzinfo=UTC))


def test_24_hour_day_and_multiple_ranges() -> None:
    text = """
timezone: UTC
weekly:
  mon: ["00:00-24:00"]
  tue: ["08:00-12:00", "13:00-17:00"]
"""
    cal, errors = parse_calendar(text, source="c.yaml")
    assert errors == [] and cal is not None
    assert cal.is_open(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
    assert cal.is_open(datetime(2026, 12, 1, 11, 0, tzinfo=UTC))
    assert not cal.is_open(datetime(2026, 12, 1, 12, 30, tzinfo=UTC))
    assert not cal.is_open(datetime(2026, 12, 2, 12, 30, tzinfo=UTC))  # Wednesday unlisted


def test_always_open() -> None:
    assert always_open().is_open(datetime(2026, 12, 6, 3, 0, tzinfo=UTC))
