"""AgentNotifier: agent/queue effects -> bus channels and JSON payloads."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from ami_support import RecordingBus

from callcenter.agents.model import AgentState, QueueMembership, QueueStats, WaitingCaller
from callcenter.agents.notifier import (
    AgentNotifier,
    agent_state_to_dict,
    effect_json,
    effect_message,
    queue_stats_to_dict,
)
from callcenter.agents.service import AgentStateChanged, QueueStatsChanged
from callcenter.bus.keys import AGENTS, QUEUES
from callcenter.bus.memory import MemoryBus, encode_payload

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


def _document(text: str) -> object:
    return json.loads(text, object_pairs_hook=list)  # objects as pair lists: key order counts


@pytest.mark.parametrize(
    "effect",
    [
        AgentStateChanged(AGENT, "on_call"),
        AgentStateChanged(replace(AGENT, wrap_up_until=None, paused_reason="午休"), None),
        QueueStatsChanged(STATS),
        QueueStatsChanged(replace(STATS, callers=(), service_level_perf=87.5)),
    ],
)
def test_json_text_is_the_payload_document(effect: AgentStateChanged | QueueStatsChanged) -> None:
    channel, payload = effect_message(effect)
    got_channel, text = effect_json(effect)
    assert got_channel == channel
    assert _document(text) == _document(encode_payload(payload))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_queue_figures_fail_like_json(bad: float) -> None:
    with pytest.raises(ValueError):
        effect_json(QueueStatsChanged(replace(STATS, longest_wait_seconds=bad)))


async def test_memory_bus_subscribers_get_the_payload_dicts() -> None:
    bus = MemoryBus()
    effects = [AgentStateChanged(AGENT, None), QueueStatsChanged(STATS)]
    async with bus.subscribe(AGENTS, QUEUES) as messages:
        await AgentNotifier(bus=bus).publish(effects)
        got = [await anext(messages), await anext(messages)]
    assert got == [effect_message(e) for e in effects]
