"""Typed application keys: what the composition root (`callcenter.app`) puts into the aiohttp
application and the handlers read back. Handlers depend on these small Protocols, not on the
concrete trackers, so a test can hand them any object of the right shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web

from callcenter.agents.model import AgentState, QueueStats
from callcenter.calls.model import CallRecord
from callcenter.calls.repository import CallRepository
from callcenter.config import Settings
from callcenter.customers.repository import CustomerHistory, CustomerRepository
from callcenter.tickets.notifier import TicketNotifier
from callcenter.tickets.repository import TicketRepository
from callcenter.users.repository import (
    AuditRepository,
    SessionRepository,
    TokenRepository,
    UserRepository,
)
from callcenter.users.service import LoginRateLimiter
from callcenter.web.hub import WebSocketHub


class LiveCalls(Protocol):
    """The calls in progress (CallTracker)."""

    def active_calls(self) -> list[CallRecord]: ...

    def get(self, uniqueid: str) -> CallRecord | None: ...


class LiveAgents(Protocol):
    """Agent and queue state as the PBX last reported it (AgentStateTracker)."""

    def agents(self) -> Sequence[AgentState]: ...

    def queues(self, now: datetime) -> Sequence[QueueStats]: ...


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    ok: bool
    detail: str = ""
    info: Mapping[str, Any] | None = None


HealthCheck = Callable[[], Awaitable[ComponentHealth]]

Clock = Callable[[], datetime]  # aware "now"; the emulator's clock in the demo

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey[Clock]("clock")
HUB = web.AppKey("hub", WebSocketHub)
CALL_REPOSITORY = web.AppKey("call_repository", CallRepository)
LIVE_CALLS = web.AppKey[LiveCalls]("live_calls")
LIVE_AGENTS = web.AppKey[LiveAgents]("live_agents")
# name -> check, run by GET /healthz; registered by each resource's cleanup context
HEALTH_CHECKS = web.AppKey[dict[str, HealthCheck]]("health_checks")
# users, sign-in and audit (callcenter.web.auth.install_auth)
USERS = web.AppKey("users", UserRepository)
WEB_SESSIONS = web.AppKey("web_sessions", SessionRepository)
API_TOKENS = web.AppKey("api_tokens", TokenRepository)
AUDIT = web.AppKey("audit", AuditRepository)
LOGIN_LIMITER = web.AppKey("login_limiter", LoginRateLimiter)
# customer archive, bookings/complaints/dispositions (callcenter.app `_tickets` context)
CUSTOMERS = web.AppKey("customers", CustomerRepository)
CUSTOMER_HISTORY = web.AppKey("customer_history", CustomerHistory)
TICKETS = web.AppKey("tickets", TicketRepository)
TICKET_NOTIFIER = web.AppKey("ticket_notifier", TicketNotifier)
