"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from callcenter.db.engine import create_engine
from callcenter.db.migrate import (
    MIGRATIONS_DIR_ENV,
    current_revision,
    head_revision,
    migrations_dir,
    upgrade_database,
)
from callcenter.db.models import Base

REPO = Path(__file__).resolve().parents[2]
TABLES = {
    "calls",
    "ivr_steps",
    "callback_requests",
    "queues",
    "agents",
    "customers",
    "customer_numbers",
    "users",
    "web_sessions",
    "api_tokens",
    "audit_log",
    "bookings",
    "complaints",
    "complaint_calls",
    "case_events",
    "dispositions",
}


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrated_schema_matches_the_models(db_url: str) -> None:
    await upgrade_database(db_url)
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert tables - {"alembic_version"} == TABLES
    assert diff == []


async def test_upgrade_is_repeatable_and_reaches_head(db_url: str) -> None:
    assert await current_revision(db_url) is None
    await upgrade_database(db_url)
    await upgrade_database(db_url)
    assert await current_revision(db_url) == head_revision()


async def test_an_empty_database_differs_from_the_models(sqlite_url: str) -> None:
    # guards the check above: compare_metadata does see missing tables
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert len(diff) >= len(TABLES)


def test_alembic_command_line_uses_the_configured_url(db_url: str) -> None:
    env = {
        **os.environ,
        "CALLCENTER_DATABASE_URL": db_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }

    def alembic(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    upgraded = alembic("upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr
    current = alembic("current")
    assert current.returncode == 0, current.stderr
    assert f"{head_revision()} (head)" in current.stdout


async def test_sqlite_database_file_is_created_by_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "data" / "callcenter.db"
    await upgrade_database(f"sqlite+aiosqlite:///{db}")
    assert db.is_file()


def test_migrations_dir_can_be_overridden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert migrations_dir() == REPO / "migrations"
    monkeypatch.setenv(MIGRATIONS_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=MIGRATIONS_DIR_ENV):
        migrations_dir()
    monkeypatch.setenv(MIGRATIONS_DIR_ENV, str(REPO / "migrations"))
    assert migrations_dir() == REPO / "migrations"
