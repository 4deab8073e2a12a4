"""Business hours: a weekly schedule plus dated holidays, in one timezone (pure).

Loaded from ``ivr_flows/calendar.yaml`` by ``callcenter.ivr.loader.load_calendar``; shared by the
IVR (hours nodes) and anything else that needs to know whether the hotline is staffed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from types import MappingProxyType
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A half-open range [start, end) within one day; ``end`` None means midnight (24:00)."""

    start: time
    end: time | None

    def contains(self, t: time) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True, slots=True)
class Holiday:
    day: date
    name: str
    hours: tuple[TimeRange, ...] = ()  # special opening hours on that day; empty = closed


@dataclass(frozen=True, slots=True)
class HoursStatus:
    open: bool
    holiday: str | None = None  # the holiday name when the day is a holiday


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    timezone: ZoneInfo
    weekly: Mapping[int, tuple[TimeRange, ...]]  # 0 = Monday
    holidays: Mapping[date, Holiday] = field(default_factory=lambda: MappingProxyType({}))

    def status(self, now: datetime) -> HoursStatus:
        """Open or closed at ``now`` (an aware datetime), and the holiday name if any."""
        if now.tzinfo is None:
            raise ValueError("BusinessCalendar needs an aware datetime")
        local = now.astimezone(self.timezone)
        t = local.time().replace(tzinfo=None)
        holiday = self.holidays.get(local.date())
        if holiday is not None:
            return HoursStatus(any(r.contains(t) for r in holiday.hours), holiday.name)
        ranges = self.weekly.get(local.weekday(), ())
        return HoursStatus(any(r.contains(t) for r in ranges))

    def is_open(self, now: datetime) -> bool:
        return self.status(now).open


def always_open(tz: str = "UTC") -> BusinessCalendar:
    """A calendar open around the clock (used when no calendar.yaml exists)."""
    full = (TimeRange(time(0, 0), None),)
    return BusinessCalendar(ZoneInfo(tz), MappingProxyType(dict.fromkeys(range(7), full)))
