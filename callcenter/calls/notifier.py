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
from datetime import datetime, timedelta
from functools import lru_cache
from json.encoder import encode_basestring
from typing import Any

from callcenter.bus.base import Bus, Payload
from callcenter.bus.keys import AGENTS, CALLS
from callcenter.bus.memory import encode_payload
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

# JSON string literal, non-ASCII kept as is (json.dumps(..., ensure_ascii=False) does the same)
_jstr = encode_basestring


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
            {"at": _iso(t.at), "kind": t.kind, "target": t.target} for t in record.transfers
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


def _screen_pop(effect: AgentLegEffect) -> Payload:
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
        "call": call_record_to_dict(r),
    }


def effect_message(effect: CallEffect) -> tuple[str, Payload]:
    """The (channel, payload) an effect is published as."""
    if isinstance(effect, CallStarted):
        return CALLS, {
            "type": "call.started",
            "change": None,
            "call": call_record_to_dict(effect.record),
        }
    if isinstance(effect, CallUpdated):
        return CALLS, {
            "type": "call.updated",
            "change": effect.change,
            "call": call_record_to_dict(effect.record),
        }
    if isinstance(effect, CallEnded):
        return CALLS, {
            "type": "call.ended",
            "change": None,
            "call": call_record_to_dict(effect.record),
        }
    return AGENTS, _screen_pop(effect)


# -- JSON text straight from the records -------------------------------------------------------
# Every call effect carries the whole call record, so encoding it is most of a publish. These
# build the same JSON as json.dumps(effect_message(effect)[1]) without the intermediate dicts;
# anything unexpected (a value of the wrong type, NaN) falls back to that exact path, so the
# result and the errors stay json.dumps's.


def _jopt(value: str | None) -> str:
    return "null" if value is None else _jstr(value)


def _jnum(value: float | None) -> str:
    if value is None:
        return "null"
    kind = type(value)
    if kind is float and value - value == 0.0:  # finite (NaN and infinities are not JSON)
        return float.__repr__(value)
    if kind is int:
        return int.__repr__(value)
    raise ValueError(f"not a plain JSON number: {value!r}")


@lru_cache(maxsize=4096)
def _iso_text(value: datetime, offset: timedelta | None) -> str:
    # A call's times repeat in each of its records and isoformat() was a large share of the
    # text. The offset is part of the key: 10:00+00:00 == 18:00+08:00, but they print apart.
    return '"' + value.isoformat() + '"'


def _jtime(value: datetime | None) -> str:
    return "null" if value is None else _iso_text(value, value.utcoffset())


def _jlist(values: Iterable[str]) -> str:
    return "[" + ",".join(map(_jstr, values)) + "]"


def _jbool(value: bool) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise ValueError(f"not a bool: {value!r}")


def _call_json(r: CallRecord) -> str:
    transfers = ",".join(
        '{"at":' + _jtime(t.at) + ',"kind":' + _jstr(t.kind) + ',"target":' + _jstr(t.target) + "}"
        for t in r.transfers
    )
    variables = ",".join(_jstr(k) + ":" + _jstr(v) for k, v in r.variables.items())
    return "".join(
        (
            '{"uniqueid":', _jstr(r.uniqueid),
            ',"linkedid":', _jstr(r.linkedid),
            ',"channel":', _jstr(r.channel),
            ',"started_at":', _jtime(r.started_at),
            ',"caller_number":', _jstr(r.caller_number),
            ',"caller_name":', _jstr(r.caller_name),
            ',"dialed_number":', _jstr(r.dialed_number),
            ',"direction":', _jstr(r.direction),
            ',"ivr_path":', _jlist(r.ivr_path),
            ',"ivr_choice":', _jopt(r.ivr_choice),
            ',"queue":', _jopt(r.queue),
            ',"queue_priority":', _jnum(r.queue_priority),
            ',"queue_joined_at":', _jtime(r.queue_joined_at),
            ',"queue_left_at":', _jtime(r.queue_left_at),
            ',"agent":', _jopt(r.agent),
            ',"agent_interface":', _jopt(r.agent_interface),
            ',"answered_at":', _jtime(r.answered_at),
            ',"ended_at":', _jtime(r.ended_at),
            ',"wait_seconds":', _jnum(r.wait_seconds),
            ',"talk_seconds":', _jnum(r.talk_seconds),
            ',"abandoned":', _jbool(r.abandoned),
            ',"abandon_stage":', _jopt(r.abandon_stage),
            ',"abandon_after_seconds":', _jnum(r.abandon_after_seconds),
            ',"transfers":[', transfers,
            '],"hangup_cause":', _jnum(r.hangup_cause),
            ',"hangup_cause_text":', _jopt(r.hangup_cause_text),
            ',"recording_file":', _jopt(r.recording_file),
            ',"end_reason":', _jopt(r.end_reason),
            ',"variables":{', variables,
            '},"queues":', _jlist(r.queues),
            ',"agents":', _jlist(r.agents),
            ',"adopted":', _jbool(r.adopted),
            "}",
        )
    )  # fmt: skip


