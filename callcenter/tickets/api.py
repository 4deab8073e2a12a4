"""HTTP handlers: bookings/orders, complaints (ownership, handover, status, timeline, statistics)
and call dispositions.

Stable error codes: 404 `booking_not_found` / `complaint_not_found` / `disposition_not_found`;
409 `invalid_transition`, `already_owned`, `already_owner`, `outcome_required`,
`customer_not_informed`, `booking_final`, `complaint_closed`, `not_resolved`,
`invalid_new_owner`; 403 `not_case_owner`, `complaint_unowned`, `cannot_own`,
`not_call_handler`; 422 with `fields` for bad input (unknown customer, unknown user).
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import TypeVar

from aiohttp import web
from pydantic import Field

from callcenter.tickets.model import (
    Booking,
    BookingCreate,
    BookingOut,
    BookingPage,
    BookingQuery,
    BookingStatusChange,
    BookingUpdate,
    CaseEventOut,
    CaseType,
    Complaint,
    ComplaintCallLink,
    ComplaintCreate,
    ComplaintNote,
    ComplaintOut,
    ComplaintPage,
    ComplaintQuery,
    ComplaintStatsOut,
    ComplaintStatsQuery,
    ComplaintStatusChange,
    ComplaintUpdate,
    DbId,
    DispositionIn,
    DispositionOut,
    Handover,
    InputModel,
)
from callcenter.tickets.repository import (
    BookingFilter,
    CaseNotFoundError,
    ComplaintFilter,
    CustomerMissingError,
    UserMissingError,
    Visibility,
)
from callcenter.tickets.service import NotAllowed, TicketRuleError, breached_flags
from callcenter.users.model import POLICY, Principal
from callcenter.web.api import (
    ApiRouter,
    json_response,
    parse_body,
    parse_path,
    parse_query,
    require_principal,
)
from callcenter.web.auth import audit
from callcenter.web.errors import Conflict, Forbidden, NotFound, ValidationFailed
from callcenter.web.keys import CALL_REPOSITORY, LIVE_CALLS, TICKET_NOTIFIER, TICKETS

__all__ = [
    "bookings_router",
    "complaint_out",
    "complaints_router",
    "dispositions_router",
]

bookings_router = ApiRouter(tag="bookings", scope="tickets")
complaints_router = ApiRouter(tag="complaints", scope="tickets")
dispositions_router = ApiRouter(tag="dispositions", scope="tickets")

READ = POLICY["tickets:read"]
WRITE = POLICY["tickets:write"]
SUPERVISE = POLICY["tickets:supervise"]
T = TypeVar("T")


class BookingNotFound(NotFound):
    code = "booking_not_found"


class ComplaintNotFound(NotFound):
    code = "complaint_not_found"


class DispositionNotFound(NotFound):
    code = "disposition_not_found"


class NotCallHandler(Forbidden):
    code = "not_call_handler"


async def _run(action: Awaitable[T]) -> T:
    """Run a repository call, turning rule errors into API errors with stable codes."""
    try:
        return await action
    except NotAllowed as exc:
        raise Forbidden(str(exc), code=exc.code) from None
    except TicketRuleError as exc:
        raise Conflict(str(exc), code=exc.code) from None
    except CaseNotFoundError as exc:
        cls = BookingNotFound if exc.case_type == "booking" else ComplaintNotFound
        raise cls(str(exc)) from None
    except CustomerMissingError:
        raise ValidationFailed("invalid body", fields={"customer_id": "no such customer"}) from None
    except UserMissingError:
        raise ValidationFailed("invalid body", fields={"to_user_id": "no such user"}) from None
    except ValueError as exc:
        raise ValidationFailed("invalid input", fields={"__root__": str(exc)}) from None


async def _visibility(request: web.Request, principal: Principal, kind: CaseType) -> Visibility:
    return await request.app[TICKETS].visibility(
        user_id=principal.user_id, role=principal.role, group=principal.group, kind=kind
    )


def complaint_out(complaint: Complaint, now: datetime) -> ComplaintOut:
    """The API view of a complaint, with its breach flags as of `now` (red in the UI)."""
    first, resolution = breached_flags(complaint, now)
    return ComplaintOut(
        id=complaint.id,
        customer_id=complaint.customer_id,
        category=complaint.category,
        severity=complaint.severity,
        description=complaint.description,
        status=complaint.status,
        owner_id=complaint.owner_id,
        created_by=complaint.created_by,
        calls=list(complaint.calls),
        first_response_due=complaint.first_response_due,
        resolution_due=complaint.resolution_due,
        first_responded_at=complaint.first_responded_at,
        resolved_at=complaint.resolved_at,
        closed_at=complaint.closed_at,
        customer_informed_at=complaint.customer_informed_at,
        outcome=complaint.outcome,
        reopen_count=complaint.reopen_count,
        first_response_breached=first,
        resolution_breached=resolution,
        breached=first or resolution,
        created_at=complaint.created_at,
        updated_at=complaint.updated_at,
    )


def _booking_out(booking: Booking) -> BookingOut:
    return BookingOut.model_validate(booking)


# ------------------------------------------------------------------------------ path params


class BookingPath(InputModel):
    booking_id: DbId


class ComplaintPath(InputModel):
    complaint_id: DbId


class CallPath(InputModel):
    uniqueid: str = Field(min_length=1, max_length=150)


# ------------------------------------------------------------------------------ bookings


async def _visible_booking(request: web.Request, principal: Principal, booking_id: int) -> Booking:
    booking = await request.app[TICKETS].get_booking(booking_id)
    visibility = await _visibility(request, principal, "booking")
    if booking is None or not request.app[TICKETS].can_see_booking(booking, visibility):
        raise BookingNotFound(f"no booking with id {booking_id}")
    return booking


@bookings_router.get(
    "/api/v1/bookings",
    query=BookingQuery,
    response=BookingPage,
    roles=READ,
    summary="List bookings/orders",
)
async def list_bookings(request: web.Request) -> web.Response:
    """Newest first (or `order=oldest`); page on with `cursor` = the page's `next`. Agents see
    their own and their group's; others see all."""
    principal = require_principal(request)
    q = parse_query(request, BookingQuery)
    flt = BookingFilter(
        since=q.since,
        until=q.until,
        status=q.status,
        customer_id=q.customer_id,
        created_by=q.created_by,
        urgent=q.urgent,
        call_uniqueid=q.call_uniqueid,
    )
    visibility = await _visibility(request, principal, "booking")
    found = await request.app[TICKETS].list_bookings(
        flt, visibility, limit=q.limit, offset=q.offset, order=q.order, after=q.after
    )
    page = BookingPage(
        items=[_booking_out(b) for b in found.items],
        total=found.total,
        total_exact=found.exact,
        limit=q.limit,
        offset=q.offset,
        next=found.next.encode() if found.next is not None else None,
    )
    return json_response(page)


