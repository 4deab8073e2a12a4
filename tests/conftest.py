"""Shared fixtures: databases (SQLite file, PostgreSQL), Redis, and the bus.

Real servers, not mocks. PostgreSQL and Redis come from the environment:

    CALLCENTER_TEST_PG_URL=postgresql+asyncpg://callcenter:callcenter@127.0.0.1:5432/postgres
    CALLCENTER_TEST_REDIS_URL=redis://127.0.0.1:6379/0

Unset, their tests skip locally but FAIL when CI=true, so CI cannot pass by skipping.
Fixtures:
- sqlite_url: a SQLite file URL in tmp_path (not migrated)
- pg_url: a fresh, empty PostgreSQL database for this test (dropped afterwards)
- db_url: parametrised over ["sqlite", "postgres"]; not migrated
- migrated_db_url: db_url after `upgrade_database`
- session_factory: async_sessionmaker on a migrated db_url (both backends)
- redis_url: the test Redis server's URL (checked reachable); redis_prefix: a unique key/channel
  prefix for this test (its keys are deleted afterwards; pub/sub is server-wide, so isolate by
  prefix, not by database index)
- bus: parametrised over ["memory", "redis"]
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from callcenter.bus.base import Bus
from callcenter.bus.memory import MemoryBus
from callcenter.bus.redis import RedisBus
from callcenter.db.engine import async_url, create_engine, create_session_factory
from callcenter.db.migrate import upgrade_database

PG_ENV = "CALLCENTER_TEST_PG_URL"
REDIS_ENV = "CALLCENTER_TEST_REDIS_URL"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_env(name: str) -> str:
    """The variable's value; skip the test if unset, or fail it when running in CI."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if in_ci():
        pytest.fail(f"{name} is not set but CI=true: this test must run against the real server")
    pytest.skip(f"{name} is not set")


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite+aiosqlite:///{os.fspath(tmp_path)}/callcenter.db"


async def _pg_admin(admin_url: str, statement: str) -> None:
    engine = create_async_engine(async_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    admin = require_env(PG_ENV)
    name = f"test_{uuid.uuid4().hex[:16]}"
    await _pg_admin(admin, f'CREATE DATABASE "{name}"')
    try:
        yield async_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        await _pg_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def migrated_db_url(db_url: str) -> str:
    await upgrade_database(db_url)
    return db_url


@pytest.fixture
async def session_factory(migrated_db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(migrated_db_url)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def redis_url() -> str:
    import redis

    url = require_env(REDIS_ENV)
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"{REDIS_ENV}={url} is set but Redis does not answer: {exc}")
    finally:
        client.close()
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    import redis

    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
def bus_kind(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """("memory", "", "") or ("redis", url, prefix); resolved synchronously (see `bus`)."""
    if request.param == "memory":
        return ("memory", "", "")
    return ("redis", request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))


@pytest.fixture
async def bus(bus_kind: tuple[str, str, str]) -> AsyncIterator[Bus]:
    kind, url, prefix = bus_kind
    the_bus: MemoryBus | RedisBus
    if kind == "memory":
        the_bus = MemoryBus()
    else:
        the_bus = RedisBus(url=url, prefix=prefix, retry_interval=0.05, poll_interval=0.2)
    try:
        yield the_bus
    finally:
        await the_bus.close()
