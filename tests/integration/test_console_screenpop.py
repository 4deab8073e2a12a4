"""The agent console against the real app (create_app, on SQLite and PostgreSQL) and the
emulator over real AMI/FastAGI sockets: a call rings agent 1 -> the screen-pop reaches agent 1's
tabs (customer card, IVR digits) and never agent 2; a reconnecting tab gets the missed pops;
state changes become QueuePause/QueueRemove/QueueAdd in the (emulated) Asterisk; wrap-up cannot
end before the disposition."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType, web
from aiohttp.test_utils import TestClient

from callcenter.app import IVR_RECORDER, PIPELINE, SESSIONS, create_app
from callcenter.calls.model import IvrStep
from callcenter.config import Settings
from callcenter.console.notifier import SCREEN_POPS
from callcenter.customers.repository import CustomerRepository
from callcenter.db.models import DispositionRow
from callcenter.demo import emulator_config, open_moment
from callcenter.ivr.loader import load_calendar
from callcenter.pbxsim.callers import CallerModel, KeyPlan
from callcenter.pbxsim.emulator import Emulator
from callcenter.pbxsim.pbx import RealClock
from callcenter.pbxsim.queues import AgentProfile
from callcenter.web.keys import CALL_REPOSITORY, USERS, WEB_SESSIONS

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "ivr_flows"
SPEED = 50.0
ALICE, BOB = "PJSIP/1001", "PJSIP/1002"


@dataclass
class Agent:
    user_id: int
    cookie: str
    csrf: str


@dataclass
class Live:
    client: TestClient[Any, Any]
    app: web.Application
    emulators: list[Emulator]
    agents: dict[str, Agent]

    @property
    def emu(self) -> Emulator:
        return self.emulators[0]

    def headers(self, who: str) -> dict[str, str]:
        a = self.agents[who]
        return {"Cookie": f"cc_session={a.cookie}", "X-CSRF-Token": a.csrf}

    async def socket(self, who: str, query: str = "") -> ClientWebSocketResponse:
        return await self.client.ws_connect(
            "/ws/agent" + query, headers={"Cookie": f"cc_session={self.agents[who].cookie}"}
        )

    async def call(self, number: str, name: str, *keys: str) -> str:
        caller = CallerModel(
            number=number,
            name=name,
            language="zh",
            keys=[KeyPlan(k, delay=0.5) for k in keys],
            talk_limit=20.0,
        )
        summary = await self.emu.inbound_call(caller)
        pops = self.app[SCREEN_POPS]
        async with asyncio.timeout(30):  # until the agent's "finished" pop went out
            while True:
                await self.app[PIPELINE].drain()
                await pops.drain()
                if any(
                    p.kind == "finished" and p.uniqueid == summary.uniqueid
                    for p in pops.recent(ALICE)
                ):
                    return summary.uniqueid
                await asyncio.sleep(0.02)

    def member(self, queue: str, interface: str) -> Any:
        return self.emu.acd.queues[queue].members.get(interface)


@pytest.fixture
async def live(db_url: str, tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Live]:
    settings = Settings(
        database_url=db_url,
        flows_dir=FLOWS,
        recordings_dir=tmp_path / "recordings",
        agi_port=0,
        ami_secret="test-secret",
        timezone="Asia/Shanghai",
        lookup_timeout=30.0,  # the pop must carry the archive lookup however loaded the machine
    )
    start = open_moment(
        load_calendar(FLOWS / "calendar.yaml"), datetime.now(UTC), ZoneInfo("Asia/Shanghai")
    )
    clock = RealClock(speed=SPEED, start=start.timestamp())
    emulators: list[Emulator] = []

    def factory(host: str, port: int) -> Emulator:
        cfg = emulator_config(settings, agi_host=host, agi_port=port, speed=SPEED, seed=7)
        cfg.tts = False
        cfg.recordings_dir = None
        # agent 1 alone takes every queue and always answers; agent 2 is logged in elsewhere
        cfg.members = {q.name: [ALICE] for q in cfg.queues}
        cfg.agents = [
            AgentProfile(ALICE, "Alice", forced="answer", answer_delay=(1.0, 1.0)),
            AgentProfile(BOB, "Bob"),
        ]
        emu = Emulator(config=cfg, clock=clock)
        emulators.append(emu)
        return emu

    app = create_app(
        settings, emulator=factory, clock=lambda: datetime.fromtimestamp(clock.time(), UTC)
    )
    client = await aiohttp_client(app)
    agents: dict[str, Agent] = {}
    for who, iface in (("alice", ALICE), ("bob", BOB)):
        user = await app[USERS].create(
            username=who,
            password="correct horse battery",
            role="agent",
            agent_interface=iface,
            language="en",
        )
        new = await app[WEB_SESSIONS].create(user.id, ip="127.0.0.1", user_agent="test")
        agents[who] = Agent(user.id, new.cookie, new.csrf_token)
    await CustomerRepository(session_factory=app[SESSIONS]).create(
        name="张三", numbers=["13800138000"], tier="key", company="ACME 贸易"
    )
    yield Live(client=client, app=app, emulators=emulators, agents=agents)


async def frames_until(ws: ClientWebSocketResponse, pred: Any, limit: float = 30) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(limit):
        while True:
            msg = await ws.receive()
            assert msg.type is WSMsgType.TEXT, msg
            got.append(json.loads(msg.data))
            if pred(got[-1]):
                return got


def is_pop(kind: str) -> Any:
    """A pop of `kind` with the archive lookup done and the IVR steps stored (its first frame
    or a `pop.update`): the steps may be written before or after the agent's phone rings."""
    return lambda f: (
        f["type"] in ("pop", "pop.update")
        and f["pop"]["kind"] == kind
        and not f["pop"]["pending"]
        and not f["pop"]["digits_pending"]
    )


