"""HTTP handlers for calls, agents, queues and health: parse, ask a service, render.

Every error goes through `callcenter.web.middlewares.error_middleware` (typed errors in
`callcenter.web.errors`). Times are ISO 8601 with an offset; query times without one are read
in the configured time zone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import typing
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from pathlib import PurePath
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from callcenter.agents.model import AgentState, QueueStats, WaitingCaller
from callcenter.calls.model import CallRecord, IvrStep
from callcenter.calls.repository import CallbackEntry
from callcenter.tickets.model import InputModel
from callcenter.users.model import POLICY, Principal
from callcenter.users.service import numbers_for
from callcenter.web.api import ApiRouter, Page, parse_path, parse_query, require_principal
from callcenter.web.errors import CallNotFound, ValidationFailed
from callcenter.web.keys import (
    CALL_REPOSITORY,
    CLOCK,
    HEALTH_CHECKS,
    LIVE_AGENTS,
    LIVE_CALLS,
    SETTINGS,
    ComponentHealth,
)

HEALTH_TIMEOUT = 2.0
MAX_PAGE = 500
MAX_UNIQUEID = 64


# ------------------------------------------------------------------------------ JSON rendering


def to_json(value: Any) -> Any:
    """Plain JSON data from our frozen dataclasses: datetimes in ISO 8601, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    return value


def _queue_json(q: QueueStats) -> dict[str, Any]:
    data: dict[str, Any] = to_json(q)
    data["name"] = q.queue
    data["members_by_status"] = data.pop("members")
    data["members"] = sum(q.members.values())
    data["available"] = q.members.get("available", 0)
    return data


# ------------------------------------------------------------------------------ query parsing


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class PeriodQuery(_Query):
    since: datetime | None = None
    until: datetime | None = None

    @model_validator(mode="after")
    def _ordered(self) -> PeriodQuery:
        if self.since and self.until and _aware_cmp(self.until) <= _aware_cmp(self.since):
            raise ValueError("until must be later than since")
        return self


class CallsQuery(PeriodQuery):
    queue: str | None = Field(None, min_length=1, max_length=64)
    agent: str | None = Field(None, min_length=1, max_length=128)
    abandoned: bool | None = None
    caller: str | None = Field(None, min_length=1, max_length=64)
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10_000_000)