@bookings_router.post(
    "/api/v1/bookings",
    body=BookingCreate,
    response=BookingOut,
    status=201,
    roles=WRITE,
    summary="Take a booking/order",
)
async def create_booking(request: web.Request) -> web.Response:
    principal = require_principal(request)
    body = await parse_body(request, BookingCreate)
    booking = await _run(
        request.app[TICKETS].create_booking(
            actor_id=principal.user_id,
            customer_id=body.customer_id,
            item=body.item,
            scheduled_for=body.scheduled_for,
            for_whom=body.for_whom,
            urgent=body.urgent,
            notes=body.notes,
            call_uniqueid=body.call_uniqueid,
        )
    )
    await audit(request, "create", "booking", booking.id)
    await request.app[TICKET_NOTIFIER].booking(booking, created=True)
    return json_response(_booking_out(booking), status=201)


@bookings_router.get(
    "/api/v1/bookings/{booking_id}",
    path_params=BookingPath,
    response=BookingOut,
    roles=READ,
    summary="A booking/order",
)
async def get_booking(request: web.Request) -> web.Response:
    principal = require_principal(request)
    path = parse_path(request, BookingPath)
    booking = await _visible_booking(request, principal, path.booking_id)
    await audit(request, "view", "booking", booking.id)
    return json_response(_booking_out(booking))