def all_popped(*kinds: str) -> Any:
    """True once `is_pop` held for each of `kinds`, in any order: a pop's `pop.update` (IVR
    steps stored late) may come after the next pop of the call."""
    seen: set[str] = set()

    def pred(frame: Any) -> bool:
        seen.update(kind for kind in kinds if is_pop(kind)(frame))
        return seen == set(kinds)

    return pred


async def test_pop_reaches_only_the_ringing_agent_with_the_customer(live: Live) -> None:
    tab1, tab2 = await live.socket("alice"), await live.socket("alice")
    bob = await live.socket("bob")
    hellos = [json.loads((await ws.receive()).data) for ws in (tab1, tab2, bob)]
    assert [h["type"] for h in hellos] == ["hello"] * 3
    assert hellos[0]["interface"] == ALICE and hellos[2]["interface"] == BOB

    uid = await live.call("+86 138 0013 8000", "ZHANG", "1", "2")  # Chinese, complaints

    for tab in (tab1, tab2):  # every open tab of the agent
        frames = await frames_until(tab, all_popped("ringing", "answered", "finished"))
        ringing = [f for f in frames if is_pop("ringing")(f)]
        pop = ringing[-1]["pop"]
        assert pop["uniqueid"] == uid and pop["interface"] == ALICE
        assert pop["customer"]["name"] == "张三" and pop["key_customer"] is True
        assert pop["queue"] == "complaints"
        assert (pop["ivr_choice"], pop["ivr_choice_label"]) == ("2", "complaints_queue")
        digits = [(d["node"], d["input"]) for d in pop["digits"]]
        assert digits == [("language", "1"), ("main", "2")]
        answered = [f for f in frames if is_pop("answered")(f)][-1]
        assert answered["pop"]["waited_seconds"] is not None
        assert answered["seq"] > ringing[-1]["seq"]

    # agent 2 got nothing of it: close its socket and read what had arrived
    await bob.close()
    leftovers = []
    async for msg in bob:
        leftovers.append(json.loads(msg.data))
    assert not [f for f in leftovers if f["type"] == "pop"]
    assert all(p.interface == ALICE for p in live.app[SCREEN_POPS].recent(ALICE))
    assert live.app[SCREEN_POPS].recent(BOB) == []
    await tab1.close()
    await tab2.close()


