"""`callcenter serve` as a child process, for the CLI tests."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without its CALLCENTER_* settings (the test ones stay), the
    checkout on PYTHONPATH, a SQLite file under `tmp_path`, then `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CALLCENTER_") or k.startswith("CALLCENTER_TEST_")
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["CALLCENTER_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cc.db'}"
    env.update(extra)
    return env


async def start_serve(tmp_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    """`python -m callcenter serve` in `tmp_path`, stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callcenter",
        "serve",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
