"""Settings: where the default SQLite call log lives."""

from __future__ import annotations

from pathlib import Path

import pytest

from callcenter.config import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CALLCENTER_CONFIG", "CALLCENTER_DATABASE_URL", "CALLCENTER_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_default_database_is_sqlite_under_data() -> None:
    assert Settings().database_url.get_secret_value() == "sqlite+aiosqlite:///./data/callcenter.db"


def test_data_dir_moves_the_default_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLCENTER_DATA_DIR", "/srv/callcenter")
    settings = Settings()
    assert settings.data_dir == Path("/srv/callcenter")
    assert settings.database_url.get_secret_value() == (
        "sqlite+aiosqlite:////srv/callcenter/callcenter.db"
    )


def test_an_explicit_database_url_wins_over_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLCENTER_DATA_DIR", "/srv/callcenter")
    monkeypatch.setenv("CALLCENTER_DATABASE_URL", "postgresql+asyncpg://cc:pw@db/cc")
    assert Settings().database_url.get_secret_value() == "postgresql+asyncpg://cc:pw@db/cc"
