"""HTTP handlers for calls, agents, queues and health: parse, ask a service, render.

Every error goes through `callcenter.web.middlewares.error_middleware` (typed errors in
`callcenter.web.errors`). Times are ISO 8601 with an offset; query times without one are read
in the configured time zone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from pathlib import PurePath
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from callcenter.agents.model import QueueStats
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
from callcenter.web.middlewares import validation_fields

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


Q = TypeVar("Q", bound=_Query)


def _aware_cmp(value: datetime) -> datetime:
    # only for ordering since/until before the zone is applied: treat naive as UTC
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo("UTC"))


def parse_query(model: type[Q], request: web.Request) -> Q:
    """The query string as `model`; 422 with one message per bad field otherwise."""
    raw: dict[str, str] = {}
    for name in request.query:
        values = request.query.getall(name)
        if len(values) > 1:
            raise ValidationFailed("invalid query", fields={name: "given more than once"})
        raw[name] = values[0]
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        fields = validation_fields(exc)
        if "__root__" in fields:
            fields["until"] = fields.pop("__root__").removeprefix("Value error, ")
        raise ValidationFailed("invalid query", fields=fields) from None


def _zone(request: web.Request) -> ZoneInfo:
    try:
        return ZoneInfo(request.app[SETTINGS].timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _localise(value: datetime | None, zone: ZoneInfo) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=zone)


# ------------------------------------------------------------------------------ handlers


async def list_calls(request: web.Request) -> web.Response:
    """GET /api/v1/calls: the call log, newest first, filtered and paged."""
    q = parse_query(CallsQuery, request)
    zone = _zone(request)
    filters: dict[str, Any] = {
        "since": _localise(q.since, zone),
        "until": _localise(q.until, zone),
        "queue": q.queue,
        "agent": q.agent,
        "abandoned": q.abandoned,
        "caller": q.caller,
    }
    repo = request.app[CALL_REPOSITORY]
    items = await repo.list_calls(**filters, limit=q.limit, offset=q.offset)
    total = await repo.count_calls(**filters)
    return web.json_response(
        {"items": to_json(items), "total": total, "limit": q.limit, "offset": q.offset}
    )


async def get_call(request: web.Request) -> web.Response:
    """GET /api/v1/calls/{uniqueid}: one logged call with its IVR steps (or the live record)."""
    uniqueid = request.match_info["uniqueid"]
    if not uniqueid or len(uniqueid) > MAX_UNIQUEID:
        raise ValidationFailed("invalid call id", fields={"uniqueid": "1 to 64 characters"})
    repo = request.app[CALL_REPOSITORY]
    detail = await repo.get_call_detail(uniqueid)
    if detail is not None:
        body: dict[str, Any] = to_json(detail.call)
        body["ivr_steps"] = to_json(detail.steps)
        body["callback"] = to_json(detail.callback)
        body["live"] = False
        return web.json_response(body)
    live = request.app[LIVE_CALLS].get(uniqueid)
    if live is None:
        raise CallNotFound(f"no call {uniqueid}")
    body = to_json(live)
    body["ivr_steps"] = to_json(await repo.get_steps(live.uniqueid))
    body["callback"] = None
    body["live"] = True
    return web.json_response(body)


async def live_calls(request: web.Request) -> web.Response:
    """GET /api/v1/calls/live: the calls in progress, oldest first."""
    return web.json_response({"items": to_json(request.app[LIVE_CALLS].active_calls())})


async def calls_summary(request: web.Request) -> web.Response:
    """GET /api/v1/calls/summary?since&until: operating statistics for calls started in
    [since, until); no since = today (local time zone); no until = now."""
    q = parse_query(PeriodQuery, request)
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


async def list_agents(request: web.Request) -> web.Response:
    """GET /api/v1/agents: every known agent's live state."""
    agents = sorted(request.app[LIVE_AGENTS].agents(), key=lambda a: (a.name, a.interface))
    return web.json_response({"items": to_json(agents)})


async def list_queues(request: web.Request) -> web.Response:
    """GET /api/v1/queues: waiting callers and members per queue, live."""
    now = request.app[CLOCK]()
    queues = sorted(request.app[LIVE_AGENTS].queues(now), key=lambda q: q.queue)
    return web.json_response({"items": [_queue_json(q) for q in queues]})


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 when every component is fine, 503 otherwise; always a JSON body."""
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
