"""Bookings/orders, complaints, the case timeline and call dispositions: pure data, and the
request/response schemas of their API (they also generate the OpenAPI document)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

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
    "Severity",
]

BookingStatus = Literal["new", "confirmed", "fulfilled", "cancelled"]
ComplaintStatus = Literal["open", "investigating", "escalated", "resolved", "closed"]
Severity = Literal["low", "medium", "high", "critical"]
CaseType = Literal["complaint", "booking", "customer"]


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
    since: AwareDatetime | None = Field(None, description="created at or after (ISO 8601)")
    until: AwareDatetime | None = Field(None, description="created before (ISO 8601)")
    customer_id: DbId | None = None
    created_by: DbId | None = None


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


class BookingPage(Page[BookingOut]):
    total_exact: bool = Field(
        True, description="false: more than 1,000 match and `total` is an estimate"
    )


class ComplaintPage(Page[ComplaintOut]):
    total_exact: bool = Field(
        True, description="false: more than 1,000 match and `total` is an estimate"
    )
