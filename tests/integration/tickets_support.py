"""Helpers for the ticket and customer API tests: the real app with a settable clock, users of
each role, and per-user request headers (session cookie + CSRF token), so one test client can
act as several people."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher
from users_support import PASSWORD, app_settings

from callcenter.app import SESSIONS, create_app
from callcenter.users.model import User
from callcenter.users.repository import UserRepository
from callcenter.users.service import Passwords
from callcenter.web.auth import SESSION_COOKIE
from callcenter.web.keys import WEB_SESSIONS

Client = TestClient[Any, Any]

# Monday 2026-11-30 10:00 in Shanghai (the demo calendar: Mon-Sat 08:00-20:00)
MONDAY_10H = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


class Clock:
    """A settable clock for the app (deadlines, breach checks)."""

    def __init__(self, now: datetime = MONDAY_10H) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_clocked_app(db_url: str, tmp_path: Path, clock: Clock) -> web.Application:
    return create_app(app_settings(db_url, tmp_path), clock=clock)


@dataclass(frozen=True, slots=True)
class Person:
    user: User
    headers: dict[str, str]

    @property
    def id(self) -> int:
        return self.user.id


async def person(app: web.Application, username: str, role: str, **kw: Any) -> Person:
    """A user with a fresh browser session: pass `headers=p.headers` on each request."""
    # cheap hashes: these users never sign in with their password
    fast = Passwords(hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    users = UserRepository(session_factory=app[SESSIONS], passwords=fast)
    user = await users.create(username=username, password=PASSWORD, role=role, **kw)
    session = await app[WEB_SESSIONS].create(user.id, ip="127.0.0.1", user_agent="test")
    headers = {"Cookie": f"{SESSION_COOKIE}={session.cookie}", "X-CSRF-Token": session.csrf_token}
    return Person(user, headers)


async def body_of(resp: Any, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    body: dict[str, Any] = (await body_of(resp, status))["error"]
    return body
