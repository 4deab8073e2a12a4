"""Print the README's configuration table, generated from callcenter.config.Settings.

    python scripts/settings_table.py        # paste the output into README.md
tests/integration/test_cli_docs.py fails when README.md and Settings disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callcenter.config import Settings


def _default(value: object) -> str:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        return f"`{secret}`" if secret and "://" in secret else "(empty)" if not secret else "***"
    if value is None:
        return "(unset)"
    return f"`{value}`"


# One line per setting; a setting missing here still gets a row (with an empty description).
DESCRIPTIONS = {
    "database_url": "call log database (`sqlite+aiosqlite:///...` or `postgresql+asyncpg://...`)",
    "redis_url": "Redis for the bus (`redis://host:6379/0`); unset = in-process bus",
    "ami_host": "Asterisk Manager Interface host",
    "ami_port": "AMI port",
    "ami_username": "AMI user (manager.conf section)",
    "ami_secret": "AMI secret",
    "ami_action_timeout": "seconds to wait for an AMI action's response",
    "ami_ping_interval": "seconds between keep-alive pings",
    "ami_ping_timeout": "a ping unanswered this long drops the connection",
    "ami_reconnect_min": "first reconnect delay (doubles up to the max)",
    "ami_reconnect_max": "longest reconnect delay",
    "agi_host": "FastAGI listen address (Asterisk connects here)",
    "agi_port": "FastAGI listen port",
    "web_host": "web listen address",
    "web_port": "web listen port",
    "flows_dir": "IVR flow files (`*.yaml`, `calendar.yaml`)",
    "recordings_dir": "where call recordings are found/written",
    "data_dir": "local data (the SQLite database by default)",
    "timezone": "business hours and daily reports",
    "default_queue": "queue for callers when the IVR cannot decide (fail open)",
    "operator_queue": "queue of the IVR's 'talk to a person' option",
    "lookup_timeout": "seconds the IVR waits for the customer lookup",
    "answer_target_seconds": "service level: answered within this many seconds",
    "log_level": "DEBUG, INFO, WARNING, ERROR",
}


def settings_table() -> str:
    lines = ["| variable | default | type | what |", "| --- | --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        annotation = info.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation)
        type_name = str(annotation).replace("typing.", "") if "|" in str(annotation) else type_name
        type_name = type_name.replace("pydantic.types.", "").replace("pathlib.", "")
        type_name = type_name.replace("<class '", "").replace("'>", "")
        type_name = type_name.replace(" | None", " (optional)")
        lines.append(
            f"| `CALLCENTER_{name.upper()}` | {_default(info.default)} | {type_name}"
            f" | {DESCRIPTIONS.get(name, '')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_table())
