"""The `callcenter` command: flows check, db upgrade, version, and `serve` against an emulated
Asterisk that refuses our credentials (stops with a clear error) or is not there (starts
anyway, reports AMI down on /healthz, stops cleanly on SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sqlite3
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serve_support import ROOT, start_serve
from serve_support import serve_env as _env

from callcenter import __version__
from callcenter.cli import main
from callcenter.pbxsim.emulator import Emulator, EmulatorConfig

GOOD_FLOW = """\
start: main
nodes:
  main:
    type: menu
    prompt: p/main
    options:
      "1": q
  q:
    type: queue
    queue: general
"""

BROKEN_FLOW = """\
start: main
nodes:
  main:
    type: menu
    prompt: p/main
    options:
      "1": nowhere
"""


async def _run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callcenter",
        *args,
        cwd=tmp_path,
        env=env or _env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_flows_check_reports_file_line_node_and_fails(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "good.yaml").write_text(GOOD_FLOW, encoding="utf-8")
    (flows / "broken.yaml").write_text(BROKEN_FLOW, encoding="utf-8")
    code, out, _ = await _run(tmp_path, "flows", "check", str(flows))
    assert code == 1
    lines = out.strip().splitlines()
    assert lines, out
    # file:line: node: message
    assert any(
        re.fullmatch(rf"{re.escape(str(flows / 'broken.yaml'))}:\d+: main: .*nowhere.*", line)
        for line in lines
    ), lines
    assert not any("good.yaml" in line for line in lines)

    (flows / "broken.yaml").unlink()
    code, out, _ = await _run(tmp_path, "flows", "check", str(flows))
    assert code == 0, out
    assert "1 flow file(s) OK" in out


async def test_repo_flows_pass_the_check(tmp_path: Path) -> None:
    code, out, _ = await _run(tmp_path, "flows", "check", str(ROOT / "ivr_flows"))
    assert code == 0, out


async def test_version_and_db_upgrade(tmp_path: Path) -> None:
    code, out, _ = await _run(tmp_path, "version")
    assert code == 0 and out.strip() == f"callcenter {__version__}"
    code, _, err = await _run(tmp_path, "db", "upgrade")
    assert code == 0, err
    with sqlite3.connect(tmp_path / "cc.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"calls", "alembic_version"} <= tables
    code, _, err = await _run(tmp_path, "db", "upgrade")  # idempotent
    assert code == 0, err


async def test_bad_configuration_is_reported_not_raised(tmp_path: Path) -> None:
    code, _, err = await _run(
        tmp_path, "flows", "check", env=_env(tmp_path, CALLCENTER_AMI_PORT="not-a-port")
    )
    assert code == 2
    assert "ami_port" in err and "Traceback" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_stops_on_refused_ami_login(tmp_path: Path) -> None:
    emu = Emulator(config=EmulatorConfig(ami_users={"callcenter": "the-right-one"}))
    host, port = await emu.start()
    try:
        env = _env(
            tmp_path,
            CALLCENTER_AMI_HOST=host,
            CALLCENTER_AMI_PORT=str(port),
            CALLCENTER_AMI_SECRET="wrong",
            CALLCENTER_AGI_PORT="0",
            CALLCENTER_WEB_PORT="0",
            CALLCENTER_FLOWS_DIR=str(ROOT / "ivr_flows"),
        )
        code, _, err = await _run(tmp_path, "serve", env=env)
    finally:
        await emu.stop()
    assert code == 1
    assert "AMI login refused for user 'callcenter'" in err
    assert "wrong" not in err  # the secret is never logged
    assert "Traceback" not in err


async def test_serve_starts_without_asterisk_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        CALLCENTER_AMI_HOST="127.0.0.1",
        CALLCENTER_AMI_PORT=str(_free_port()),  # nothing listens there
        CALLCENTER_AMI_SECRET="s3cret-value",
        CALLCENTER_AGI_PORT="0",
        CALLCENTER_WEB_PORT="0",
        CALLCENTER_FLOWS_DIR=str(ROOT / "ivr_flows"),
    )
    proc = await start_serve(tmp_path, env)
    assert proc.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(60):
            url = None
            while url is None:
                line = (await proc.stderr.readline()).decode()
                assert line, "serve exited early:\n" + "".join(log)
                log.append(line)
                m = re.search(r"web: (http://\S+/)", line)
                url = m.group(1) if m else None
        status, body = await asyncio.to_thread(_get, url + "healthz")
        assert status == 503
        assert body["components"]["ami"]["ok"] is False
        assert body["components"]["db"]["ok"] is True
        assert any("not reachable" in line for line in log)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rest = (await proc.stderr.read()).decode()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, "".join(log) + rest
    assert "s3cret-value" not in "".join(log) + rest


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_demo_argument_rules(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, needle in (
        (["demo", "--json"], "--json needs --exit"),
        (["demo", "--exit"], "--exit needs --calls"),
        (["demo", "--calls", "0"], "must be positive"),
        (["demo", "--port", "70000"], "port out of range"),
        (["demo", "--speed", "-1"], "must be positive"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert needle in capsys.readouterr().err
