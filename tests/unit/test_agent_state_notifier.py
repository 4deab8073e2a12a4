"""AgentNotifier: agent/queue effects -> bus channels and JSON payloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ami_support import RecordingBus

from callcenter.agents.model import AgentState, QueueMembership, QueueStats, WaitingCaller
from callcenter.agents.notifier import (
    AgentNotifier,
    agent_state_to_dict,
    effect_message,
    queue_stats_to_dict,
)
from callcenter.agents.service import AgentStateChanged, QueueStatsChanged
from callcenter.bus.keys import AGENTS, QUEUES

T0 = datetime(2024, 5, 14, 10, 15, 2, tzinfo=UTC)


AGENT = AgentState(
    interface="PJSIP/1001",
    name="王芳",
    status="wrap_up",
    since=T0,
    device_status=1,
    queues=(QueueMembership(queue="support", calls_taken=13, wrapup_time=30),),
    wrap_up_until=T0 + timedelta(seconds=30),
    calls_taken=13,
)
STATS = QueueStats(
    queue="support",
    waiting=1,
    longest_wait_seconds=41.0,
    callers=(WaitingCaller("1.1", "PJSIP/trunk-1", "15550001111", "", T0, 1),),
    members={"available": 1, "wrap_up": 1},
    strategy="ringall",
)


def test_agent_state_payload() -> None:
    channel, payload = effect_message(AgentStateChanged(AGENT, "on_call"))
    assert channel == AGENTS
    assert payload == {
        "type": "agent.state",
        "previous": "on_call",
        "agent": agent_state_to_dict(AGENT),
    }
    agent = payload["agent"]
    assert (agent["name"], agent["status"], agent["wrap_up_until"]) == (
        "王芳",
        "wrap_up",
        "2024-05-14T10:15:32+00:00",
    )
    assert agent["queues"][0]["queue"] == "support"
    assert set(agent) == set(AgentState.__dataclass_fields__)


def test_queue_stats_payload() -> None:
    channel, payload = effect_message(QueueStatsChanged(STATS))
    assert channel == QUEUES
    assert payload["type"] == "queue.stats"
    q = payload["queue"]
    assert q == queue_stats_to_dict(STATS)
    assert (q["waiting"], q["longest_wait_seconds"], q["members"]) == (
        1,
        41.0,
        {"available": 1, "wrap_up": 1},
    )
    assert q["callers"][0]["joined_at"] == "2024-05-14T10:15:02+00:00"
    assert set(q) == set(QueueStats.__dataclass_fields__)


async def test_notifier_publishes_each_effect() -> None:
    bus = RecordingBus()
    await AgentNotifier(bus=bus).publish([AgentStateChanged(AGENT, None), QueueStatsChanged(STATS)])
    assert [(c, p["type"]) for c, p in bus.published] == [
        (AGENTS, "agent.state"),
        (QUEUES, "queue.stats"),
    ]
