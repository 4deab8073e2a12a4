"""The customer archive (客户档案): pure data, persisted by CustomerRepository."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypedDict

CustomerTier = Literal["key", "normal"]  # key = 大客户/重点客户: priority handling


@dataclass(frozen=True, slots=True)
class CustomerNumber:
    raw: str  # as entered, e.g. "+86 138-0013-8000"
    normalised: str  # normalise_number(raw), e.g. "8613800138000"


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    name: str
    tier: CustomerTier = "normal"
    company: str | None = None
    credit_grade: str | None = None  # e.g. "A".."E"
    notes: str = ""
    preferred_language: str | None = None  # IVR language code, e.g. "zh", "en"
    do_not_call: bool = False  # never dial this customer for surveys / follow-ups
    numbers: tuple[CustomerNumber, ...] = ()
    provisional: bool = False  # opened for an unknown caller; an agent still has to complete it
    contact_user_id: int | None = None  # key customers' named contact (a user)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_key_customer(self) -> bool:
        return self.tier == "key"


class CustomerChanges(TypedDict, total=False):
    """Fields `CustomerRepository.update` may change; omitted keys are left alone."""

    name: str
    tier: CustomerTier
    company: str | None
    credit_grade: str | None
    notes: str
    preferred_language: str | None
    do_not_call: bool
    provisional: bool
    contact_user_id: int | None


HistoryKind = Literal["call", "booking", "complaint", "callback"]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of a customer's merged history (calls, bookings, complaints, callbacks)."""

    kind: HistoryKind
    at: datetime
    ref: str  # call uniqueid, booking id, complaint id, callback's call uniqueid
    summary: str
    status: str | None = None
    number: str | None = None  # the customer's number involved (calls, callbacks)
