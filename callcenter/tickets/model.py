"""Bookings/orders, complaints, the case timeline and call dispositions: pure data, and the
request/response schemas of their API (they also generate the OpenAPI document)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from callcenter.web.api import Page, PageQuery

__all__ = [
    "Booking",
    "BookingCreate",
    "BookingOut",
    "BookingQuery",
    "BookingStatus",
    "BookingStatusChange",
    "BookingUpdate",
    "CaseEvent",
    "CaseEventOut",
    "CaseType",
    "Complaint",
    "ComplaintCallLink",
    "ComplaintCreate",
    "ComplaintNote",
    "ComplaintOut",
    "ComplaintQuery",
    "ComplaintStats",
    "ComplaintStatsOut",
    "ComplaintStatsQuery",
    "ComplaintStatus",
    "ComplaintStatusChange",
    "ComplaintUpdate",
    "DbId",
    "Disposition",
    "DispositionIn",
    "DispositionOut",
    "Handover",
    "InputModel",
    "ListOrder",
    "PagePosition",
    "Severity",
]

BookingStatus = Literal["new", "confirmed", "fulfilled", "cancelled"]
ComplaintStatus = Literal["open", "investigating", "escalated", "resolved", "closed"]
Severity = Literal["low", "medium", "high", "critical"]
CaseType = Literal["complaint", "booking", "customer"]
# the sort orders of the booking and complaint lists: by creation time (then id)
ListOrder = Literal["newest", "oldest"]
LIST_ORDERS: Final[tuple[ListOrder, ...]] = get_args(ListOrder)
CURSOR_LENGTH: Final = 200
_CURSOR_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class PagePosition:
    """Where a page of a list ended: the last row's sort key (creation time) and id, in the
    list's `order`. The next page is the rows after it in that order, so rows created
    meanwhile neither repeat nor push others along (keyset pagination). Sent to clients as an
    opaque cursor (`encode`); `decode` refuses anything it did not make (ValueError)."""

    order: ListOrder
    at: datetime
    id: int

    def encode(self) -> str:
        at = self.at.astimezone(UTC).isoformat()
        raw = json.dumps([_CURSOR_VERSION, self.order, at, self.id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> PagePosition:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            version, order, at, ident = json.loads(raw)
            when = datetime.fromisoformat(at)
            if when.tzinfo is not None:
                when = when.astimezone(UTC)
        except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
            raise ValueError("not a cursor of this list") from exc  # (JSON errors included)
        if (
            type(version) is not int
            or version != _CURSOR_VERSION
            or order not in LIST_ORDERS
            or when.tzinfo is None
            or type(ident) is not int
            or not 1 <= ident <= 2**31 - 1
        ):
            raise ValueError("not a cursor of this list")
        return cls(order=order, at=when, id=ident)


@dataclass(frozen=True, slots=True)
class Booking:
    id: int
    customer_id: int
    item: str
    status: BookingStatus
    created_by: int
    created_at: datetime
    updated_at: datetime
    call_uniqueid: str | None = None
    scheduled_for: datetime | None = None
    for_whom: str = ""
    urgent: bool = False
    notes: str = ""


@dataclass(frozen=True, slots=True)
class Complaint:
    id: int
    customer_id: int
    category: str
    severity: Severity
    description: str
    status: ComplaintStatus
    owner_id: int | None
    created_by: int
    first_response_due: datetime
    resolution_due: datetime
    created_at: datetime
    updated_at: datetime
    first_responded_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    customer_informed_at: datetime | None = None
    outcome: str | None = None
    reopen_count: int = 0
    first_response_breached_at: datetime | None = None
    resolution_breached_at: datetime | None = None
    calls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """One line of a case's tracking sheet."""

    id: int
    case_type: CaseType
    case_id: int
    at: datetime
    actor_user_id: int | None
    action: str
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True, slots=True)
class Disposition:
    id: int
    call_uniqueid: str
    user_id: int
    category: str
    outcome: str
    note: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ComplaintStats:
    total: int
    by_category: dict[str, int]
    by_status: dict[str, int]
    by_outcome: dict[str, int]
    by_severity: dict[str, int]
    overdue: int  # open complaints past a deadline now
    breached: int  # complaints that ever breached a deadline


# ------------------------------------------------------------------------------ schemas

_IN = ConfigDict(extra="forbid", str_strip_whitespace=True)
_OUT = ConfigDict(from_attributes=True)

# a database id: positive and within a 32-bit INTEGER column
DbId = Annotated[int, Field(ge=1, le=2**31 - 1)]


def _refuse_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if isinstance(value, list):
        for item in value:
            _refuse_nul(item)
    return value


class InputModel(BaseModel):
    """Base of request bodies and queries: text with NUL characters is refused with a field
    message (PostgreSQL cannot store them)."""

    model_config = _IN

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return _refuse_nul(value)


