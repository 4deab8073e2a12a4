"""HTTP handlers of the customer archive (客户档案): search, card, provisional records for unknown
callers, completion by an agent, and the merged history timeline.

Privacy: numbers are masked for roles that do not handle callers (`mask_number`), and every
view and change is written to the audit log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from callcenter.customers.model import Customer, CustomerChanges, HistoryEntry
from callcenter.customers.repository import CustomerNotFoundError, NumberInUseError
from callcenter.customers.service import InvalidNumberError, parse_number
from callcenter.tickets.model import CaseEventOut, DbId, InputModel
from callcenter.users.model import POLICY, Principal
from callcenter.users.service import mask_number
from callcenter.web.api import (
    ApiRouter,
    Page,
    PageQuery,
    json_response,
    parse_body,
    parse_path,
    parse_query,
    require_principal,
)
from callcenter.web.auth import audit
from callcenter.web.errors import Conflict, NotFound, ValidationFailed
from callcenter.web.keys import CUSTOMER_HISTORY, CUSTOMERS, TICKETS, USERS

__all__ = [
    "CustomerCreate",
    "CustomerOut",
    "CustomerQuery",
    "CustomerUpdate",
    "HistoryOut",
    "ProvisionalCreate",
    "customer_out",
    "router",
]

router = ApiRouter(tag="customers")

Tier = Literal["key", "normal"]


class CustomerNotFound(NotFound):
    code = "customer_not_found"


class NumberTaken(Conflict):
    code = "number_in_use"


# ------------------------------------------------------------------------------ schemas


class CustomerQuery(PageQuery, InputModel):
    q: str | None = Field(
        None, min_length=1, max_length=80, description="name, company or number (any format)"
    )
    tier: Tier | None = None
    provisional: bool | None = Field(None, description="true: records still to be completed")


class LookupQuery(InputModel):
    number: str = Field(min_length=1, max_length=80, description="a phone number, any format")


class CustomerPath(InputModel):
    customer_id: DbId


class HistoryQuery(InputModel):
    limit: int = Field(50, ge=1, le=200)
    calls: bool = Field(True, description="include calls from the call log")


class NumberOut(BaseModel):
    raw: str | None
    normalised: str | None


class CustomerOut(BaseModel):
    id: int
    name: str
    company: str | None
    tier: Tier
    key_customer: bool
    credit_grade: str | None
    notes: str
    preferred_language: str | None
    do_not_call: bool
    provisional: bool
    contact_user_id: int | None
    numbers: list[NumberOut]
    created_at: datetime | None
    updated_at: datetime | None


class CustomerCreate(InputModel):
    name: str = Field(min_length=1, max_length=255)
    numbers: list[str] = Field(default_factory=list, max_length=10)
    company: str | None = Field(None, max_length=255)
    tier: Tier = "normal"
    credit_grade: str | None = Field(None, max_length=8)
    notes: str = Field("", max_length=8000)
    preferred_language: str | None = Field(None, max_length=16)
    do_not_call: bool = False
    contact_user_id: DbId | None = None


class CustomerUpdate(InputModel):
    """Omitted fields are left alone. Changing the name of a provisional record completes it
    (provisional becomes false) unless `provisional` is given."""

    name: str | None = Field(None, min_length=1, max_length=255)
    company: str | None = Field(None, max_length=255)
    tier: Tier | None = None
    credit_grade: str | None = Field(None, max_length=8)
    notes: str | None = Field(None, max_length=8000)
    preferred_language: str | None = Field(None, max_length=16)
    do_not_call: bool | None = None
    provisional: bool | None = None
    contact_user_id: DbId | None = None
    add_numbers: list[str] = Field(default_factory=list, max_length=10)
    remove_numbers: list[str] = Field(default_factory=list, max_length=10)


class ProvisionalCreate(InputModel):
    number: str = Field(min_length=1, max_length=80)
    call_uniqueid: str | None = Field(None, min_length=1, max_length=150)
    name: str | None = Field(None, min_length=1, max_length=255)


class ProvisionalOut(BaseModel):
    created: bool
    customer: CustomerOut


class HistoryItemOut(BaseModel):
    kind: Literal["call", "booking", "complaint", "callback"]
    at: datetime
    ref: str
    summary: str
    status: str | None
    number: str | None


class HistoryOut(BaseModel):
    customer_id: int
    items: list[HistoryItemOut]


# ------------------------------------------------------------------------------ helpers


def customer_out(customer: Customer, principal: Principal | None) -> CustomerOut:
    """The card as this principal may see it (numbers masked for roles that need not see them)."""
    return CustomerOut(
        id=customer.id,
        name=customer.name,
        company=customer.company,
        tier=customer.tier,
        key_customer=customer.is_key_customer,
        credit_grade=customer.credit_grade,
        notes=customer.notes,
        preferred_language=customer.preferred_language,
        do_not_call=customer.do_not_call,
        provisional=customer.provisional,
        contact_user_id=customer.contact_user_id,
        numbers=[
            NumberOut(
                raw=mask_number(n.raw, principal), normalised=mask_number(n.normalised, principal)
            )
            for n in customer.numbers
        ],
        created_at=customer.created_at,
        updated_at=customer.updated_at,
    )


def _history_out(entry: HistoryEntry, principal: Principal) -> HistoryItemOut:
    return HistoryItemOut(
        kind=entry.kind,
        at=entry.at,
        ref=entry.ref,
        summary=entry.summary,
        status=entry.status,
        number=mask_number(entry.number, principal),
    )


async def _get(request: web.Request, customer_id: int) -> Customer:
    customer = await request.app[CUSTOMERS].get(customer_id)
    if customer is None:
        raise CustomerNotFound(f"no customer with id {customer_id}")
    return customer


async def _check_contact(request: web.Request, user_id: int | None) -> None:
    if user_id is not None and await request.app[USERS].get(user_id) is None:
        raise ValidationFailed("invalid body", fields={"contact_user_id": "no such user"})


def _number_errors(exc: Exception, field: str) -> Exception:
    if isinstance(exc, NumberInUseError):
        return NumberTaken(
            f"that number already belongs to customer {exc.customer_id}",
            fields={field: "already belongs to another customer"},
        )
    return ValidationFailed("invalid number", fields={field: str(exc)})


# ------------------------------------------------------------------------------ routes


@router.get(
    "/api/v1/customers",
    query=CustomerQuery,
    response=Page[CustomerOut],
    roles=POLICY["customers:read"],
    summary="List or search customers",
)
async def list_customers(request: web.Request) -> web.Response:
    """Search by name, company or any number (any format); filter by tier / provisional."""
    principal = require_principal(request)
    q = parse_query(request, CustomerQuery)
    repo = request.app[CUSTOMERS]
    if q.q:
        items = await repo.search(
            q.q, tier=q.tier, provisional=q.provisional, limit=q.limit, offset=q.offset
        )
        total = await repo.count_search(q.q, tier=q.tier, provisional=q.provisional)
    else:
        items = await repo.list_customers(
            tier=q.tier, provisional=q.provisional, limit=q.limit, offset=q.offset
        )
        total = await repo.count(tier=q.tier, provisional=q.provisional)
    await audit(request, "list", "customer", None, {"q": q.q, "results": len(items)})
    page = Page[CustomerOut](
        items=[customer_out(c, principal) for c in items],
        total=total,
        limit=q.limit,
        offset=q.offset,
    )
    return json_response(page)


@router.get(
    "/api/v1/customers/lookup",
    query=LookupQuery,
    response=CustomerOut,
    errors=(404,),
    roles=POLICY["customers:read"],
    summary="Find the customer owning a number",
)
async def lookup_customer(request: web.Request) -> web.Response:
    """The one customer owning `number` in any format; 404 `customer_not_found`."""
    principal = require_principal(request)
    q = parse_query(request, LookupQuery)
    customer = await request.app[CUSTOMERS].find_by_number(q.number)
    if customer is None:
        raise CustomerNotFound("no customer has that number")
    await audit(request, "view", "customer", customer.id, {"via": "lookup"})
    return json_response(customer_out(customer, principal))


@router.post(
    "/api/v1/customers",
    body=CustomerCreate,
    response=CustomerOut,
    status=201,
    errors=(409,),
    roles=POLICY["customers:write"],
    summary="Create a customer",
)
async def create_customer(request: web.Request) -> web.Response:
    principal = require_principal(request)
    body = await parse_body(request, CustomerCreate)
    await _check_contact(request, body.contact_user_id)
    try:
        customer = await request.app[CUSTOMERS].create(
            name=body.name,
            numbers=body.numbers,
            tier=body.tier,
            company=body.company,
            credit_grade=body.credit_grade,
            notes=body.notes,
            preferred_language=body.preferred_language,
            do_not_call=body.do_not_call,
            contact_user_id=body.contact_user_id,
        )
    except (InvalidNumberError, NumberInUseError) as exc:
        raise _number_errors(exc, "numbers") from None
    await audit(request, "create", "customer", customer.id, {"name": customer.name})
    await request.app[TICKETS].record_event(
        "customer",
        customer.id,
        actor_id=principal.user_id,
        action="create",
        after={"name": customer.name, "tier": customer.tier},
    )
    return json_response(customer_out(customer, principal), status=201)


@router.post(
    "/api/v1/customers/provisional",
    body=ProvisionalCreate,
    response=ProvisionalOut,
    roles=POLICY["customers:write"],
    summary="Open a provisional record for an unknown caller",
    extra_responses={201: "Created a provisional record"},
)
async def create_provisional(request: web.Request) -> web.Response:
    """The customer owning `number`, or a new provisional record an agent completes later
    (201 when created, 200 when the number already had a customer)."""
    principal = require_principal(request)
    body = await parse_body(request, ProvisionalCreate)
    try:
        customer, created = await request.app[CUSTOMERS].find_or_create_provisional(
            body.number, name=body.name
        )
    except (InvalidNumberError, NumberInUseError) as exc:
        raise _number_errors(exc, "number") from None
    if created:
        await audit(
            request,
            "create",
            "customer",
            customer.id,
            {"provisional": True, "call_uniqueid": body.call_uniqueid},
        )
        await request.app[TICKETS].record_event(
            "customer",
            customer.id,
            actor_id=principal.user_id,
            action="create_provisional",
            after={"name": customer.name, "call_uniqueid": body.call_uniqueid},
        )
    else:
        await audit(request, "view", "customer", customer.id, {"via": "provisional"})
    out = ProvisionalOut(created=created, customer=customer_out(customer, principal))
    return json_response(out, status=201 if created else 200)


@router.get(
    "/api/v1/customers/{customer_id}",
    path_params=CustomerPath,
    response=CustomerOut,
    roles=POLICY["customers:read"],
    summary="A customer's card",
)
async def get_customer(request: web.Request) -> web.Response:
    principal = require_principal(request)
    path = parse_path(request, CustomerPath)
    customer = await _get(request, path.customer_id)
    await audit(request, "view", "customer", customer.id)
    return json_response(customer_out(customer, principal))


@router.patch(
    "/api/v1/customers/{customer_id}",
    path_params=CustomerPath,
    body=CustomerUpdate,
    response=CustomerOut,
    errors=(409,),
    roles=POLICY["customers:write"],
    summary="Change or complete a customer's record",
)
async def update_customer(request: web.Request) -> web.Response:
    """Changed fields go on the record's timeline with before/after."""
    principal = require_principal(request)
    path = parse_path(request, CustomerPath)
    body = await parse_body(request, CustomerUpdate)
    repo = request.app[CUSTOMERS]
    before = await _get(request, path.customer_id)
    fields = body.model_dump(exclude_unset=True, exclude={"add_numbers", "remove_numbers"})
    for key in ("name", "tier", "notes", "do_not_call", "provisional"):
        if key in fields and fields[key] is None:
            raise ValidationFailed("invalid body", fields={key: "cannot be null"})
    if before.provisional and "name" in fields and "provisional" not in fields:
        fields["provisional"] = False  # the agent completed the unknown caller's record
    await _check_contact(request, fields.get("contact_user_id"))
    # check every number before changing anything, so bad input changes nothing
    for field, numbers in (
        ("add_numbers", body.add_numbers),
        ("remove_numbers", body.remove_numbers),
    ):
        for i, number in enumerate(numbers):
            try:
                parse_number(number)
            except InvalidNumberError as exc:
                raise ValidationFailed(
                    "invalid number", fields={f"{field}.{i}": str(exc)}
                ) from None
    for number in body.add_numbers:
        owner = await repo.find_by_number(number)
        if owner is not None and owner.id != path.customer_id:
            raise _number_errors(NumberInUseError(number, owner.id), "add_numbers")
    changes: CustomerChanges = fields  # type: ignore[assignment]
    try:
        customer = await repo.update(path.customer_id, changes) if changes else before
        if body.add_numbers:
            customer = await repo.attach_numbers(path.customer_id, body.add_numbers)
        for number in body.remove_numbers:
            customer = await repo.detach_number(path.customer_id, number)
    except CustomerNotFoundError:
        raise CustomerNotFound(f"no customer with id {path.customer_id}") from None
    except (InvalidNumberError, NumberInUseError) as exc:
        raise _number_errors(exc, "add_numbers") from None
    diff_before: dict[str, Any] = {}
    diff_after: dict[str, Any] = {}
    for key in fields:
        old, new = getattr(before, key), getattr(customer, key)
        if old != new:
            diff_before[key], diff_after[key] = old, new
    old_numbers = [n.raw for n in before.numbers]
    new_numbers = [n.raw for n in customer.numbers]
    if old_numbers != new_numbers:
        diff_before["numbers"], diff_after["numbers"] = old_numbers, new_numbers
    await audit(request, "update", "customer", customer.id, {"fields": sorted(diff_after)})
    if diff_after:
        await request.app[TICKETS].record_event(
            "customer",
            customer.id,
            actor_id=principal.user_id,
            action="update",
            before=diff_before,
            after=diff_after,
        )
    return json_response(customer_out(customer, principal))