@bookings_router.patch(
    "/api/v1/bookings/{booking_id}",
    path_params=BookingPath,
    body=BookingUpdate,
    response=BookingOut,
    errors=(409,),
    roles=WRITE,
    summary="Change a booking/order",
)
async def update_booking(request: web.Request) -> web.Response:
    principal = require_principal(request)
    path = parse_path(request, BookingPath)
    body = await parse_body(request, BookingUpdate)
    await _visible_booking(request, principal, path.booking_id)
    changes = body.model_dump(exclude_unset=True)
    for key in ("item", "for_whom", "urgent", "notes"):
        if key in changes and changes[key] is None:
            raise ValidationFailed("invalid body", fields={key: "cannot be null"})
    booking = await _run(
        request.app[TICKETS].update_booking(
            path.booking_id, actor_id=principal.user_id, changes=changes
        )
    )
    await audit(request, "update", "booking", booking.id, {"fields": sorted(changes)})
    await request.app[TICKET_NOTIFIER].booking(booking)
    return json_response(_booking_out(booking))


@bookings_router.post(
    "/api/v1/bookings/{booking_id}/status",
    path_params=BookingPath,
    body=BookingStatusChange,
    response=BookingOut,
    errors=(409,),
    roles=WRITE,
    summary="Confirm, fulfil or cancel a booking/order",
)
async def change_booking_status(request: web.Request) -> web.Response:
    """new -> confirmed -> fulfilled, new/confirmed -> cancelled; else 409 `invalid_transition`."""
    principal = require_principal(request)
    path = parse_path(request, BookingPath)
    body = await parse_body(request, BookingStatusChange)
    await _visible_booking(request, principal, path.booking_id)
    booking = await _run(
        request.app[TICKETS].change_booking_status(
            path.booking_id, actor_id=principal.user_id, status=body.status, note=body.note
        )
    )
    await audit(request, "update", "booking", booking.id, {"status": booking.status})
    await request.app[TICKET_NOTIFIER].booking(booking)
    return json_response(_booking_out(booking))


@bookings_router.get(
    "/api/v1/bookings/{booking_id}/timeline",
    path_params=BookingPath,
    response=list[CaseEventOut],
    roles=READ,
    summary="Every action on a booking (who, when, before/after)",
)
async def booking_timeline(request: web.Request) -> web.Response:
    principal = require_principal(request)
    path = parse_path(request, BookingPath)
    await _visible_booking(request, principal, path.booking_id)
    events = await request.app[TICKETS].timeline("booking", path.booking_id)
    await audit(request, "view", "booking", path.booking_id, {"view": "timeline"})
    return json_response([CaseEventOut.model_validate(e) for e in events])


# ------------------------------------------------------------------------------ complaints


async def _visible_complaint(
    request: web.Request, principal: Principal, complaint_id: int
) -> Complaint:
    complaint = await request.app[TICKETS].get_complaint(complaint_id)
    visibility = await _visibility(request, principal, "complaint")
    if complaint is None or not request.app[TICKETS].can_see_complaint(complaint, visibility):
        raise ComplaintNotFound(f"no complaint with id {complaint_id}")
    return complaint


async def _complaint_changed(
    request: web.Request, complaint: Complaint, action: str
) -> web.Response:
    await audit(request, action, "complaint", complaint.id, {"status": complaint.status})
    await request.app[TICKET_NOTIFIER].complaint(complaint, action=action)
    return json_response(complaint_out(complaint, request.app[TICKETS].now()))


@complaints_router.get(
    "/api/v1/complaints/stats",
    query=ComplaintStatsQuery,
    response=ComplaintStatsOut,
    roles=SUPERVISE,
    summary="Complaint statistics (by category, status, outcome; overdue)",
)
async def complaint_stats(request: web.Request) -> web.Response:
    """The complaint statistics report (投诉统计报表) for management."""
    q = parse_query(request, ComplaintStatsQuery)
    stats = await request.app[TICKETS].complaint_stats(since=q.since, until=q.until)
    await audit(request, "view", "complaint_stats", None)
    return json_response(ComplaintStatsOut.model_validate(stats))