_LIFECYCLE: dict[type, str] = {
    CallStarted: '{"type":"call.started","change":null,"call":',
    CallEnded: '{"type":"call.ended","change":null,"call":',
}


def _fast_json(effect: CallEffect, call: str) -> str:
    """`call` is _call_json(effect.record)."""
    kind = type(effect)
    prefix = _LIFECYCLE.get(kind)
    if prefix is not None:
        return prefix + call + "}"
    if kind is CallUpdated:
        change = _jstr(effect.change)  # type: ignore[union-attr]
        return '{"type":"call.updated","change":' + change + ',"call":' + call + "}"
    assert isinstance(effect, AgentLegEffect)
    r = effect.record
    return "".join(
        (
            '{"type":', _jstr(_AGENT_TYPES[kind]),
            ',"interface":', _jstr(effect.interface),
            ',"member_name":', _jstr(effect.member_name),
            ',"queue":', _jstr(effect.queue),
            ',"agent_channel":', _jstr(effect.agent_channel),
            ',"agent_uniqueid":', _jstr(effect.agent_uniqueid),
            ',"uniqueid":', _jstr(r.uniqueid),
            ',"linkedid":', _jstr(r.linkedid),
            ',"caller_number":', _jstr(r.caller_number),
            ',"caller_name":', _jstr(r.caller_name),
            ',"dialed_number":', _jstr(r.dialed_number),
            ',"ivr_path":', _jlist(r.ivr_path),
            ',"ivr_choice":', _jopt(r.ivr_choice),
            ',"hold_seconds":', _jnum(getattr(effect, "hold_seconds", None)),
            ',"ring_seconds":', _jnum(getattr(effect, "ring_seconds", None)),
            ',"talk_seconds":', _jnum(getattr(effect, "talk_seconds", None)),
            ',"reason":', _jopt(getattr(effect, "reason", None)),
            ',"call":', call,
            "}",
        )
    )  # fmt: skip


def effect_json(effect: CallEffect) -> tuple[str, str]:
    """The (channel, JSON text) an effect is published as: the text of effect_message's payload
    (json.dumps with ensure_ascii=False, compact separators, allow_nan=False)."""
    return _effect_json(effect, None)


def _effect_json(effect: CallEffect, call: str | None) -> tuple[str, str]:
    channel = AGENTS if isinstance(effect, AgentLegEffect) else CALLS
    try:
        return channel, _fast_json(effect, call or _call_json(effect.record))
    except (TypeError, ValueError, AttributeError, KeyError):
        _, payload = effect_message(effect)  # the slow path raises json's own error, if any
        return channel, encode_payload(payload)


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
            record: CallRecord | None = None
            call: str | None = None
            for effect in effects:
                if effect.record is not record:  # effects of one event often share a record
                    record = effect.record
                    try:
                        call = _call_json(record)
                    except (TypeError, ValueError, AttributeError, KeyError):
                        call = None  # _effect_json takes the json.dumps way and its errors
                await publish_json(*_effect_json(effect, call))
            return
        for effect in effects:
            channel, payload = effect_message(effect)
            await self._bus.publish(channel, payload)
