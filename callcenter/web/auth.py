"""Who is asking: the auth middleware, session cookies, and the wiring of the users stores.

`auth_middleware` puts a `Principal` (or None) into `request[PRINCIPAL]` from, in order:
- `Authorization: Bearer <api token>` (an invalid token is anonymous, never a fallback to the
  cookie), or
- the session cookie `cc_session` (HttpOnly, SameSite=Lax, Secure per
  `Settings.session_cookie_secure`, default: when the request came over https).
The role/scope/CSRF checks themselves are in `callcenter.web.api.authorize`, per route.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.config import Settings
from callcenter.users.model import Principal
from callcenter.users.repository import (
    AuditRepository,
    NewSession,
    SessionRepository,
    TokenRepository,
    UserRepository,
    utc_now,
)
from callcenter.users.service import LoginAttempt, LoginRateLimiter, LoginThrottled, Passwords
from callcenter.web.api import PRINCIPAL, require_principal
from callcenter.web.errors import Forbidden, TooManyRequests
from callcenter.web.keys import (
    API_TOKENS,
    AUDIT,
    LOGIN_LIMITER,
    SETTINGS,
    USERS,
    WEB_SESSIONS,
)

log = logging.getLogger(__name__)

SESSION_COOKIE = "cc_session"
LOGIN_CSRF_COOKIE = "cc_login_csrf"
# no principal lookup for these (static assets, health probes)
_SKIP_PREFIXES = ("/static/", "/healthz")


def install_auth(
    app: web.Application,
    *,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Callable[[], datetime] = utc_now,
    passwords: Passwords | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Put the users, sessions, tokens, audit stores and the login limiter into `app`."""
    if passwords is None:
        passwords = Passwords(
            hasher=PasswordHasher(
                time_cost=settings.password_time_cost,
                memory_cost=settings.password_memory_kib,
                parallelism=settings.password_parallelism,
            )
        )
    app[USERS] = UserRepository(session_factory=session_factory, passwords=passwords, clock=clock)
    app[WEB_SESSIONS] = SessionRepository(
        session_factory=session_factory,
        max_age=timedelta(hours=settings.session_max_age_hours),
        idle_timeout=timedelta(minutes=settings.session_idle_minutes),
        clock=clock,
    )
    app[API_TOKENS] = TokenRepository(session_factory=session_factory, clock=clock)
    app[AUDIT] = AuditRepository(session_factory=session_factory, clock=clock)
    app[LOGIN_LIMITER] = LoginRateLimiter(
        clock=monotonic,
        max_failures=settings.login_max_failures,
        window_seconds=settings.login_window_seconds,
    )


def bearer_token(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer <token>`, "" for any other Authorization value,
    None without the header."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return value.strip()


async def resolve_principal(request: web.Request) -> Principal | None:
    app = request.app
    if USERS not in app:  # the database context did not start
        return None
    token = bearer_token(request)
    if token is not None:
        return await app[API_TOKENS].resolve(token) if token else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return await app[WEB_SESSIONS].resolve(cookie)
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[PRINCIPAL] = None
    if not request.path.startswith(_SKIP_PREFIXES):
        request[PRINCIPAL] = await resolve_principal(request)
    return await handler(request)


def cookie_secure(request: web.Request) -> bool:
    configured = request.app[SETTINGS].session_cookie_secure
    return request.secure if configured is None else configured


def set_session_cookie(response: web.StreamResponse, request: web.Request, new: NewSession) -> None:
    max_age = int(request.app[SETTINGS].session_max_age_hours * 3600)
    response.set_cookie(
        SESSION_COOKIE,
        new.cookie,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=cookie_secure(request),
        samesite="Lax",
    )


def clear_session_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.del_cookie(
        SESSION_COOKIE, path="/", secure=cookie_secure(request), httponly=True, samesite="Lax"
    )


def client_ip(request: web.Request) -> str:
    return request.remote or "unknown"


async def audit(
    request: web.Request,
    action: str,
    entity_type: str,
    entity_id: int | str | None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Record in the audit log that the request's principal did `action` on an entity."""
    await request.app[AUDIT].record(
        require_principal(request),
        action,
        entity_type,
        entity_id,
        details,
        ip=client_ip(request),
    )


def reserve_login_attempt(request: web.Request, username: str) -> LoginAttempt:
    """Count a sign-in attempt before its password is checked, so concurrent attempts are
    limited too; 429 with Retry-After when this username+IP (or this IP) failed too often or
    has too many attempts in flight. Settle the returned attempt once it is decided."""
    try:
        return request.app[LOGIN_LIMITER].reserve(username, client_ip(request))
    except LoginThrottled as exc:
        raise TooManyRequests(
            "too many failed sign-ins; try again later", retry_after=int(exc.retry_after) + 1
        ) from None


def check_same_origin(request: web.Request) -> None:
    """Refuse a WebSocket handshake from a page of another site (403). Browsers send Origin
    on WebSocket handshakes and CORS does not apply to them, so without this any site could
    open one with the user's cookie."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1].rstrip("/") != request.host:
        raise Forbidden("cross-site WebSocket refused")
