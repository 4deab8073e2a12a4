"""The REST API of the real app (create_app) on SQLite and PostgreSQL, fed by the emulator over
real AMI and FastAGI sockets: calls placed by simulated callers show up in the call log, the
live views and over the WebSocket; bad input gets typed JSON errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient

from callcenter.app import PIPELINE, create_app
from callcenter.config import Settings
from callcenter.demo import emulator_config, open_moment
from callcenter.ivr.loader import load_calendar
from callcenter.pbxsim.callers import CallerModel, KeyPlan
from callcenter.pbxsim.emulator import Emulator
from callcenter.pbxsim.pbx import RealClock
from callcenter.web.keys import CALL_REPOSITORY, USERS

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "ivr_flows"
SPEED = 50.0


@dataclass
class Live:
    client: TestClient[Any, Any]
    app: web.Application
    emulators: list[Emulator]

    @property
    def emu(self) -> Emulator:
        return self.emulators[0]

    async def call(self, number: str, name: str, *keys: str) -> str:
        """One simulated call to its end; returns its uniqueid once the call log has it."""
        caller = CallerModel(
            number=number,
            name=name,
            language="zh",
            keys=[KeyPlan(k, delay=0.5) for k in keys],
            talk_limit=20.0,
        )
        summary = await self.emu.inbound_call(caller)
        repo = self.app[CALL_REPOSITORY]
        async with asyncio.timeout(30):
            while True:
                await self.app[PIPELINE].drain()
                call = await repo.get_call(summary.uniqueid)
                if call is not None and call.ended_at is not None:
                    return summary.uniqueid
                await asyncio.sleep(0.02)


@pytest.fixture
async def live(db_url: str, tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Live]:
    settings = Settings(
        database_url=db_url,
        flows_dir=FLOWS,
        recordings_dir=tmp_path / "recordings",
        agi_port=0,
        ami_secret="test-secret",
        timezone="Asia/Shanghai",
    )
    start = open_moment(
        load_calendar(FLOWS / "calendar.yaml"), datetime.now(UTC), ZoneInfo("Asia/Shanghai")
    )
    clock = RealClock(speed=SPEED, start=start.timestamp())
    emulators: list[Emulator] = []

    def factory(host: str, port: int) -> Emulator:
        cfg = emulator_config(settings, agi_host=host, agi_port=port, speed=SPEED, seed=7)
        cfg.tts = False  # tones instead of speech: faster, no espeak-ng needed
        emu = Emulator(config=cfg, clock=clock)
        emulators.append(emu)
        return emu

    app = create_app(
        settings, emulator=factory, clock=lambda: datetime.fromtimestamp(clock.time(), UTC)
    )
    client = await aiohttp_client(app)
    # every route needs a signed-in user now: a supervisor sees the live page and the call log
    await app[USERS].create(username="sup", password="sup-pass-123", role="supervisor")
    resp = await client.post(
        "/api/v1/auth/login", json={"username": "sup", "password": "sup-pass-123"}
    )
    assert resp.status == 200, await resp.text()
    yield Live(client=client, app=app, emulators=emulators)


async def _json(resp: Any, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


async def test_calls_are_logged_listed_filtered_and_detailed(live: Live) -> None:
    c = live.client
    first = await live.call("13800138000", "张三", "1", "2")  # Chinese, complaints
    second = await live.call("+8613900139000", "李四", "1", "3")  # Chinese, general
    assert first != second

    page = await _json(await c.get("/api/v1/calls"))
    assert page["total"] == 2 and page["limit"] == 50 and page["offset"] == 0
    assert [item["uniqueid"] for item in page["items"]] == [second, first]  # newest first
    by_id = {item["uniqueid"]: item for item in page["items"]}
    assert by_id[first]["queue"] == "complaints"
    assert by_id[second]["queue"] == "general"
    assert by_id[first]["caller_name"] == "张三"

    only = await _json(await c.get("/api/v1/calls", params={"queue": "complaints"}))
    assert [i["uniqueid"] for i in only["items"]] == [first] and only["total"] == 1
    mine = await _json(await c.get("/api/v1/calls", params={"caller": "139 0013 9000"}))
    assert [i["uniqueid"] for i in mine["items"]] == [second]
    paged = await _json(await c.get("/api/v1/calls", params={"limit": "1", "offset": "1"}))
    assert [i["uniqueid"] for i in paged["items"]] == [first] and paged["total"] == 2
    none = await _json(await c.get("/api/v1/calls", params={"since": "2099-01-01T00:00:00"}))
    assert none == {"items": [], "total": 0, "limit": 50, "offset": 0}

    detail = await _json(await c.get(f"/api/v1/calls/{first}"))
    assert detail["uniqueid"] == first and detail["live"] is False
    nodes = [s["node"] for s in detail["ivr_steps"]]
    assert nodes[0] == "lookup" and "main" in nodes
    assert [s["seq"] for s in detail["ivr_steps"]] == sorted(s["seq"] for s in detail["ivr_steps"])

    summary = await _json(
        await c.get("/api/v1/calls/summary", params={"since": "2000-01-01T00:00:00+00:00"})
    )
    assert summary["calls"] == 2
    assert summary["answered"] + summary["abandoned"] <= 2
    assert set(summary["by_queue"]) <= {"complaints", "general"}


async def test_live_agents_queues_and_health(live: Live) -> None:
    c = live.client
    await live.call("13800138000", "张三", "1", "4", "1")
    agents = await _json(await c.get("/api/v1/agents"))
    assert {a["interface"] for a in agents["items"]} == {f"PJSIP/{n}" for n in range(1001, 1009)}
    assert all(
        a["status"] in {"available", "wrap_up", "on_call", "ringing", "paused"}
        for a in agents["items"]
    )
    queues = await _json(await c.get("/api/v1/queues"))
    names = [q["name"] for q in queues["items"]]
    assert {"bookings", "complaints", "general", "technical", "operator"} <= set(names)
    assert all(q["waiting"] == 0 for q in queues["items"])
    assert all(q["members"] >= 1 for q in queues["items"])

    live_calls = await _json(await c.get("/api/v1/calls/live"))
    assert live_calls == {"items": []}

    health = await _json(await c.get("/healthz"))
    assert health["status"] == "ok"
    assert {k: v["ok"] for k, v in health["components"].items()} == {
        "ami": True,
        "bus": True,
        "db": True,
    }


async def test_errors_are_typed(live: Live) -> None:
    c = live.client
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(c.make_url("/api/v1/calls")) as resp,
    ):
        assert (await _json(resp, 401))["error"]["code"] == "unauthenticated"
    err = (await _json(await c.get("/api/v1/calls/1234.5"), 404))["error"]
    assert err["code"] == "call_not_found"
    bad = (
        await _json(
            await c.get(
                "/api/v1/calls",
                params={"limit": "0", "since": "yesterday", "abandoned": "maybe", "x": "1"},
            ),
            422,
        )
    )["error"]
    assert bad["code"] == "validation_failed"
    assert set(bad["fields"]) == {"limit", "since", "abandoned", "x"}
    order = (
        await _json(
            await c.get(
                "/api/v1/calls",
                params={"since": "2026-01-02T00:00:00", "until": "2026-01-01T00:00:00"},
            ),
            422,
        )
    )["error"]
    assert order["fields"] == {"until": "until must be later than since"}
    twice = (await _json(await c.get("/api/v1/calls?queue=a&queue=b"), 422))["error"]
    assert twice["fields"] == {"queue": "given more than once"}
    assert (await _json(await c.get("/api/v1/nothing"), 404))["error"]["code"] == "route_not_found"


async def test_page_and_websocket(live: Live) -> None:
    c = live.client
    page = await c.get("/")
    assert page.status == 200
    html = await page.text()
    assert "/static/app.js" in html and "http://" not in html and "https://" not in html
    for asset in ("/static/app.js", "/static/i18n.js", "/static/app.css"):
        assert (await c.get(asset)).status == 200

    ws = await c.ws_connect("/ws")
    call = asyncio.ensure_future(live.call("13800138000", "张三", "1", "3"))
    seen: list[tuple[str, str]] = []
    async with asyncio.timeout(30):
        while not any(t == "call.ended" for _, t in seen):
            msg = await ws.receive(timeout=30)
            assert msg.type is WSMsgType.TEXT
            data = msg.json()
            seen.append((data["channel"], data["payload"].get("type", "")))
        uniqueid = await call
    assert ("calls", "call.started") in seen
    assert ("calls", "call.ended") in seen
    assert any(ch == "agents" for ch, _ in seen)
    assert uniqueid

    await live.app.shutdown()
    msg = await ws.receive(timeout=10)
    while msg.type is WSMsgType.TEXT:  # what was already on its way
        msg = await ws.receive(timeout=10)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == WSCloseCode.GOING_AWAY  # the code the server sent
