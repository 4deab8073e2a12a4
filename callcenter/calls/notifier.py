"""Publishes call lifecycle effects on the bus as JSON-able dicts.

Channels and payloads (the contract with subscribers: web fan-out, agent console):

* `calls` (keys.CALLS): `{"type": "call.started" | "call.updated" | "call.ended",
  "change": <CallChange or null>, "call": <call_record_to_dict(record)>}`
* `agents` (keys.AGENTS), screen-pop for one agent: `{"type": "agent.ringing" |
  "agent.answered" | "agent.no_answer" | "agent.finished", "interface", "member_name",
  "queue", "agent_channel", "agent_uniqueid", "uniqueid", "linkedid", "caller_number",
  "caller_name", "dialed_number", "ivr_path", "ivr_choice", "hold_seconds", "ring_seconds",
  "talk_seconds", "reason", "call": <call_record_to_dict(record)>}` (absent values are null).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

from callcenter.bus.base import Bus, Payload
from callcenter.bus.keys import AGENTS, CALLS
from callcenter.bus.memory import encode_payload, encode_records
from callcenter.calls.model import CallRecord
from callcenter.calls.service import (
    AgentAnswered,
    AgentFinished,
    AgentLegEffect,
    AgentNoAnswer,
    AgentRinging,
    CallEffect,
    CallEnded,
    CallStarted,
    CallUpdated,
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def call_record_to_dict(record: CallRecord) -> dict[str, Any]:
    """A CallRecord as JSON-able data: datetimes ISO 8601, tuples as lists."""
    return {
        "uniqueid": record.uniqueid,
        "linkedid": record.linkedid,
        "channel": record.channel,
        "started_at": _iso(record.started_at),
        "caller_number": record.caller_number,
        "caller_name": record.caller_name,
        "dialed_number": record.dialed_number,
        "direction": record.direction,
        "ivr_path": list(record.ivr_path),
        "ivr_choice": record.ivr_choice,
        "queue": record.queue,
        "queue_priority": record.queue_priority,
        "queue_joined_at": _iso(record.queue_joined_at),
        "queue_left_at": _iso(record.queue_left_at),
        "agent": record.agent,
        "agent_interface": record.agent_interface,
        "answered_at": _iso(record.answered_at),
        "ended_at": _iso(record.ended_at),
        "wait_seconds": record.wait_seconds,
        "talk_seconds": record.talk_seconds,
        "abandoned": record.abandoned,
        "abandon_stage": record.abandon_stage,
        "abandon_after_seconds": record.abandon_after_seconds,
        "transfers": [
            {
                "at": _iso(t.at),
                "kind": t.kind,
                "target": t.target,
                "source": t.source,
                "answered_at": _iso(t.answered_at),
            }
            for t in record.transfers
        ],
        "hangup_cause": record.hangup_cause,
        "hangup_cause_text": record.hangup_cause_text,
        "recording_file": record.recording_file,
        "end_reason": record.end_reason,
        "variables": dict(record.variables),
        "queues": list(record.queues),
        "agents": list(record.agents),
        "adopted": record.adopted,
    }


_AGENT_TYPES: dict[type, str] = {
    AgentRinging: "agent.ringing",
    AgentAnswered: "agent.answered",
    AgentNoAnswer: "agent.no_answer",
    AgentFinished: "agent.finished",
}


def _screen_pop(effect: AgentLegEffect, call: object) -> dict[str, Any]:
    r = effect.record
    return {
        "type": _AGENT_TYPES[type(effect)],
        "interface": effect.interface,
        "member_name": effect.member_name,
        "queue": effect.queue,
        "agent_channel": effect.agent_channel,
        "agent_uniqueid": effect.agent_uniqueid,
        "uniqueid": r.uniqueid,
        "linkedid": r.linkedid,
        "caller_number": r.caller_number,
        "caller_name": r.caller_name,
        "dialed_number": r.dialed_number,
        "ivr_path": list(r.ivr_path),
        "ivr_choice": r.ivr_choice,
        "hold_seconds": getattr(effect, "hold_seconds", None),
        "ring_seconds": getattr(effect, "ring_seconds", None),
        "talk_seconds": getattr(effect, "talk_seconds", None),
        "reason": getattr(effect, "reason", None),
        "call": call,
    }


def _message(effect: CallEffect, call: object) -> tuple[str, dict[str, Any]]:
    """The (channel, message) of `effect`, `call` standing for its record."""
    if isinstance(effect, CallStarted):
        return CALLS, {"type": "call.started", "change": None, "call": call}
    if isinstance(effect, CallUpdated):
        return CALLS, {"type": "call.updated", "change": effect.change, "call": call}
    if isinstance(effect, CallEnded):
        return CALLS, {"type": "call.ended", "change": None, "call": call}
    return AGENTS, _screen_pop(effect, call)


def effect_message(effect: CallEffect) -> tuple[str, Payload]:
    """The (channel, payload) an effect is published as."""
    return _message(effect, call_record_to_dict(effect.record))


def effect_json(effect: CallEffect) -> tuple[str, str]:
    """The (channel, JSON text) an effect is published as: the JSON document of
    effect_message's payload (json.dumps's errors for what JSON cannot carry).

    Every call effect carries the whole call record, so encoding it is most of a publish: the
    record goes to the encoder as it is, without the intermediate dicts (`encode_records`)."""
    r = effect.record
    channel, message = _message(effect, r)
    text = encode_records(
        message,
        r.wait_seconds,
        r.talk_seconds,
        r.abandon_after_seconds,
        getattr(effect, "hold_seconds", None),
        getattr(effect, "ring_seconds", None),
        getattr(effect, "talk_seconds", None),
    )
    if text is None:
        return channel, encode_payload(effect_message(effect)[1])  # json's own error, if any
    return channel, text


class CallNotifier:
    """Publishes CallTracker effects. The bus never raises (it logs and drops when down).

    A bus with `publish_json(channel, text)` (MemoryBus) gets the JSON text built directly
    from the records; any other bus gets effect_message's payload dicts."""

    def __init__(self, *, bus: Bus) -> None:
        self._bus = bus
        self._publish_json: Callable[[str, str], Awaitable[None]] | None = getattr(
            bus, "publish_json", None
        )

    async def publish(self, effects: Iterable[CallEffect]) -> None:
        publish_json = self._publish_json
        if publish_json is not None:
            for effect in effects:
                await publish_json(*effect_json(effect))
            return
        for effect in effects:
            channel, payload = effect_message(effect)
            await self._bus.publish(channel, payload)
