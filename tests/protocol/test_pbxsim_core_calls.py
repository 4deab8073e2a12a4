"""Call flows of the emulator core: transfer, hang-ups while talking, strategies, pause,
recordings and traffic. Events are collected from the core's publish sink."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from callcenter.pbxsim.callers import CallerModel, KeyPlan
from callcenter.pbxsim.emulator import Emulator, EmulatorConfig
from callcenter.pbxsim.pbx import VirtualClock
from callcenter.pbxsim.queues import AgentProfile, QueueConfig
from callcenter.pbxsim.traffic import run_calls


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, str]]] = []
        self.seen = asyncio.Event()

    def __call__(self, name: str, klass: str, fields: Sequence[tuple[str, str]]) -> None:
        self.items.append((name, dict(fields)))
        self.seen.set()

    def names(self) -> list[str]:
        return [n for n, _ in self.items]

    def of(self, name: str) -> list[dict[str, str]]:
        return [f for n, f in self.items if n == name]

    async def wait_for(self, name: str) -> dict[str, str]:
        while True:
            hits = self.of(name)
            if hits:
                return hits[-1]
            self.seen.clear()
            await self.seen.wait()


async def ivr_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Minimal hotline: menu key 1 -> support, anything else -> general."""
    try:
        await reader.readuntil(b"\n\n")
        writer.write(b"GET DATA custom/main-menu 3000 1\n")
        reply = await reader.readline()
        queue = b"support" if reply.startswith(b"200 result=1") else b"general"
        writer.write(b"SET VARIABLE IVR_QUEUE " + queue + b"\n")
        await reader.readline()
    finally:
        writer.close()