class CallIdPath(InputModel):
    """A call's uniqueid, as sent; text with a NUL is refused (422), PostgreSQL cannot
    compare it."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    uniqueid: str = Field(min_length=1, max_length=MAX_UNIQUEID)


Q = TypeVar("Q", bound=_Query)


def _aware_cmp(value: datetime) -> datetime:
    # only for ordering since/until before the zone is applied: treat naive as UTC
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo("UTC"))


def _parse_period(request: web.Request, model: type[Q]) -> Q:
    """`parse_query`, with the since/until ordering error reported on `until`."""
    try:
        return parse_query(request, model)
    except ValidationFailed as exc:
        if "__root__" in exc.fields:
            exc.fields["until"] = exc.fields.pop("__root__")
        raise


def _zone(request: web.Request) -> ZoneInfo:
    try:
        return ZoneInfo(request.app[SETTINGS].timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _localise(value: datetime | None, zone: ZoneInfo) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=zone)


# ------------------------------------------------------------------------------ response schemas
# (documentation for the OpenAPI document; the bodies are rendered by `to_json`)


class LiveCallsOut(BaseModel):
    items: list[CallRecord]


class AgentsOut(BaseModel):
    items: list[AgentState]


class QueueOut(BaseModel):
    name: str
    queue: str
    waiting: int
    longest_wait_seconds: float
    callers: list[WaitingCaller]
    members: int = Field(description="members in total")
    members_by_status: dict[str, int]
    available: int
    strategy: str
    completed: int
    abandoned: int
    holdtime: int
    talktime: int
    service_level: int
    service_level_perf: float | None


class QueuesOut(BaseModel):
    items: list[QueueOut]


CallDetailOut = create_model(
    "CallDetailOut",
    **{name: (hint, ...) for name, hint in typing.get_type_hints(CallRecord).items()},  # type: ignore[call-overload]
    ivr_steps=(list[IvrStep], ...),
    callback=(CallbackEntry | None, ...),
    live=(bool, ...),
)


class QueueSummaryOut(BaseModel):
    calls: int
    answered: int
    abandoned: int
    answered_within_target: int
    avg_wait_seconds: float | None


class SummaryOut(BaseModel):
    """Mirrors callcenter.calls.repository.CallSummary."""

    since: datetime
    until: datetime
    answer_target_seconds: int
    calls: int
    answered: int
    abandoned: int
    abandoned_in_ivr: int
    abandoned_in_queue: int
    queued: int
    answered_within_target: int
    service_level: float | None
    avg_wait_seconds: float | None
    avg_talk_seconds: float | None
    recordings: int
    callbacks: int
    ivr_choices: dict[str, int]
    by_queue: dict[str, QueueSummaryOut]
    by_agent: dict[str, int]


class ComponentOut(BaseModel):
    ok: bool
    detail: str
    info: dict[str, Any] | None = None


class HealthOut(BaseModel):
    status: typing.Literal["ok", "degraded"]
    components: dict[str, ComponentOut]


# ------------------------------------------------------------------------------ privacy


def _own_calls_only(principal: Principal) -> bool:
    # agents see the calls they took; specialists investigate any call
    return principal.role == "agent"


# ------------------------------------------------------------------------------ handlers

router = ApiRouter(tag="calls", scope="calls")
live_router = ApiRouter(tag="live", scope="calls")
health_router = ApiRouter(tag="health")


@router.get(
    "/api/v1/calls",
    roles=POLICY["calls:read"],
    query=CallsQuery,
    response=Page[CallRecord],
    summary="The call log",
)
async def list_calls(request: web.Request) -> web.Response:
    """The call log, newest first, filtered and paged. Agents see only calls they answered;
    QA sees caller numbers masked."""
    principal = require_principal(request)
    q = _parse_period(request, CallsQuery)
    zone = _zone(request)
    filters: dict[str, Any] = {
        "since": _localise(q.since, zone),
        "until": _localise(q.until, zone),
        "queue": q.queue,
        "agent": q.agent,
        "abandoned": q.abandoned,
        "caller": q.caller,
    }
    if _own_calls_only(principal):
        if q.agent is not None and q.agent != principal.agent_interface:
            raise ValidationFailed("invalid query", fields={"agent": "you see your own calls"})
        filters["agent"] = principal.agent_interface or "-"
    repo = request.app[CALL_REPOSITORY]
    items = await repo.list_calls(**filters, limit=q.limit, offset=q.offset)
    total = await repo.count_calls(**filters)
    return web.json_response(
        {
            "items": numbers_for(principal, to_json(items)),
            "total": total,
            "limit": q.limit,
            "offset": q.offset,
        }
    )


# fixed paths before the {uniqueid} pattern
@live_router.get(
    "/api/v1/calls/summary",
    roles=POLICY["live:view"],
    query=PeriodQuery,
    response=SummaryOut,
    summary="Operating statistics",
)
async def calls_summary(request: web.Request) -> web.Response:
    """Operating statistics for calls started in [since, until); no since = today (local time
    zone); no until = now."""
    q = _parse_period(request, PeriodQuery)
    zone = _zone(request)
    now = request.app[CLOCK]().astimezone(zone)
    since = _localise(q.since, zone)
    until = _localise(q.until, zone)
    if since is None:
        since = datetime.combine(now.date(), time(), tzinfo=zone)
        until = until or since + timedelta(days=1)
    elif until is None:
        until = max(now, since) + timedelta(seconds=1)
    if until <= since:
        raise ValidationFailed("invalid query", fields={"until": "until must be later than since"})
    summary = await request.app[CALL_REPOSITORY].summary(since, until)
    return web.json_response(to_json(summary))


@live_router.get(
    "/api/v1/calls/live",
    roles=POLICY["live:view"],
    response=LiveCallsOut,
    summary="Calls in progress",
)
async def live_calls(request: web.Request) -> web.Response:
    """The calls in progress, oldest first."""
    principal = require_principal(request)
    calls = request.app[LIVE_CALLS].active_calls()
    return web.json_response({"items": numbers_for(principal, to_json(calls))})


@router.get(
    "/api/v1/calls/{uniqueid}",
    roles=POLICY["calls:read"],
    response=CallDetailOut,
    errors={404},
    summary="One call with its IVR steps",
)
async def get_call(request: web.Request) -> web.Response:
    """One logged call with its IVR steps and callback request (or the live record)."""
    principal = require_principal(request)
    uniqueid = parse_path(request, CallIdPath).uniqueid
    repo = request.app[CALL_REPOSITORY]
    detail = await repo.get_call_detail(uniqueid)
    if detail is not None:
        body: dict[str, Any] = to_json(detail.call)
        body["ivr_steps"] = to_json(detail.steps)
        body["callback"] = to_json(detail.callback)
        body["live"] = False
        return web.json_response(_visible_call(body, principal, uniqueid))
    live = request.app[LIVE_CALLS].get(uniqueid)
    if live is None:
        raise CallNotFound(f"no call {uniqueid}")
    body = to_json(live)
    body["ivr_steps"] = to_json(await repo.get_steps(live.uniqueid))
    body["callback"] = None
    body["live"] = True
    return web.json_response(_visible_call(body, principal, uniqueid))


def _visible_call(body: dict[str, Any], principal: Principal, uniqueid: str) -> dict[str, Any]:
    if _own_calls_only(principal) and (
        not principal.agent_interface or body.get("agent_interface") != principal.agent_interface
    ):
        raise CallNotFound(f"no call {uniqueid}")  # not "forbidden": do not confirm it exists
    return cast(dict[str, Any], numbers_for(principal, body))


@live_router.get(
    "/api/v1/agents", roles=POLICY["live:view"], response=AgentsOut, summary="Agents, live"
)
async def list_agents(request: web.Request) -> web.Response:
    """Every known agent's live state."""
    agents = sorted(request.app[LIVE_AGENTS].agents(), key=lambda a: (a.name, a.interface))
    return web.json_response({"items": to_json(agents)})


