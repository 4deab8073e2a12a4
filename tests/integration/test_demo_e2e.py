"""`callcenter demo --calls 5 --exit --json` end to end, in a subprocess: the emulator places five
calls, our server tracks them over AMI/FastAGI, and the printed figures match the call log."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def test_demo_five_calls_json_matches_the_database(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    recordings = tmp_path / "recordings"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "CALLCENTER_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "CALLCENTER_RECORDINGS_DIR": str(recordings),
        "CALLCENTER_FLOWS_DIR": str(ROOT / "ivr_flows"),
        "CALLCENTER_LOG_LEVEL": "WARNING",
    }
    env.pop("CALLCENTER_CONFIG", None)
    out = _demo(tmp_path, env, 5, "--no-web")
    for key in ("calls", "answered", "abandoned", "ivr_choices", "recordings"):
        assert key in out
    assert "answered_within_60s" in out and "avg_wait" in out

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT answered_at IS NOT NULL, abandoned, recording_file, wait_seconds, ended_at "
            "FROM calls"
        ).fetchall()
    assert len(rows) == 5 == out["calls"]
    assert all(r[4] is not None for r in rows), "every call ended in the log"
    assert out["answered"] == sum(1 for r in rows if r[0])
    assert out["abandoned"] == sum(1 for r in rows if r[1])
    files = [r[2] for r in rows if r[2]]
    assert out["recordings"] == len(files)
    waits = [r[3] for r in rows if r[0] and r[3] is not None]
    if waits:
        assert abs(out["avg_wait"] - sum(waits) / len(waits)) < 0.01
    assert out["answered_within_60s"] == sum(1 for r in rows if r[0] and (r[3] or 0) <= 60)
    assert sum(out["ivr_choices"].values()) <= 5

    # the recordings exist: stereo 8 kHz WAV (caller left, agent right)
    assert out["recording_files"] == len(files)
    for name in files:
        with wave.open(str(recordings / Path(name).name)) as wav:
            assert wav.getnchannels() == 2
            assert wav.getframerate() == 8000

    # a second run on the same database reports only its own calls and overwrites none
    again = _demo(tmp_path, env, 2)
    assert again["calls"] == 2
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 7


def _demo(cwd: Path, env: dict[str, str], calls: int, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "callcenter",
            "demo",
            "--calls",
            str(calls),
            "--exit",
            "--json",
            *extra,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout  # exactly one JSON object on stdout
    out: dict[str, Any] = json.loads(lines[0])
    return out
