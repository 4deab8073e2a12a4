"""Publishes agent and queue state effects on the bus as JSON-able dicts.

Channels and payloads:

* `agents` (keys.AGENTS): `{"type": "agent.state", "previous": <status or null>,
  "agent": <agent_state_to_dict(state)>}`
* `queues` (keys.QUEUES): `{"type": "queue.stats", "queue": <queue_stats_to_dict(stats)>}`
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

from callcenter.agents.model import AgentState, QueueStats
from callcenter.agents.service import AgentEffect, AgentStateChanged, QueueStatsChanged
from callcenter.bus.base import Bus, Payload
from callcenter.bus.keys import AGENTS, QUEUES
from callcenter.bus.memory import encode_payload, encode_records


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def agent_state_to_dict(state: AgentState) -> dict[str, Any]:
    return {
        "interface": state.interface,
        "name": state.name,
        "status": state.status,
        "since": _iso(state.since),
        "paused_reason": state.paused_reason,
        "device_status": state.device_status,
        "queues": [
            {
                "queue": m.queue,
                "penalty": m.penalty,
                "membership": m.membership,
                "paused": m.paused,
                "paused_reason": m.paused_reason,
                "calls_taken": m.calls_taken,
                "last_call": m.last_call,
                "in_call": m.in_call,
                "wrapup_time": m.wrapup_time,
            }
            for m in state.queues
        ],
        "call_uniqueid": state.call_uniqueid,
        "call_queue": state.call_queue,
        "wrap_up_until": _iso(state.wrap_up_until),
        "calls_taken": state.calls_taken,
    }


def queue_stats_to_dict(stats: QueueStats) -> dict[str, Any]:
    return {
        "queue": stats.queue,
        "waiting": stats.waiting,
        "longest_wait_seconds": stats.longest_wait_seconds,
        "callers": [
            {
                "uniqueid": c.uniqueid,
                "channel": c.channel,
                "caller_number": c.caller_number,
                "caller_name": c.caller_name,
                "joined_at": _iso(c.joined_at),
                "position": c.position,
            }
            for c in stats.callers
        ],
        "members": dict(stats.members),
        "strategy": stats.strategy,
        "completed": stats.completed,
        "abandoned": stats.abandoned,
        "holdtime": stats.holdtime,
        "talktime": stats.talktime,
        "service_level": stats.service_level,
        "service_level_perf": stats.service_level_perf,
    }


def _message(effect: AgentEffect, *, dicts: bool) -> tuple[str, dict[str, Any]]:
    """The (channel, message) of `effect`: with `dicts` the states as dicts, else as they are."""
    if isinstance(effect, AgentStateChanged):
        agent = agent_state_to_dict(effect.agent) if dicts else effect.agent
        return AGENTS, {"type": "agent.state", "previous": effect.previous, "agent": agent}
    stats = queue_stats_to_dict(effect.stats) if dicts else effect.stats
    return QUEUES, {"type": "queue.stats", "queue": stats}


def effect_message(effect: AgentEffect) -> tuple[str, Payload]:
    """The (channel, payload) an effect is published as."""
    return _message(effect, dicts=True)


def effect_json(effect: AgentEffect) -> tuple[str, str]:
    """The (channel, JSON text) an effect is published as: the JSON document of
    effect_message's payload (json.dumps's errors for what JSON cannot carry)."""
    channel, message = _message(effect, dicts=False)
    stats = effect.stats if isinstance(effect, QueueStatsChanged) else None
    numbers = () if stats is None else (stats.longest_wait_seconds, stats.service_level_perf)
    text = encode_records(message, *numbers)
    if text is None:
        return channel, encode_payload(effect_message(effect)[1])
    return channel, text


class AgentNotifier:
    """Publishes AgentStateTracker effects. The bus never raises (it logs and drops when down).

    A bus with `publish_json(channel, text)` (MemoryBus) gets the JSON text built directly
    from the states; any other bus gets effect_message's payload dicts."""

    def __init__(self, *, bus: Bus) -> None:
        self._bus = bus
        self._publish_json: Callable[[str, str], Awaitable[None]] | None = getattr(
            bus, "publish_json", None
        )

    async def publish(self, effects: Iterable[AgentEffect]) -> None:
        publish_json = self._publish_json
        if publish_json is not None:
            for effect in effects:
                await publish_json(*effect_json(effect))
            return
        for effect in effects:
            channel, payload = effect_message(effect)
            await self._bus.publish(channel, payload)
