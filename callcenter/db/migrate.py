"""Run the Alembic migrations from Python (`callcenter db upgrade`, the demo's start-up, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection

from callcenter.db.engine import create_engine

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade_database",
]

# migrations/ lives at the repository root, beside the callcenter package.
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config() -> Config:
    """An Alembic Config for the project's migrations, independent of the working directory."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise FileNotFoundError(f"migrations directory not found: {MIGRATIONS_DIR}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["configure_logging"] = False
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the migrations directory has no revisions")
    return head


async def upgrade_database(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision` (default: the newest). Safe to run repeatedly;
    creates the SQLite file (and its directory) if missing."""
    cfg = alembic_config()
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, cfg, revision)
    finally:
        await engine.dispose()


async def current_revision(url: str | URL) -> str | None:
    """The revision the database at `url` is at (None if never migrated)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, cfg: Config, revision: str) -> None:
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
