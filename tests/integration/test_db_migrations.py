"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from callcenter.db.engine import create_engine
from callcenter.db.migrate import current_revision, head_revision, upgrade_database
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


def test_alembic_command_line_uses_the_configured_url(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "cli.db"
    env = {
        **os.environ,
        "CALLCENTER_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert db.is_file()
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "current"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert head_revision() in result.stdout