class _Window(PageQuery, InputModel):
    offset: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="rows to skip; repeats rows while cases arrive: follow `next` instead",
    )
    since: AwareDatetime | None = Field(None, description="created at or after (ISO 8601)")
    until: AwareDatetime | None = Field(None, description="created before (ISO 8601)")
    customer_id: DbId | None = None
    created_by: DbId | None = None
    order: ListOrder = Field("newest", description="by creation time: newest or oldest first")
    cursor: str | None = Field(
        None,
        max_length=CURSOR_LENGTH,
        description="the `next` of the previous page (same `order`, no `offset`): the rows "
        "after it, none repeated while new cases arrive",
    )

    @field_validator("cursor")
    @classmethod
    def _valid_cursor(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        position = PagePosition.decode(value)
        if info.data.get("offset"):
            raise ValueError("a cursor is not combined with an offset")
        if "order" in info.data and position.order != info.data["order"]:
            raise ValueError(f"this cursor pages the list {position.order} first")
        return value

    @property
    def after(self) -> PagePosition | None:
        """The position the cursor names (validated), or None for the first page."""
        return PagePosition.decode(self.cursor) if self.cursor is not None else None


class BookingQuery(_Window):
    status: BookingStatus | None = None
    urgent: bool | None = None
    call_uniqueid: str | None = Field(None, max_length=150)


class ComplaintQuery(_Window):
    status: list[ComplaintStatus] = Field(default_factory=list, description="any of these")
    owner_id: DbId | None = None
    unowned: bool | None = Field(None, description="true: only complaints nobody took yet")
    category: str | None = Field(None, max_length=64)
    severity: Severity | None = None
    overdue: bool | None = Field(None, description="true: open and past a deadline now")
    q: str | None = Field(
        None,
        max_length=80,
        description="search: a complaint id, or a customer's phone number (any format) or name",
    )


class ComplaintStatsQuery(InputModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


class BookingCreate(InputModel):
    customer_id: DbId
    item: str = Field(min_length=1, max_length=255, description="what is booked/ordered")
    scheduled_for: AwareDatetime | None = Field(None, description="when (ISO 8601 with zone)")
    for_whom: str = Field("", max_length=255)
    urgent: bool = False
    notes: str = Field("", max_length=4000)
    call_uniqueid: str | None = Field(None, min_length=1, max_length=150)


class BookingUpdate(InputModel):
    item: str | None = Field(None, min_length=1, max_length=255)
    scheduled_for: AwareDatetime | None = None
    for_whom: str | None = Field(None, max_length=255)
    urgent: bool | None = None
    notes: str | None = Field(None, max_length=4000)


class BookingStatusChange(InputModel):
    status: BookingStatus
    note: str = Field("", max_length=2000)


class BookingOut(BaseModel):
    model_config = _OUT

    id: int
    customer_id: int
    call_uniqueid: str | None
    item: str
    scheduled_for: datetime | None
    for_whom: str
    urgent: bool
    status: BookingStatus
    notes: str
    created_by: int
    created_at: datetime
    updated_at: datetime


class ComplaintCreate(InputModel):
    customer_id: DbId
    category: str = Field(min_length=1, max_length=64, description="e.g. delivery, billing")
    severity: Severity = "medium"
    description: str = Field(min_length=1, max_length=8000)
    call_uniqueid: str | None = Field(
        None,
        min_length=1,
        max_length=150,
        description="the call it was raised on; the creating agent then owns it",
    )


class ComplaintUpdate(InputModel):
    category: str | None = Field(None, min_length=1, max_length=64)
    severity: Severity | None = None
    description: str | None = Field(None, min_length=1, max_length=8000)
    note: str = Field("", max_length=2000)


class ComplaintStatusChange(InputModel):
    status: ComplaintStatus
    note: str = Field("", max_length=2000)
    outcome: str | None = Field(
        None, min_length=1, max_length=64, description="required when resolving"
    )
    customer_informed: bool = Field(
        False, description="closing: the customer has been told the outcome"
    )


class Handover(InputModel):
    to_user_id: DbId
    reason: str = Field(min_length=1, max_length=2000)

    @field_validator("reason")
    @classmethod
    def _reason_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a handover needs a reason")
        return value


class ComplaintNote(InputModel):
    note: str = Field(min_length=1, max_length=4000)
    customer_informed: bool = Field(
        False, description="this note records that the customer was told the outcome"
    )


class ComplaintCallLink(InputModel):
    call_uniqueid: str = Field(min_length=1, max_length=150)


class ComplaintOut(BaseModel):
    model_config = _OUT

    id: int
    customer_id: int
    category: str
    severity: Severity
    description: str
    status: ComplaintStatus
    owner_id: int | None
    created_by: int
    calls: list[str]
    first_response_due: datetime
    resolution_due: datetime
    first_responded_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    customer_informed_at: datetime | None
    outcome: str | None
    reopen_count: int
    first_response_breached: bool
    resolution_breached: bool
    breached: bool = Field(description="a deadline was missed: show in red")
    created_at: datetime
    updated_at: datetime


class CaseEventOut(BaseModel):
    model_config = _OUT

    id: int
    case_type: CaseType
    case_id: int
    at: datetime
    actor_user_id: int | None
    action: str
    before: dict[str, Any]
    after: dict[str, Any]
    note: str


class ComplaintStatsOut(BaseModel):
    model_config = _OUT

    total: int
    by_category: dict[str, int]
    by_status: dict[str, int]
    by_outcome: dict[str, int]
    by_severity: dict[str, int]
    overdue: int
    breached: int


class DispositionIn(InputModel):
    category: str = Field(min_length=1, max_length=64, description="what the call was about")
    outcome: str = Field(min_length=1, max_length=64, description="how it ended")
    note: str = Field("", max_length=4000)


class DispositionOut(BaseModel):
    model_config = _OUT

    id: int
    call_uniqueid: str
    user_id: int
    category: str
    outcome: str
    note: str
    created_at: datetime
    updated_at: datetime


_NEXT = "the `cursor` of the next page; null on the last page"


class BookingPage(Page[BookingOut]):
    total_exact: bool = Field(
        True, description="false: more than 1,000 match and `total` is an estimate"
    )
    next: str | None = Field(None, description=_NEXT)


class ComplaintPage(Page[ComplaintOut]):
    total_exact: bool = Field(
        True, description="false: more than 1,000 match and `total` is an estimate"
    )
    next: str | None = Field(None, description=_NEXT)