@complaints_router.get(
    "/api/v1/complaints",
    query=ComplaintQuery,
    response=ComplaintPage,
    roles=READ,
    summary="List or search complaints",
)
async def list_complaints(request: web.Request) -> web.Response:
    """Newest first (or `order=oldest`); page on with `cursor` = the page's `next`. Agents see
    their own and their group's; specialists, QA, supervisors and admins see all. `q` finds a
    complaint id or a customer's number/name."""
    principal = require_principal(request)
    q = parse_query(request, ComplaintQuery)
    flt = ComplaintFilter(
        since=q.since,
        until=q.until,
        statuses=tuple(q.status),
        customer_id=q.customer_id,
        created_by=q.created_by,
        owner_id=q.owner_id,
        unowned=q.unowned,
        category=q.category,
        severity=q.severity,
        overdue=q.overdue,
        q=q.q,
    )
    repo = request.app[TICKETS]
    visibility = await _visibility(request, principal, "complaint")
    found = await repo.list_complaints(
        flt, visibility, limit=q.limit, offset=q.offset, order=q.order, after=q.after
    )
    now = repo.now()
    page = ComplaintPage(
        items=[complaint_out(c, now) for c in found.items],
        total=found.total,
        total_exact=found.exact,
        limit=q.limit,
        offset=q.offset,
        next=found.next.encode() if found.next is not None else None,
    )
    return json_response(page)


@complaints_router.post(
    "/api/v1/complaints",
    body=ComplaintCreate,
    response=ComplaintOut,
    status=201,
    roles=WRITE,
    summary="File a complaint",
)
async def create_complaint(request: web.Request) -> web.Response:
    """Filed from a call by an agent or specialist: they own it (首问负责制). Otherwise it
    waits unowned until the first agent takes it. Deadlines are set in business hours."""
    principal = require_principal(request)
    body = await parse_body(request, ComplaintCreate)
    complaint = await _run(
        request.app[TICKETS].create_complaint(
            actor_id=principal.user_id,
            actor_role=principal.role,
            customer_id=body.customer_id,
            category=body.category,
            description=body.description,
            severity=body.severity,
            call_uniqueid=body.call_uniqueid,
        )
    )
    response = await _complaint_changed(request, complaint, "create")
    response.set_status(201)
    return response


@complaints_router.get(
    "/api/v1/complaints/{complaint_id}",
    path_params=ComplaintPath,
    response=ComplaintOut,
    roles=READ,
    summary="A complaint",
)
async def get_complaint(request: web.Request) -> web.Response:
    principal = require_principal(request)
    path = parse_path(request, ComplaintPath)
    complaint = await _visible_complaint(request, principal, path.complaint_id)
    await audit(request, "view", "complaint", complaint.id)
    return json_response(complaint_out(complaint, request.app[TICKETS].now()))


@complaints_router.patch(
    "/api/v1/complaints/{complaint_id}",
    path_params=ComplaintPath,
    body=ComplaintUpdate,
    response=ComplaintOut,
    errors=(409,),
    roles=WRITE,
    summary="Change category, severity or description",
)
async def update_complaint(request: web.Request) -> web.Response:
    """Owner or supervisor. A new severity re-computes both deadlines."""
    principal = require_principal(request)
    path = parse_path(request, ComplaintPath)
    body = await parse_body(request, ComplaintUpdate)
    await _visible_complaint(request, principal, path.complaint_id)
    changes = body.model_dump(exclude_unset=True, exclude={"note"})
    for key, value in changes.items():
        if value is None:
            raise ValidationFailed("invalid body", fields={key: "cannot be null"})
    complaint = await _run(
        request.app[TICKETS].update_complaint(
            path.complaint_id,
            actor_id=principal.user_id,
            actor_role=principal.role,
            changes=changes,
            note=body.note,
        )
    )
    return await _complaint_changed(request, complaint, "update")


