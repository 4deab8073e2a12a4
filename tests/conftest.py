"""Shared fixtures: databases (SQLite file, PostgreSQL), Redis, and the bus.

Real servers, not mocks. PostgreSQL and Redis come from the environment:

    CALLCENTER_TEST_PG_URL=postgresql+asyncpg://callcenter:callcenter@127.0.0.1:5432/postgres
    CALLCENTER_TEST_REDIS_URL=redis://127.0.0.1:6379/0

Unset, their tests skip locally but FAIL when CI=true, so CI cannot pass by skipping.

Database fixtures (URLs are strings with the async driver, e.g. "sqlite+aiosqlite:///...")
- sqlite_url: a SQLite file URL in tmp_path, no tables yet
- pg_url: a fresh, empty PostgreSQL database for this test (dropped afterwards)
- db_backend: parametrised "sqlite" / "postgres" (the latter marked `postgres`)
- db_url: an empty database of db_backend (for migration tests)
- migrated_db_url: a migrated, EMPTY database of db_backend. SQLite: a copy of a database migrated
  once per session. PostgreSQL: one database migrated once per session, every table truncated
  before each test (fast; do not run tests of one session in parallel against one server).
- session_factory: async_sessionmaker on migrated_db_url (expire_on_commit=False)

Redis and bus fixtures
- redis_url: the test Redis server's URL (checked reachable)
- redis_prefix: a unique key/channel prefix for this test; keys under it are deleted afterwards.
  Pub/sub channels are server-wide (not per database index): isolate with the prefix.
- bus: parametrised "memory" / "redis" (the latter marked `redis`), closed afterwards
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from shared_asterisk import AGI_RAW, AMI_RAW
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from callcenter.bus.base import Bus
from callcenter.bus.memory import MemoryBus
from callcenter.bus.redis import RedisBus
from callcenter.db.engine import async_url, create_engine, create_session_factory
from callcenter.db.migrate import upgrade_database
from callcenter.db.models import Base

PG_ENV = "CALLCENTER_TEST_PG_URL"
REDIS_ENV = "CALLCENTER_TEST_REDIS_URL"

T = TypeVar("T")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    """In CI the Asterisk transcripts must be there: the protocol tests may not skip."""
    if in_ci() and not (AMI_RAW.is_dir() and AGI_RAW.is_dir()):
        raise pytest.UsageError(
            f"CI=true but the Asterisk transcripts are missing ({AMI_RAW}, {AGI_RAW}); "
            "put shared/ beside the checkout or set CALLCENTER_SHARED_DIR"
        )


@pytest.fixture
def speech_tools() -> None:
    """espeak-ng and sox (Debian packages .ci/run installs): skip without them, or fail in CI."""
    if shutil.which("espeak-ng") and shutil.which("sox"):
        return
    if in_ci():
        pytest.fail("espeak-ng or sox is missing but CI=true: .ci/run installs both")
    pytest.skip("needs espeak-ng and sox")


def require_env(name: str) -> str:
    """The variable's value; skip the test if unset, or fail it when running in CI."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if in_ci():
        pytest.fail(f"{name} is not set but CI=true: this test must run against the real server")
    pytest.skip(f"{name} is not set")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a private loop in a helper thread (usable from sync
    fixtures whether or not an event loop is running in this thread)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="conftest-run-sync")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# --- databases --------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/callcenter.db"


async def _pg_admin(admin_url: str, statement: str) -> None:
    engine = create_async_engine(async_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _pg_database_url(admin_url: str, name: str) -> str:
    return async_url(admin_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def pg_url() -> Iterator[str]:
    admin = require_env(PG_ENV)
    name = f"test_{uuid.uuid4().hex[:16]}"
    run_sync(_pg_admin(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_database_url(admin, name)
    finally:
        run_sync(_pg_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def db_url(db_backend: str, request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("sqlite_url" if db_backend == "sqlite" else "pg_url")
    return url


@pytest.fixture(scope="session")
def _sqlite_migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db-template") / "template.db"
    run_sync(upgrade_database(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def _pg_migrated_session_db() -> Iterator[str]:
    admin = require_env(PG_ENV)
    name = f"test_session_{uuid.uuid4().hex[:12]}"
    run_sync(_pg_admin(admin, f'CREATE DATABASE "{name}"'))
    try:
        url = _pg_database_url(admin, name)
        run_sync(upgrade_database(url))
        yield url
    finally:
        run_sync(_pg_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _truncate_all(url: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE TABLE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture
def migrated_db_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if db_backend == "sqlite":
        template: Path = request.getfixturevalue("_sqlite_migrated_template")
        path = tmp_path / "callcenter.db"
        shutil.copyfile(template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("_pg_migrated_session_db")
    run_sync(_truncate_all(url))
    return url


@pytest.fixture
async def session_factory(migrated_db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(migrated_db_url)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


# --- Redis and the bus ------------------------------------------------------------------------


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
