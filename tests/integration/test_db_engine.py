"""Engine set-up: SQLite files and pragmas, URL handling, UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.db.engine import async_url, create_engine, sqlite_path
from callcenter.db.migrate import upgrade_database
from callcenter.db.models import QueueRow, UTCDateTime


def test_async_url_picks_the_async_driver() -> None:
    assert async_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert async_url("postgresql://u:p@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgres://u:p@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgresql+asyncpg://u:p@h/db").drivername == "postgresql+asyncpg"
    with pytest.raises(ValueError, match="unsupported"):
        async_url("mysql://u:p@h/db")


def test_sqlite_path() -> None:
    assert sqlite_path(async_url("sqlite:///./data/cc.db")) == Path("./data/cc.db")
    assert sqlite_path(async_url("sqlite://")) is None
    assert sqlite_path(async_url("sqlite:///:memory:")) is None
    assert sqlite_path(async_url("postgresql://h/db")) is None


async def test_sqlite_file_and_directory_are_created_with_wal(tmp_path: Path) -> None:
    db = tmp_path / "data" / "deeper" / "callcenter.db"
    url = f"sqlite+aiosqlite:///{db}"
    await upgrade_database(url)
    assert db.is_file()
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await engine.dispose()


def test_utc_type_refuses_naive_and_converts_aware() -> None:
    utc_type = UTCDateTime()
    dialect = async_url("sqlite:///x.db").get_dialect()()
    with pytest.raises(ValueError, match="naive"):
        utc_type.process_bind_param(datetime(2026, 1, 1, 8, 0), dialect)
    shanghai = timezone(timedelta(hours=8))
    stored = utc_type.process_bind_param(datetime(2026, 1, 1, 8, 0, tzinfo=shanghai), dialect)
    assert stored == datetime(2026, 1, 1, 0, 0)  # UTC wall clock on SQLite
    loaded = utc_type.process_result_value(stored, dialect)
    assert loaded == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert loaded is not None and loaded.tzinfo is UTC


async def test_naive_datetimes_never_reach_the_database(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    from callcenter.db.models import AgentRow

    async with session_factory() as session:
        session.add(
            AgentRow(
                name="x", interface="PJSIP/9", group="general", created_at=datetime(2026, 1, 1)
            )
        )
        with pytest.raises(StatementError, match="naive"):
            await session.flush()
        await session.rollback()
        assert (await session.scalars(select(QueueRow))).all() == []
