"""The agent console: what a screen-pop carries, the console's view of the signed-in user, and
the request/response schemas of its API. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PopKind = Literal["ringing", "answered", "no_answer", "finished"]

# bus payload type (callcenter.calls.notifier) -> pop kind
POP_TYPES: dict[str, PopKind] = {
    "agent.ringing": "ringing",
    "agent.answered": "answered",
    "agent.no_answer": "no_answer",
    "agent.finished": "finished",
}

ConsoleState = Literal["available", "paused", "wrap_up", "logged_out"]
# the QueuePause reason Asterisk shows while an agent is in wrap-up (set by the console)
WRAP_UP_REASON = "wrap-up"
LOGGED_OUT_REASON = "logged-out"  # static members (queues.conf) cannot be removed: paused so


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One line of the customer's recent history shown in the pop."""

    kind: str  # call | booking | complaint | callback | ...
    at: str | None  # ISO 8601
    summary: str
    ref: str | None = None  # call uniqueid or ticket id


@dataclass(frozen=True, slots=True)
class CustomerCard:
    id: int
    name: str
    tier: str
    key_customer: bool
    company: str | None = None
    credit_grade: str | None = None
    notes: str = ""
    preferred_language: str | None = None
    do_not_call: bool = False
    provisional: bool = False
    numbers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IvrDigit:
    node: str
    kind: str
    input: str
    result: str | None = None


@dataclass(frozen=True, slots=True)
class Enrichment:
    """What the archive and the call log add to a pop. `complete` is False when a lookup failed
    or ran out of time (the pop then shows only what the PBX told us). `steps_pending`: the
    call went through the IVR but its steps are not stored yet (the runner writes them once
    the IVR session has ended, and the agent's phone may ring before): `digits` are then the
    menu keys of the call's IVR path, and the stored steps follow in an update."""

    customer: CustomerCard | None = None
    history: tuple[HistoryItem, ...] = ()
    digits: tuple[IvrDigit, ...] = ()
    complete: bool = True
    steps_pending: bool = False
    # the lookups that failed or ran out of time ("customer", "history", "steps", "tickets")
    failed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pop:
    """One screen-pop for one agent; `seq` increases by one per pop of that agent."""

    seq: int
    kind: PopKind
    interface: str
    uniqueid: str
    data: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ API schemas


class AgentStateIn(BaseModel):
    """POST /api/v1/agent/state: the state the agent chooses."""

    model_config = ConfigDict(extra="forbid")

    state: ConsoleState
    reason: str | None = Field(default=None, max_length=80)

    @model_validator(mode="after")
    def _reason_for_pause(self) -> AgentStateIn:
        if self.reason is not None:
            self.reason = self.reason.strip() or None
        if self.state == "paused" and not self.reason:
            raise ValueError("a pause needs a reason")
        return self


class QueueMemberOut(BaseModel):
    queue: str
    paused: bool
    paused_reason: str


class AgentStateOut(BaseModel):
    """The agent's state as the PBX reported it, plus the calls still waiting for a
    disposition (wrap-up cannot end before they have one)."""

    interface: str | None
    status: str
    paused_reason: str | None = None
    since: str | None = None
    queues: list[QueueMemberOut] = Field(default_factory=list)
    pending_dispositions: list[str] = Field(default_factory=list)
