"""CallNotifier: tracker effects -> bus channels and JSON payloads (screen-pop included)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from ami_support import RecordingBus

from callcenter.bus.keys import AGENTS, CALLS
from callcenter.calls.model import CallRecord, Transfer
from callcenter.calls.notifier import CallNotifier, call_record_to_dict, effect_message
from callcenter.calls.service import (
    AgentAnswered,
    AgentFinished,
    AgentNoAnswer,
    AgentRinging,
    CallEnded,
    CallStarted,
    CallUpdated,
)

T0 = datetime(2024, 5, 14, 10, 15, 2, tzinfo=UTC)


RECORD = CallRecord(
    uniqueid="1715681702.12",
    linkedid="1715681702.12",
    channel="PJSIP/trunk-00000000",
    started_at=T0,
    caller_number="13800138000",
    caller_name="张三",
    dialed_number="5551000",
    ivr_path=("main", "2"),
    ivr_choice="2",
    queue="support",
    queue_priority=5,
    queue_joined_at=T0 + timedelta(seconds=21),
    transfers=(Transfer(at=T0 + timedelta(seconds=90), kind="blind", target="600"),),
    variables={"CALLCENTER_DID": "5551000"},
    queues=("support",),
)


def test_record_dict_is_json_and_complete() -> None:
    data = call_record_to_dict(RECORD)
    assert set(data) == set(CallRecord.__dataclass_fields__)
    assert data["started_at"] == "2024-05-14T10:15:02+00:00"
    assert data["ended_at"] is None
    assert data["ivr_path"] == ["main", "2"]
    assert data["transfers"] == [
        {
            "at": "2024-05-14T10:16:32+00:00",
            "kind": "blind",
            "target": "600",
            "source": "",
            "answered_at": None,
        }
    ]
    assert json.loads(json.dumps(data, ensure_ascii=False))["caller_name"] == "张三"


def test_lifecycle_effects_go_to_the_calls_channel() -> None:
    assert effect_message(CallStarted(RECORD)) == (
        CALLS,
        {"type": "call.started", "change": None, "call": call_record_to_dict(RECORD)},
    )
    channel, payload = effect_message(CallUpdated(RECORD, "queued"))
    assert (channel, payload["type"], payload["change"]) == (CALLS, "call.updated", "queued")
    channel, payload = effect_message(CallEnded(RECORD))
    assert (channel, payload["type"]) == (CALLS, "call.ended")


def test_screen_pop_payloads() -> None:
    leg = ("support", "PJSIP/1001", "Alice Agent", "PJSIP/1001-00000001", "1715681731.13")
    channel, payload = effect_message(AgentRinging(RECORD, *leg, hold_seconds=10.0))
    assert channel == AGENTS
    assert payload == {
        "type": "agent.ringing",
        "interface": "PJSIP/1001",
        "member_name": "Alice Agent",
        "queue": "support",
        "agent_channel": "PJSIP/1001-00000001",
        "agent_uniqueid": "1715681731.13",
        "uniqueid": "1715681702.12",
        "linkedid": "1715681702.12",
        "caller_number": "13800138000",
        "caller_name": "张三",
        "dialed_number": "5551000",
        "ivr_path": ["main", "2"],
        "ivr_choice": "2",
        "hold_seconds": 10.0,
        "ring_seconds": None,
        "talk_seconds": None,
        "reason": None,
        "call": call_record_to_dict(RECORD),
    }
    _, answered = effect_message(AgentAnswered(RECORD, *leg, hold_seconds=8.0, ring_seconds=7.0))
    assert (answered["type"], answered["hold_seconds"], answered["ring_seconds"]) == (
        "agent.answered",
        8.0,
        7.0,
    )
    _, missed = effect_message(AgentNoAnswer(RECORD, *leg, ring_seconds=15.0))
    assert (missed["type"], missed["ring_seconds"]) == ("agent.no_answer", 15.0)
    _, done = effect_message(AgentFinished(RECORD, *leg, talk_seconds=147.0, reason="caller"))
    assert (done["type"], done["talk_seconds"], done["reason"]) == (
        "agent.finished",
        147.0,
        "caller",
    )


async def test_notifier_publishes_in_order() -> None:
    bus = RecordingBus()
    notifier = CallNotifier(bus=bus)
    leg = ("support", "PJSIP/1001", "Alice Agent", "PJSIP/1001-00000001", "1715681731.13")
    await notifier.publish(
        [CallStarted(RECORD), AgentRinging(RECORD, *leg, hold_seconds=1.0), CallEnded(RECORD)]
    )
    assert [(c, p["type"]) for c, p in bus.published] == [
        (CALLS, "call.started"),
        (AGENTS, "agent.ringing"),
        (CALLS, "call.ended"),
    ]
    await notifier.publish([])
    assert len(bus.published) == 3
