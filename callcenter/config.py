"""One frozen Settings object, from CALLCENTER_* environment variables and an optional TOML file.

Secrets (the AMI secret, the database URL with its password) are `SecretStr`: they never appear in
reprs or logs. Use `Settings.database_url_display` when a URL must be shown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url

CONFIG_FILE_ENV = "CALLCENTER_CONFIG"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLCENTER_", frozen=True, extra="forbid", toml_file=None
    )

    # storage and bus
    database_url: SecretStr = SecretStr("sqlite+aiosqlite:///./data/callcenter.db")
    redis_url: SecretStr | None = None

    # Asterisk Manager Interface (we are the client)
    ami_host: str = "127.0.0.1"
    ami_port: int = Field(5038, ge=1, le=65535)
    ami_username: str = "callcenter"
    ami_secret: SecretStr = SecretStr("")
    # md5: Challenge + Login with Key = md5(challenge + secret), the secret never on the wire
    ami_auth: Literal["md5", "plain"] = "md5"
    ami_action_timeout: float = Field(5.0, gt=0)
    ami_ping_interval: float = Field(5.0, gt=0)
    ami_ping_timeout: float = Field(3.0, gt=0)
    ami_reconnect_min: float = Field(0.5, gt=0)
    ami_reconnect_max: float = Field(30.0, gt=0)

    # FastAGI (we are the server; Asterisk connects to us)
    agi_host: str = "127.0.0.1"
    agi_port: int = Field(4573, ge=0, le=65535)

    # web
    web_host: str = "127.0.0.1"
    web_port: int = Field(8080, ge=0, le=65535)

    # files
    flows_dir: Path = Path("ivr_flows")
    recordings_dir: Path = Path("recordings")
    data_dir: Path = Path("data")

    # routing and telephony policy
    timezone: str = "Asia/Shanghai"
    default_queue: str = "general"
    operator_queue: str = "operator"
    lookup_timeout: float = Field(0.5, gt=0)
    answer_target_seconds: int = Field(60, gt=0)
    # dialplan contexts of the agents' phones (deploy/asterisk/extensions.conf [agents]): calls
    # they start (agent to agent, outward dials, consultations) are not hotline calls
    internal_contexts: tuple[str, ...] = ("agents", "from-internal")

    # sign-in: cookie Secure flag (None = only when the request came over https, so the
    # http://127.0.0.1 demo works; set true behind a TLS-terminating proxy)
    session_cookie_secure: bool | None = None
    session_max_age_hours: float = Field(12.0, gt=0)
    session_idle_minutes: float = Field(120.0, gt=0)
    login_max_failures: int = Field(5, ge=1)
    login_window_seconds: float = Field(900.0, gt=0)
    # argon2id cost (argon2-cffi's defaults); raising them upgrades stored hashes at next login
    password_time_cost: int = Field(3, ge=1, le=50)
    password_memory_kib: int = Field(65536, ge=8, le=4 * 1024 * 1024)
    password_parallelism: int = Field(4, ge=1, le=64)

    log_level: str = "INFO"
    # serve/demo/pbxsim: auto = uvloop when it is installed, else the standard asyncio loop
    # (asyncio by default: see bench/README.md, "uvloop", for why)
    event_loop: Literal["auto", "asyncio", "uvloop"] = "asyncio"

    @model_validator(mode="before")
    @classmethod
    def _sqlite_in_data_dir(cls, data: Any) -> Any:
        """Without a database_url, the SQLite call log lives in data_dir."""
        if isinstance(data, dict) and "data_dir" in data and "database_url" not in data:
            path = Path(data["data_dir"]) / "callcenter.db"
            return {**data, "database_url": f"sqlite+aiosqlite:///{path}"}
        return data

    @property
    def database_url_display(self) -> str:
        """The database URL with its password masked, for logs."""
        return make_url(self.database_url.get_secret_value()).render_as_string(hide_password=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get(CONFIG_FILE_ENV)
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read settings: explicit overrides > environment > TOML file (the argument or
    CALLCENTER_CONFIG)."""
    if config_file is not None:
        if not config_file.is_file():
            raise FileNotFoundError(f"config file not found: {config_file}")
        os.environ[CONFIG_FILE_ENV] = str(config_file)
    return Settings(**overrides)
