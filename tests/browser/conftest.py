"""Browser test fixtures: Debian's chromium driven by the Python `playwright` package (never
`playwright install`), and the real app + emulator listening on a loopback port.

Without /usr/bin/chromium or playwright the browser tests skip locally and FAIL in CI (CI=true),
so CI cannot pass by skipping. Screenshots go to $CALLCENTER_SCREENSHOTS_DIR when set (the
README's images: `CALLCENTER_SCREENSHOTS_DIR=docs/screenshots pytest tests/browser`), else to
the test's tmp_path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web

from callcenter.app import SESSIONS, create_app, start_site
from callcenter.config import Settings
from callcenter.customers.repository import CustomerRepository
from callcenter.demo import emulator_config, open_moment
from callcenter.ivr.loader import load_calendar
from callcenter.pbxsim.emulator import Emulator
from callcenter.pbxsim.pbx import RealClock
from callcenter.pbxsim.queues import AgentProfile
from callcenter.web.keys import USERS

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "ivr_flows"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SPEED = 20.0
PASSWORD = "correct horse battery"
ALICE, BOB = "PJSIP/1001", "PJSIP/1002"


def _chromium_missing() -> bool:
    return not Path(CHROMIUM).exists() and shutil.which("chromium") is None


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        if _in_ci():
            pytest.fail("playwright is not installed (pip install -e '.[dev]')")
        pytest.skip("playwright is not installed")
    if _chromium_missing():
        if _in_ci():
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = os.environ.get("CALLCENTER_SCREENSHOTS_DIR")
    path = Path(target) if target else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Server:
    url: str
    app: web.Application
    emulators: list[Emulator]
    users: dict[str, int]
    customer_id: int

    @property
    def emu(self) -> Emulator:
        return self.emulators[0]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """The real app with the emulator on 127.0.0.1:<ephemeral>; agent 1 (alice, en, PJSIP/1001)
    takes every queue and always answers; agent 2 (bob, zh-CN, PJSIP/1002) is in no queue."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'browser.db'}",
        flows_dir=FLOWS,
        agi_port=0,
        ami_secret="browser-secret",
        timezone="Asia/Shanghai",
        lookup_timeout=30.0,  # the pop must carry the archive lookup however loaded the machine
    )
    start = open_moment(
        load_calendar(FLOWS / "calendar.yaml"), datetime.now(UTC), ZoneInfo("Asia/Shanghai")
    )
    clock = RealClock(speed=SPEED, start=start.timestamp())
    emulators: list[Emulator] = []

    def factory(host: str, port: int) -> Emulator:
        cfg = emulator_config(settings, agi_host=host, agi_port=port, speed=SPEED, seed=3)
        cfg.tts = False
        cfg.recordings_dir = None
        cfg.members = {q.name: [ALICE] for q in cfg.queues}
        cfg.agents = [
            AgentProfile(ALICE, "Alice Agent", forced="answer", answer_delay=(2.0, 2.0)),
            AgentProfile(BOB, "Bob Agent"),
        ]
        emu = Emulator(config=cfg, clock=clock)
        emulators.append(emu)
        return emu

    app = create_app(
        settings, emulator=factory, clock=lambda: datetime.fromtimestamp(clock.time(), UTC)
    )
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        port = await start_site(runner, "127.0.0.1", 0)
        users = {}
        for name, display, iface, language in (
            ("alice", "Alice Agent", ALICE, "en"),
            ("bob", "李娜", BOB, "zh-CN"),
        ):
            user = await app[USERS].create(
                username=name,
                password=PASSWORD,
                role="agent",
                display_name=display,
                agent_interface=iface,
                language=language,
                group="complaints",
            )
            users[name] = user.id
        customer = await CustomerRepository(session_factory=app[SESSIONS]).create(
            name="张三",
            numbers=["13800138000"],
            tier="key",
            company="上海星辰贸易有限公司",
            credit_grade="A",
            notes="Prefers Mandarin; VIP since 2021",
        )
        yield Server(
            url=f"http://127.0.0.1:{port}",
            app=app,
            emulators=emulators,
            users=users,
            customer_id=customer.id,
        )
    finally:
        await runner.cleanup()
