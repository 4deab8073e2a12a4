"""`callcenter serve` does not exit when the database cannot be opened at start-up: it answers
/healthz (db down, with the reason) and 503 `database_unavailable` on the API, brings the
database up (migrations) as soon as it can be opened, and stops cleanly on SIGTERM. Refused
AMI credentials still stop it with a clear error."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from failopen_support import closed_port
from serve_support import ROOT, start_serve
from serve_support import serve_env as _env

from callcenter.pbxsim.emulator import Emulator, EmulatorConfig


def _get(url: str, **headers: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_serve_keeps_running_while_the_database_cannot_be_opened(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the database directory should be")
    db_file = blocker / "cc.db"  # cannot be created while `data` is a file
    env = _env(
        tmp_path,
        CALLCENTER_DATABASE_URL=f"sqlite+aiosqlite:///{db_file}",
        CALLCENTER_AMI_HOST="127.0.0.1",
        CALLCENTER_AMI_PORT=str(closed_port()),
        CALLCENTER_AMI_SECRET="s3cret-value",
        CALLCENTER_AGI_PORT="0",
        CALLCENTER_WEB_PORT="0",
        CALLCENTER_FLOWS_DIR=str(ROOT / "ivr_flows"),
    )
    proc = await start_serve(tmp_path, env)
    assert proc.stderr is not None
    log: list[str] = []
    rest = ""
    try:
        async with asyncio.timeout(60):
            url = None
            while url is None:
                line = (await proc.stderr.readline()).decode()
                assert line, "serve exited early:\n" + "".join(log)
                log.append(line)
                m = re.search(r"web: (http://\S+/)", line)
                url = m.group(1) if m else None
        assert any("database unavailable at start-up" in line for line in log), log

        status, body = await asyncio.to_thread(_get, url + "healthz")
        assert status == 503
        db = body["components"]["db"]
        assert db["ok"] is False and "unable to open database file" in db["detail"], db
        status, body = await asyncio.to_thread(
            _get, url + "api/v1/calls", Authorization="Bearer whatever"
        )
        assert status == 503 and body["error"]["code"] == "database_unavailable", body

        blocker.unlink()  # now the directory and the file can be created
        async with asyncio.timeout(60):
            while True:
                _, body = await asyncio.to_thread(_get, url + "healthz")
                if body["components"]["db"]["ok"]:
                    break
                await asyncio.sleep(0.1)
        with sqlite3.connect(db_file) as conn:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        assert {"calls", "alembic_version"} <= tables
        status, body = await asyncio.to_thread(
            _get, url + "api/v1/calls", Authorization="Bearer whatever"
        )
        assert status == 401, body  # the database answers: an unknown token

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rest = (await proc.stderr.read()).decode()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = "".join(log) + rest
    assert code == 0, output
    assert "Traceback" not in output, output
    assert "s3cret-value" not in output


async def test_a_refused_ami_login_still_stops_serve_while_the_database_is_down(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    emu = Emulator(config=EmulatorConfig(ami_users={"callcenter": "the-right-one"}))
    host, port = await emu.start()
    try:
        env = _env(
            tmp_path,
            CALLCENTER_DATABASE_URL=f"sqlite+aiosqlite:///{blocker / 'cc.db'}",
            CALLCENTER_AMI_HOST=host,
            CALLCENTER_AMI_PORT=str(port),
            CALLCENTER_AMI_SECRET="wrong",
            CALLCENTER_AGI_PORT="0",
            CALLCENTER_WEB_PORT="0",
            CALLCENTER_FLOWS_DIR=str(ROOT / "ivr_flows"),
        )
        proc = await start_serve(tmp_path, env)
        async with asyncio.timeout(60):
            _, err_bytes = await proc.communicate()
    finally:
        await emu.stop()
    err = err_bytes.decode()
    assert proc.returncode == 1, err
    assert "database unavailable at start-up" in err
    assert "AMI login refused for user 'callcenter'" in err
    assert "Traceback" not in err
