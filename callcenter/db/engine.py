"""Engine and session factory from a database URL (SQLite via aiosqlite, PostgreSQL via asyncpg)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = [
    "async_url",
    "create_engine",
    "create_session_factory",
    "dialect_insert",
    "sqlite_path",
]

SQLITE_BUSY_TIMEOUT_MS = 5000
# asyncpg waits 60 s for a connection by default: too long for a caller's lookup or a probe
PG_CONNECT_TIMEOUT_S = 10.0

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
}
_SUPPORTED = ("sqlite+aiosqlite", "postgresql+asyncpg")


def async_url(url: str | URL) -> URL:
    """The URL with its async driver: "sqlite:///x.db" -> "sqlite+aiosqlite:///x.db",
    "postgresql://..." -> "postgresql+asyncpg://...". Other backends are refused."""
    parsed = make_url(url) if isinstance(url, str) else url
    driver = _ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    if driver not in _SUPPORTED:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}: use sqlite+aiosqlite:// "
            "or postgresql+asyncpg://"
        )
    return parsed.set(drivername=driver)


def sqlite_path(url: URL) -> Path | None:
    """The file a SQLite URL points at, or None for in-memory databases and other backends."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or url.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):
        return None  # URI form: the caller manages the file
    return Path(database)


def create_engine(url: str | URL, *, echo: bool = False) -> AsyncEngine:
    """An AsyncEngine for `url`; nothing connects until first use. For a SQLite file, its
    directory is created if missing (if that fails, connecting reports it) and every
    connection gets WAL journaling, a busy timeout and foreign-key enforcement. PostgreSQL
    connections are checked before reuse and time out after PG_CONNECT_TIMEOUT_S."""
    parsed = async_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    path = sqlite_path(parsed)
    if path is not None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"timeout": PG_CONNECT_TIMEOUT_S}
    engine = create_async_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(wal=path is not None))
    return engine


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(*, wal: bool) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    return on_connect


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """INSERT for the session's dialect, with `on_conflict_do_update` / `on_conflict_do_nothing`
    (SQLite and PostgreSQL spell ON CONFLICT alike)."""
    from sqlalchemy.dialects import postgresql, sqlite

    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {name!r}")


LIKE_ESCAPE = "\\"


def contains_pattern(text: str) -> str:
    """A LIKE/ILIKE pattern matching values that contain `text` literally (its `%`, `_` and
    backslashes escaped); use it with `escape=LIKE_ESCAPE`."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