@live_router.get(
    "/api/v1/queues", roles=POLICY["live:view"], response=QueuesOut, summary="Queues, live"
)
async def list_queues(request: web.Request) -> web.Response:
    """Waiting callers and members per queue, live."""
    principal = require_principal(request)
    now = request.app[CLOCK]()
    queues = sorted(request.app[LIVE_AGENTS].queues(now), key=lambda q: q.queue)
    return web.json_response({"items": numbers_for(principal, [_queue_json(q) for q in queues])})


@health_router.get(
    "/healthz",
    roles=None,
    response=HealthOut,
    extra_responses={503: "A component is down (same body, status `degraded`)"},
    summary="Health of every component",
)
async def healthz(request: web.Request) -> web.Response:
    """200 when every component is fine, 503 otherwise; always a JSON body."""
    checks = request.app[HEALTH_CHECKS]
    names = sorted(checks)
    results = await asyncio.gather(
        *(_run_check(checks[name]) for name in names), return_exceptions=False
    )
    components = {
        name: {"ok": r.ok, "detail": r.detail, **({"info": to_json(r.info)} if r.info else {})}
        for name, r in zip(names, results, strict=True)
    }
    ok = all(r.ok for r in results)
    return web.json_response(
        {"status": "ok" if ok else "degraded", "components": components}, status=200 if ok else 503
    )


async def _run_check(check: Any) -> ComponentHealth:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            result: ComponentHealth = await check()
            return result
    except TimeoutError:
        return ComponentHealth(ok=False, detail=f"no answer within {HEALTH_TIMEOUT:g}s")
    except Exception as exc:
        return ComponentHealth(ok=False, detail=f"{type(exc).__name__}: {exc}")