@complaints_router.post(
    "/api/v1/complaints/{complaint_id}/take",
    path_params=ComplaintPath,
    response=ComplaintOut,
    errors=(409,),
    roles=WRITE,
    summary="Take an unowned complaint (become its owner)",
)
async def take_complaint(request: web.Request) -> web.Response:
    """409 `already_owned` when someone took it first: ownership then moves only by handover."""
    principal = require_principal(request)
    path = parse_path(request, ComplaintPath)
    await _visible_complaint(request, principal, path.complaint_id)
    complaint = await _run(
        request.app[TICKETS].take_complaint(
            path.complaint_id, actor_id=principal.user_id, actor_role=principal.role
        )
    )
    return await _complaint_changed(request, complaint, "take")


@complaints_router.post(
    "/api/v1/complaints/{complaint_id}/handover",
    path_params=ComplaintPath,
    body=Handover,
    response=ComplaintOut,
    errors=(409,),
    roles=WRITE,
    summary="Hand a complaint over to another person, with a reason",
)
async def handover_complaint(request: web.Request) -> web.Response:
    """By the owner, or a supervisor/admin reassigning."""
    principal = require_principal(request)
    path = parse_path(request, ComplaintPath)
    body = await parse_body(request, Handover)
    await _visible_complaint(request, principal, path.complaint_id)
    complaint = await _run(
        request.app[TICKETS].handover_complaint(
            path.complaint_id,
            actor_id=principal.user_id,
            actor_role=principal.role,
            to_user_id=body.to_user_id,
            reason=body.reason,
        )
    )
    return await _complaint_changed(request, complaint, "handover")


@complaints_router.post(
    "/api/v1/complaints/{complaint_id}/status",
    path_params=ComplaintPath,
    body=ComplaintStatusChange,
    response=ComplaintOut,
    errors=(409,),
    roles=WRITE,
    summary="Move a complaint through its statuses",
)
async def change_complaint_status(request: web.Request) -> web.Response:
    """open -> investigating -> (escalated <-> investigating) -> resolved -> closed; open ->
    resolved; resolved/closed -> investigating reopens. Resolving needs `outcome`; closing
    needs the customer told (`customer_informed` or an earlier note). 409 otherwise."""
    principal = require_principal(request)
    path = parse_path(request, ComplaintPath)
    body = await parse_body(request, ComplaintStatusChange)
    await _visible_complaint(request, principal, path.complaint_id)
    complaint = await _run(
        request.app[TICKETS].change_complaint_status(
            path.complaint_id,
            actor_id=principal.user_id,
            actor_role=principal.role,
            status=body.status,
            note=body.note,
            outcome=body.outcome,
            customer_informed=body.customer_informed,
        )
    )
    return await _complaint_changed(request, complaint, body.status)


@complaints_router.post(
    "/api/v1/complaints/{complaint_id}/notes",
    path_params=ComplaintPath,
    body=ComplaintNote,
    response=ComplaintOut,
    errors=(409,),
    roles=WRITE,
    summary="Add a note to the complaint's timeline",
)
async def add_complaint_note(request: web.Request) -> web.Response:
    """`customer_informed: true` records that the customer was told the outcome."""
    principal = require_principal(request)
    path = parse_path(request, ComplaintPath)
    body = await parse_body(request, ComplaintNote)
    await _visible_complaint(request, principal, path.complaint_id)
    complaint = await _run(
        request.app[TICKETS].add_complaint_note(
            path.complaint_id,
            actor_id=principal.user_id,
            actor_role=principal.role,
            note=body.note,
            customer_informed=body.customer_informed,
        )
    )
    return await _complaint_changed(request, complaint, "note")


@complaints_router.post(
    "/api/v1/complaints/{complaint_id}/calls",
    path_params=ComplaintPath,
    body=ComplaintCallLink,
    response=ComplaintOut,
    errors=(409,),
    roles=WRITE,
    summary="Link another call to the complaint",
)
async def link_complaint_call(request: web.Request) -> web.Response:
    principal = require_principal(request)
    path = parse_path(request, ComplaintPath)
    body = await parse_body(request, ComplaintCallLink)
    await _visible_complaint(request, principal, path.complaint_id)
    complaint = await _run(
        request.app[TICKETS].link_call(
            path.complaint_id,
            actor_id=principal.user_id,
            actor_role=principal.role,
            call_uniqueid=body.call_uniqueid,
        )
    )
    return await _complaint_changed(request, complaint, "link_call")


