"""Helpers for tests of the signed-in app: the real create_app on a real database, users of
each role, sign-in over HTTP.

The app's AMI client points at a closed loopback port (connection refused at once, then it
retries in the background): these tests are about the web side, no PBX needed.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from callcenter.app import create_app
from callcenter.config import Settings
from callcenter.users.model import ROLES, User
from callcenter.web.keys import USERS

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "ivr_flows"
PASSWORD = "test-pass-123"


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def app_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "flows_dir": FLOWS,
        "recordings_dir": tmp_path / "recordings",
        "agi_port": 0,
        "ami_port": closed_port(),
        "ami_secret": "unused",
        "ami_reconnect_min": 30.0,
        "ami_reconnect_max": 60.0,
        # cheap argon2 for tests (production keeps argon2-cffi's defaults)
        "password_time_cost": 1,
        "password_memory_kib": 1024,
        "password_parallelism": 1,
    }
    values.update(overrides)
    return Settings(**values)


def make_app(db_url: str, tmp_path: Path, **overrides: Any) -> web.Application:
    return create_app(app_settings(db_url, tmp_path, **overrides))


async def add_user(
    app: web.Application, username: str, role: str, *, password: str = PASSWORD, **kw: Any
) -> User:
    return await app[USERS].create(username=username, password=password, role=role, **kw)


async def add_role_users(app: web.Application) -> dict[str, User]:
    """One user per role, named after the role; the agent is linked to PJSIP/1001."""
    users: dict[str, User] = {}
    for role in ROLES:
        extra: dict[str, Any] = {}
        if role in ("agent", "specialist"):
            extra = {
                "agent_interface": "PJSIP/1001" if role == "agent" else "PJSIP/1003",
                "group": "bookings" if role == "agent" else "complaints",
            }
        users[role] = await add_user(app, role, role, **extra)
    return users


async def login(
    client: TestClient[Any, Any], username: str, password: str = PASSWORD
) -> dict[str, Any]:
    """Sign in over the JSON API; returns the response body (csrf_token, user, ...)."""
    resp = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body