@pytest.fixture
async def agi_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(ivr_handler, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def make(port: int, events: Events, agents: list[AgentProfile], **kw: object) -> Emulator:
    cfg = EmulatorConfig(
        agi_port=port,
        queues=kw.pop("queues", [QueueConfig("support"), QueueConfig("general")]),  # type: ignore[arg-type]
        agents=agents,
        **kw,  # type: ignore[arg-type]
    )
    return Emulator(config=cfg, clock=VirtualClock(), publish=events)


async def test_agent_hangs_up_reason_agent(agi_port: int) -> None:
    events = Events()
    a = AgentProfile(
        "PJSIP/1001", "Alice", answer_delay=(3, 3), talk_time=(60, 60), forced="answer"
    )
    emu = make(agi_port, events, [a])
    s = await emu.inbound_call(CallerModel(number="13800138000", name="张三", keys=["1"]))
    await emu.stop()
    assert s.outcome == "answered" and s.agent == "PJSIP/1001" and s.ivr_queue == "support"
    done = events.of("AgentComplete")[0]
    assert done["Reason"] == "agent" and done["TalkTime"] == "60"
    assert done["CallerIDName"] == "张三"
    hr = events.of("HangupRequest")[0]
    assert hr["Channel"].startswith("PJSIP/1001-")
    assert events.names()[-1] == "Cdr"
    status = [m for m in events.of("QueueMemberStatus") if m["Queue"] == "support"]
    assert status[-1]["CallsTaken"] == "1" and status[-1]["Status"] == "1"


async def test_ring_no_answer_moves_to_next_member_rrmemory(agi_port: int) -> None:
    events = Events()
    agents = [
        AgentProfile("PJSIP/1001", "Alice", forced="noanswer"),
        AgentProfile("PJSIP/1002", "Bob", answer_delay=(2, 2), talk_time=(30, 30), forced="answer"),
    ]
    emu = make(
        agi_port,
        events,
        agents,
        queues=[QueueConfig("support", strategy="rrmemory", member_timeout=10.0, retry=2.0)],
    )
    s = await emu.inbound_call(CallerModel(number="1", keys=["1"]))
    await emu.stop()
    rna = events.of("AgentRingNoAnswer")
    assert [r["Interface"] for r in rna] == ["PJSIP/1001"] and rna[0]["RingTime"] == "10000"
    assert [d["DialStatus"] for d in events.of("DialEnd")] == ["NOANSWER", "ANSWER"]
    assert s.agent == "PJSIP/1002"
    assert events.of("AgentConnect")[0]["HoldTime"] == "15"  # 1 + 10 + 2 retry + 2 ring


async def test_paused_member_is_not_rung_until_unpaused(agi_port: int) -> None:
    events = Events()
    a = AgentProfile("PJSIP/1001", "Alice", answer_delay=(1, 1), talk_time=(5, 5), forced="answer")
    emu = make(agi_port, events, [a])
    reply = emu.acd.action_queue_pause({"Interface": "PJSIP/1001", "Paused": "true", "Reason": "x"})
    assert reply[0][-1] == ("Message", "Interface paused successfully")
    task = emu.place_call(CallerModel(number="1", keys=["1"]))
    await events.wait_for("QueueCallerJoin")
    clock = emu.clock
    assert isinstance(clock, VirtualClock)
    clock.freeze(at=clock.time() + 60)  # a minute in the queue, then time stands still
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert "AgentCalled" not in events.names()
    emu.acd.action_queue_pause({"Interface": "PJSIP/1001", "Paused": "false"})
    clock.thaw()
    s = await task
    await emu.stop()
    assert s.outcome == "answered"
    assert [p["Paused"] for p in events.of("QueueMemberPause")] == ["1", "1", "0", "0"]


async def test_blind_transfer_by_redirect_of_caller_leg(agi_port: int) -> None:
    events = Events()
    agents = [
        AgentProfile(
            "PJSIP/1001", "Alice", answer_delay=(1, 1), talk_time=(500, 500), forced="answer"
        ),
        AgentProfile("PJSIP/1002", "Bob", answer_delay=(1, 1), talk_time=(20, 20), forced="answer"),
    ]
    emu = make(
        agi_port,
        events,
        agents,
        members={"support": ["PJSIP/1001"], "general": ["PJSIP/1002"]},
    )
    task = emu.place_call(CallerModel(number="1", keys=["1"]))
    connect = await events.wait_for("AgentConnect")
    reply = emu.acd.action_redirect(
        {"Channel": connect["Channel"], "Context": "queues", "Exten": "general", "Priority": "1"}
    )
    assert reply[0][-1] == ("Message", "Redirect successful")
    s = await task
    await emu.stop()
    completes = events.of("AgentComplete")
    assert [c["Reason"] for c in completes] == ["transfer", "agent"]
    assert [c["Interface"] for c in completes] == ["PJSIP/1001", "PJSIP/1002"]
    assert s.outcome == "answered" and s.agent == "PJSIP/1002"
    joins = [j["Queue"] for j in events.of("QueueCallerJoin")]
    assert joins == ["support", "general"]


async def test_ami_hangup_of_caller_while_talking(agi_port: int) -> None:
    events = Events()
    a = AgentProfile(
        "PJSIP/1001", "Alice", answer_delay=(1, 1), talk_time=(900, 900), forced="answer"
    )
    emu = make(agi_port, events, [a])
    task = emu.place_call(CallerModel(number="1", keys=["1"]))
    connect = await events.wait_for("AgentConnect")
    reply = emu.acd.action_hangup({"Channel": connect["Channel"]})
    assert reply[0][-1] == ("Message", "Channel Hungup")
    await task
    await emu.stop()
    assert events.of("SoftHangupRequest")[0]["Channel"] == connect["Channel"]
    assert events.of("AgentComplete")[0]["Reason"] == "caller"
    assert emu.acd.action_hangup({"Channel": "PJSIP/none-1"})[0][-1] == (
        "Message",
        "No such channel",
    )


async def test_recording_is_stereo_8k_wav(agi_port: int, tmp_path: Path) -> None:
    events = Events()
    a = AgentProfile("PJSIP/1001", "Alice", answer_delay=(1, 1), talk_time=(6, 6), forced="answer")
    emu = make(agi_port, events, [a], recordings_dir=tmp_path)
    caller = CallerModel(number="1", keys=["1"], greeting="你好", language="zh")
    s = await emu.inbound_call(caller)
    await emu.stop()
    assert s.recording is not None
    path = tmp_path / f"{s.uniqueid}.wav"
    var = next(f for f in events.of("VarSet") if f["Variable"] == "MIXMONITOR_FILENAME")
    assert var["Value"] == str(path.resolve())
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = w.readframes(w.getnframes())
        assert w.getnframes() == 6 * 8000
    left = any(frames[i : i + 2] != b"\0\0" for i in range(0, len(frames), 4))
    right = any(frames[i : i + 2] != b"\0\0" for i in range(2, len(frames), 4))
    assert left and right


async def test_run_calls_summary(agi_port: int) -> None:
    events = Events()
    agents = [
        AgentProfile(f"PJSIP/10{i:02d}", f"Agent {i}", answer_delay=(1, 4), talk_time=(10, 60))
        for i in range(1, 4)
    ]
    emu = make(agi_port, events, agents)
    summary = await run_calls(emu, 12, seed=7, concurrency=4)
    await emu.stop()
    assert summary.calls == 12 and summary.errors == 0
    assert sum(summary.outcomes.values()) == 12
    assert len(events.of("Newchannel")) >= 12
    again = Events()
    emu2 = make(agi_port, again, agents)
    summary2 = await run_calls(emu2, 12, seed=7, concurrency=4)
    await emu2.stop()
    assert summary2.outcomes == summary.outcomes
    assert KeyPlan("1").times() == [(1.0, "1")]


async def test_queue_timeout_then_dialplan_continues(agi_port: int) -> None:
    events = Events()
    a = AgentProfile("PJSIP/1001", "Alice", forced="noanswer")
    emu = make(agi_port, events, [a], queues=[QueueConfig("support", member_timeout=20.0)])
    s = await emu.inbound_call(CallerModel(number="1", keys=["1"]))
    await emu.stop()
    assert s.outcome == "timeout"
    queuestatus = [f["Value"] for f in events.of("VarSet") if f["Variable"] == "QUEUESTATUS"]
    assert queuestatus == ["TIMEOUT"]
    assert events.of("Newexten")[-1]["Application"] == "Hangup"
    assert events.of("QueueCallerLeave")[0]["Count"] == "0"


async def test_queue_add_makes_a_new_member_ring(agi_port: int) -> None:
    events = Events()
    a = AgentProfile("PJSIP/1001", "Alice", answer_delay=(1, 1), talk_time=(5, 5), forced="answer")
    emu = make(agi_port, events, [a], members={"support": [], "general": []})
    reply = emu.acd.action_queue_add(
        {"Queue": "support", "Interface": "PJSIP/1001", "MemberName": "Alice"}
    )
    assert reply[0][-1] == ("Message", "Added interface to queue")
    assert events.of("QueueMemberAdded")[0]["Membership"] == "dynamic"
    s = await emu.inbound_call(CallerModel(number="1", keys=["1"]))
    removed = emu.acd.action_queue_remove({"Queue": "support", "Interface": "PJSIP/1001"})
    await emu.stop()
    assert s.outcome == "answered" and s.agent == "PJSIP/1001"
    assert removed[0][-1] == ("Message", "Removed interface from queue")