@complaints_router.get(
    "/api/v1/complaints/{complaint_id}/timeline",
    path_params=ComplaintPath,
    response=list[CaseEventOut],
    roles=READ,
    summary="The complaint's tracking sheet (who, when, what, before/after)",
)
async def complaint_timeline(request: web.Request) -> web.Response:
    principal = require_principal(request)
    path = parse_path(request, ComplaintPath)
    await _visible_complaint(request, principal, path.complaint_id)
    events = await request.app[TICKETS].timeline("complaint", path.complaint_id)
    await audit(request, "view", "complaint", path.complaint_id, {"view": "timeline"})
    return json_response([CaseEventOut.model_validate(e) for e in events])


# ------------------------------------------------------------------------------ dispositions


async def _handled_by(request: web.Request, uniqueid: str, principal: Principal) -> bool | None:
    """Whether the principal's phone answered the call: None when the call is unknown (not in
    the call log yet - it is written when the call ends - nor live)."""
    record = await request.app[CALL_REPOSITORY].get_call(uniqueid)
    if record is None and LIVE_CALLS in request.app:
        record = request.app[LIVE_CALLS].get(uniqueid)
    if record is None:
        return None
    interface = principal.agent_interface
    if interface is None:
        return False
    if record.agent_interface == interface:
        return True
    # the agent list holds member names; Asterisk uses the interface when no name is set
    return interface in record.agents or principal.display_name in record.agents


@dispositions_router.post(
    "/api/v1/calls/{uniqueid}/disposition",
    path_params=CallPath,
    body=DispositionIn,
    response=DispositionOut,
    roles=POLICY["console:use"],
    summary="File what the call was about and its outcome (required before wrap-up ends)",
)
async def save_disposition(request: web.Request) -> web.Response:
    """By the agent who handled the call (403 `not_call_handler` for a call another phone
    answered). Filing again corrects it."""
    principal = require_principal(request)
    path = parse_path(request, CallPath)
    body = await parse_body(request, DispositionIn)
    if await _handled_by(request, path.uniqueid, principal) is False:
        raise NotCallHandler("only the agent who handled the call files its disposition")
    disposition = await _run(
        request.app[TICKETS].save_disposition(
            call_uniqueid=path.uniqueid,
            user_id=principal.user_id,
            category=body.category,
            outcome=body.outcome,
            note=body.note,
        )
    )
    await audit(request, "create", "disposition", path.uniqueid, {"outcome": body.outcome})
    return json_response(DispositionOut.model_validate(disposition))


@dispositions_router.get(
    "/api/v1/calls/{uniqueid}/disposition",
    path_params=CallPath,
    response=DispositionOut,
    roles=POLICY["console:use"],
    summary="My disposition of a call (404 `disposition_not_found` while missing)",
)
async def get_disposition(request: web.Request) -> web.Response:
    principal = require_principal(request)
    path = parse_path(request, CallPath)
    found = await request.app[TICKETS].dispositions(path.uniqueid, user_id=principal.user_id)
    if not found:
        raise DispositionNotFound("no disposition filed for this call yet")
    return json_response(DispositionOut.model_validate(found[0]))


@dispositions_router.get(
    "/api/v1/calls/{uniqueid}/dispositions",
    path_params=CallPath,
    response=list[DispositionOut],
    roles=POLICY["calls:read"],
    summary="Every disposition filed for a call",
)
async def list_dispositions(request: web.Request) -> web.Response:
    """Front-line staff see their own; QA, supervisors and admins see everybody's."""
    principal = require_principal(request)
    path = parse_path(request, CallPath)
    mine_only = principal.role in ("agent", "specialist")
    found = await request.app[TICKETS].dispositions(
        path.uniqueid, user_id=principal.user_id if mine_only else None
    )
    return json_response([DispositionOut.model_validate(d) for d in found])
