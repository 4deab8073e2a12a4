"""Agent and queue state as the wallboard and the agent console see it. Pure data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

AgentStatus = Literal["logged_out", "available", "paused", "ringing", "on_call", "wrap_up"]
AGENT_STATUSES: tuple[AgentStatus, ...] = (
    "logged_out",
    "available",
    "paused",
    "ringing",
    "on_call",
    "wrap_up",
)


@dataclass(frozen=True, slots=True)
class QueueMembership:
    """One agent's membership of one queue, as Asterisk last reported it."""

    queue: str
    penalty: int = 0
    membership: str = ""  # dynamic | realtime | static
    paused: bool = False
    paused_reason: str = ""
    calls_taken: int = 0
    last_call: int = 0  # epoch seconds, 0 = never
    in_call: bool = False
    wrapup_time: int = 0  # seconds; 0 = the queue's (or our configured) default


@dataclass(frozen=True, slots=True)
class AgentState:
    interface: str  # e.g. PJSIP/1001: the agent's identity
    name: str  # member name
    status: AgentStatus
    since: datetime  # when `status` last changed
    paused_reason: str | None = None  # when paused in every queue (or paused while on a call)
    device_status: int = 0  # 0 UNKNOWN 1 NOT_INUSE 2 INUSE 3 BUSY 4 INVALID 5 UNAVAILABLE 6 RINGING
    queues: tuple[QueueMembership, ...] = ()
    call_uniqueid: str | None = None  # the caller ringing this agent / talking with them
    call_queue: str | None = None
    wrap_up_until: datetime | None = None
    calls_taken: int = 0  # summed over the agent's queues


@dataclass(frozen=True, slots=True)
class WaitingCaller:
    uniqueid: str
    channel: str
    caller_number: str
    caller_name: str
    joined_at: datetime
    position: int | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    waiting: int
    longest_wait_seconds: float
    callers: tuple[WaitingCaller, ...] = ()  # longest waiting first
    members: Mapping[AgentStatus, int] = field(default_factory=dict)  # members by status
    strategy: str = ""
    # the counters below come from QueueStatus (QueueParams) at the last resync
    completed: int = 0
    abandoned: int = 0
    holdtime: int = 0
    talktime: int = 0
    service_level: int = 0
    service_level_perf: float | None = None
