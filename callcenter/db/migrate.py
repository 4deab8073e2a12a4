"""Run the Alembic migrations from Python (`callcenter db upgrade`, the demo's start-up, tests)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection

from callcenter.db.engine import create_engine

__all__ = [
    "MIGRATIONS_DIR",
    "MIGRATIONS_DIR_ENV",
    "alembic_config",
    "current_revision",
    "head_revision",
    "migrations_dir",
    "upgrade_database",
]

MIGRATIONS_DIR_ENV = "CALLCENTER_MIGRATIONS_DIR"
# migrations/ lives at the repository root, beside the callcenter package.
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def migrations_dir() -> Path:
    """Where the Alembic scripts are: $CALLCENTER_MIGRATIONS_DIR, else the source tree's
    migrations/, else ./migrations (for an installed package run from the project directory)."""
    override = os.environ.get(MIGRATIONS_DIR_ENV)
    candidates = [Path(override)] if override else [MIGRATIONS_DIR, Path.cwd() / "migrations"]
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"migrations directory not found (tried {tried}); set {MIGRATIONS_DIR_ENV}"
    )


def alembic_config() -> Config:
    """An Alembic Config for the project's migrations, independent of the working directory."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
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
