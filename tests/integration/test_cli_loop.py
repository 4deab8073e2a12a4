"""CALLCENTER_EVENT_LOOP: `callcenter demo` runs on the chosen event loop and says which."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from callcenter.cli import EXIT_CONFIG, EventLoopUnavailable, loop_factory, main

ROOT = Path(__file__).resolve().parents[2]


def _demo(tmp_path: Path, loop: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr); stops the demo at the first traceback on stderr."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "CALLCENTER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
        "CALLCENTER_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "CALLCENTER_FLOWS_DIR": str(ROOT / "ivr_flows"),
        "CALLCENTER_LOG_LEVEL": "INFO",
        "CALLCENTER_EVENT_LOOP": loop,
    }
    env.pop("CALLCENTER_CONFIG", None)
    with subprocess.Popen(
        [sys.executable, "-m", "callcenter", "demo", "--calls", "3", "--exit", "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        err: list[str] = []
        for line in proc.stderr:  # the JSON summary (stdout) is one short line at the end
            err.append(line)
            if line.startswith("Traceback"):  # a callback failed: no need to wait it out
                proc.kill()
                err.extend(proc.stderr.readlines())
                break
        out = proc.stdout.read()
        code = proc.wait(timeout=180)
    return code, out, "".join(err)


def test_demo_runs_on_uvloop_when_asked(tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    code, stdout, stderr = _demo(tmp_path, "uvloop")
    # the loop that actually ran, as logged from inside it
    assert "event loop: uvloop" in stderr and "(uvloop.Loop)" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code == 0, stderr[-3000:]
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout  # the JSON summary alone on stdout
    out = json.loads(lines[0])
    assert out["calls"] == 3
    assert out["answered"] + out["abandoned"] == 3


def test_loop_factory_honours_the_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    name, factory = loop_factory("asyncio")
    assert (name, factory) == ("asyncio", None)
    uvloop = pytest.importorskip("uvloop")
    name, factory = loop_factory("uvloop")
    assert name.startswith("uvloop") and factory is uvloop.new_event_loop
    assert loop_factory("auto")[1] is uvloop.new_event_loop
    loop = factory()
    try:
        assert not isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()

    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on a platform without uvloop
    assert loop_factory("auto") == ("asyncio", None)
    with pytest.raises(EventLoopUnavailable, match="uvloop"):
        loop_factory("uvloop")


def test_unavailable_or_unknown_loop_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("CALLCENTER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLCENTER_EVENT_LOOP", "trio")
    assert main(["pbxsim", "--ami-port", "0", "--calls", "1"]) == EXIT_CONFIG
    assert "event_loop" in capsys.readouterr().err

    monkeypatch.setenv("CALLCENTER_EVENT_LOOP", "uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert main(["pbxsim", "--ami-port", "0", "--calls", "1"]) == EXIT_CONFIG
    assert "uvloop is not importable" in capsys.readouterr().err