async def test_ivr_steps_stored_after_the_ring_still_reach_the_pop(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bad ordering, forced: the IVR session's steps are written only once the agent's
    phone has rung and its pop is out. The pop shows the menu key at once, and the stored
    digits (the language key too) follow in an update of that pop."""
    recorder = live.app[IVR_RECORDER]
    write = recorder.record_steps
    rang = asyncio.Event()
    held: list[str] = []

    async def after_the_ring(steps: Sequence[IvrStep]) -> None:
        held.append(steps[0].call_uniqueid)
        await rang.wait()
        await write(steps)

    monkeypatch.setattr(recorder, "record_steps", after_the_ring)
    repository = live.app[CALL_REPOSITORY]
    get_steps = repository.get_steps
    reads: list[str] = []

    async def counted(uniqueid: str) -> list[IvrStep]:
        reads.append(uniqueid)
        return await get_steps(uniqueid)

    monkeypatch.setattr(repository, "get_steps", counted)
    tab = await live.socket("alice")
    assert json.loads((await tab.receive()).data)["type"] == "hello"
    call = asyncio.create_task(live.call("+86 138 0013 8000", "ZHANG", "1", "2"))

    looked_up = (await frames_until(tab, lambda f: is_ringing(f) and not f["pop"]["pending"]))[-1]
    pop = looked_up["pop"]
    assert held == [pop["uniqueid"]]  # the runner's write is waiting for the ring
    assert await live.app[CALL_REPOSITORY].get_steps(pop["uniqueid"]) == []
    assert pop["customer"]["name"] == "张三"
    assert (pop["ivr_choice"], pop["ivr_choice_label"]) == ("2", "complaints_queue")
    assert [(d["node"], d["input"]) for d in pop["digits"]] == [("main", "2")]
    assert pop["digits_pending"] is True

    rang.set()
    stored = (await frames_until(tab, lambda f: is_ringing(f) and not f["pop"]["digits_pending"]))[
        -1
    ]
    assert stored["type"] == "pop.update" and stored["seq"] == looked_up["seq"]
    digits = [(d["node"], d["input"]) for d in stored["pop"]["digits"]]
    assert digits == [("language", "1"), ("main", "2")]
    assert (stored["pop"]["ivr_choice"], stored["pop"]["ivr_choice_label"]) == (
        "2",
        "complaints_queue",
    )
    assert await call == pop["uniqueid"]
    # one read at the lookup; the digits came with the recorder's bus message (no polling)
    assert reads.count(pop["uniqueid"]) == 2  # the lookup's and this test's own
    await tab.close()


def is_ringing(frame: Any) -> bool:
    return frame["type"] in ("pop", "pop.update") and frame["pop"]["kind"] == "ringing"


async def test_a_reconnecting_tab_gets_the_pops_it_missed(live: Live) -> None:
    tab = await live.socket("alice")
    hello = json.loads((await tab.receive()).data)
    await tab.close()  # the browser drops off
    uid = await live.call("13800138000", "ZHANG", "1", "1")
    # no console open: no wrap-up is enforced (it could never get its disposition)
    assert live.member("bookings", ALICE).paused is False

    again = await live.socket("alice", f"?last_seq={hello['seq']}&epoch={hello['epoch']}")
    frames = await frames_until(again, is_pop("finished"))
    assert frames[0]["type"] == "hello" and frames[0]["replayed"] >= 3
    pops = [f for f in frames if f["type"] == "pop"]  # replays carry the looked-up version
    assert [p["pop"]["kind"] for p in pops] == ["ringing", "answered", "finished"]
    assert pops[0]["pop"]["customer"]["name"] == "张三"
    assert all(p["replay"] and p["pop"]["uniqueid"] == uid for p in pops)
    assert [p["seq"] for p in pops] == list(range(hello["seq"] + 1, hello["seq"] + 4))
    await again.close()


async def test_state_goes_to_asterisk_and_wrap_up_needs_a_disposition(live: Live) -> None:
    c = live.client
    h = live.headers("alice")

    lunch = {"state": "paused", "reason": "lunch"}
    resp = await c.post("/api/v1/agent/state", json=lunch, headers=h)
    assert resp.status == 200, await resp.text()
    m = live.member("complaints", ALICE)
    assert (m.paused, m.paused_reason) == (True, "lunch")

    no_reason = await c.post("/api/v1/agent/state", json={"state": "paused"}, headers=h)
    assert no_reason.status == 422
    no_csrf = await c.post(
        "/api/v1/agent/state",
        json={"state": "available"},
        headers={"Cookie": h["Cookie"]},
    )
    assert no_csrf.status == 403
    anonymous = await c.post("/api/v1/agent/state", json={"state": "available"})
    assert anonymous.status == 401

    resp = await c.post("/api/v1/agent/state", json={"state": "available"}, headers=h)
    assert resp.status == 200
    assert live.member("complaints", ALICE).paused is False

    console = await live.socket("alice")  # the agent works in the console
    uid = await live.call("13800138000", "ZHANG", "1", "3")
    m = live.member("general", ALICE)  # the call ended: paused in wrap-up by the console
    assert (m.paused, m.paused_reason) == (True, "wrap-up")
    state = await (await c.get("/api/v1/agent/state", headers=h)).json()
    assert state["pending_dispositions"] == [uid]

    blocked = await c.post("/api/v1/agent/state", json={"state": "available"}, headers=h)
    assert blocked.status == 409
    assert (await blocked.json())["error"]["code"] == "disposition_required"
    assert live.member("general", ALICE).paused is True

    async with live.app[SESSIONS]() as session:  # what F's disposition API stores
        session.add(
            DispositionRow(
                call_uniqueid=uid,
                user_id=live.agents["alice"].user_id,
                category="enquiry",
                outcome="resolved",
            )
        )
        await session.commit()
    resp = await c.post("/api/v1/agent/state", json={"state": "available"}, headers=h)
    assert resp.status == 200, await resp.text()
    assert live.member("general", ALICE).paused is False

    # agent 1 is a static member (queues.conf): logging out pauses it, QueueRemove would fail
    out = await c.post("/api/v1/agent/state", json={"state": "logged_out"}, headers=h)
    assert out.status == 200, await out.text()
    m = live.member("general", ALICE)
    assert (m.paused, m.paused_reason) == (True, "logged-out")
    back = await c.post("/api/v1/agent/state", json={"state": "available"}, headers=h)
    assert back.status == 200
    assert live.member("general", ALICE).paused is False
    await console.close()


async def test_an_agent_without_membership_is_added_and_removed(live: Live) -> None:
    c, h = live.client, live.headers("bob")
    assert live.member("general", BOB) is None
    resp = await c.post("/api/v1/agent/state", json={"state": "available"}, headers=h)
    assert resp.status == 200, await resp.text()
    m = live.member("general", BOB)  # QueueAdd into the default queue
    assert m is not None and m.paused is False and m.membership == "dynamic"
    async with asyncio.timeout(10):  # the tracker learns it from QueueMemberAdded
        while True:
            state = await (await c.get("/api/v1/agent/state", headers=h)).json()
            if state["queues"]:
                break
            await asyncio.sleep(0.02)
    out = await c.post("/api/v1/agent/state", json={"state": "logged_out"}, headers=h)
    assert out.status == 200, await out.text()
    assert live.member("general", BOB) is None  # QueueRemove


async def test_console_page_renders_in_the_users_language(live: Live) -> None:
    resp = await live.client.get("/console", headers=live.headers("alice"))
    assert resp.status == 200
    body = await resp.text()
    assert '<html lang="en">' in body and "Agent console" in body
    anonymous = await live.client.get("/console", allow_redirects=False)
    assert anonymous.status in (302, 303) and "/login" in anonymous.headers["Location"]


async def test_socket_refuses_strangers_and_other_sites(live: Live) -> None:
    c = live.client
    anonymous = await c.get("/ws/agent", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert anonymous.status == 401
    cross = await c.get(
        "/ws/agent",
        headers={
            "Cookie": f"cc_session={live.agents['alice'].cookie}",
            "Origin": "http://evil.example",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert cross.status == 403

    boss = await live.app[USERS].create(
        username="boss", password="correct horse battery", role="supervisor"
    )
    new = await live.app[WEB_SESSIONS].create(boss.id, ip="127.0.0.1", user_agent="test")
    ws = await c.ws_connect("/ws/agent", headers={"Cookie": f"cc_session={new.cookie}"})
    hello = json.loads((await ws.receive()).data)
    assert hello["type"] == "hello" and hello["seq"] == 0
    state = await c.post(
        "/api/v1/agent/state",
        json={"state": "available"},
        headers={"Cookie": f"cc_session={new.cookie}", "X-CSRF-Token": new.csrf_token},
    )
    assert state.status == 409
    assert (await state.json())["error"]["code"] == "no_agent_interface"
    await ws.close()

    qa = await live.app[USERS].create(username="qa", password="correct horse battery", role="qa")
    qa_session = await live.app[WEB_SESSIONS].create(qa.id, ip="127.0.0.1", user_agent="test")
    page = await c.get("/console", headers={"Cookie": f"cc_session={qa_session.cookie}"})
    assert page.status == 403  # QA reviewers have no console