@router.get(
    "/api/v1/customers/{customer_id}/history",
    path_params=CustomerPath,
    query=HistoryQuery,
    response=HistoryOut,
    roles=POLICY["customers:read"],
    summary="Calls, bookings, complaints and callbacks in one timeline",
)
async def customer_history(request: web.Request) -> web.Response:
    """Newest first; calls and callbacks found by any of the customer's numbers."""
    principal = require_principal(request)
    path = parse_path(request, CustomerPath)
    q = parse_query(request, HistoryQuery)
    try:
        entries = await request.app[CUSTOMER_HISTORY].timeline(
            path.customer_id, limit=q.limit, include_calls=q.calls
        )
    except CustomerNotFoundError:
        raise CustomerNotFound(f"no customer with id {path.customer_id}") from None
    await audit(request, "view", "customer", path.customer_id, {"view": "history"})
    out = HistoryOut(
        customer_id=path.customer_id, items=[_history_out(e, principal) for e in entries]
    )
    return json_response(out)


@router.get(
    "/api/v1/customers/{customer_id}/timeline",
    path_params=CustomerPath,
    response=list[CaseEventOut],
    roles=POLICY["customers:read"],
    summary="Changes to the customer's record (who, when, before/after)",
)
async def customer_timeline(request: web.Request) -> web.Response:
    principal = require_principal(request)
    path = parse_path(request, CustomerPath)
    await _get(request, path.customer_id)
    events = await request.app[TICKETS].timeline("customer", path.customer_id)
    await audit(request, "view", "customer", path.customer_id, {"view": "timeline"})
    out = [CaseEventOut.model_validate(e) for e in events]
    for event in out:  # recorded number changes are masked like the card's numbers
        for side in (event.before, event.after):
            if isinstance(side.get("numbers"), list):
                side["numbers"] = [mask_number(str(n), principal) for n in side["numbers"]]
    return json_response(out)
