"""Call-log records. Pure data: produced by the call tracker, persisted by the repository."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from callcenter.fastinit import store_by_slots

AbandonStage = Literal["ivr", "queue"]
EndReason = Literal["completed", "abandoned", "ended_while_disconnected", "failed", "expired"]


@dataclass(frozen=True, slots=True)
class IvrStep:
    """One step a caller took in the IVR (recorded by the FastAGI runner)."""

    call_uniqueid: str
    seq: int
    at: datetime
    node: str
    kind: str  # node type: prompt, menu, collect, hours, lookup, language, set, queue, callback
    input: str | None = None  # digits pressed or collected, if any
    result: str | None = None  # e.g. "timeout", "invalid", "hangup", the chosen option


@dataclass(frozen=True, slots=True)
class Transfer:
    """The caller handed on by whoever was talking to them.

    `source`: that party (the member name of a queue agent, or the target of the previous
    transfer); `target`: the extension, queue or party the caller was handed to;
    `answered_at`: when someone there took the caller (a member of the target queue, the
    dialled phone; an attended transfer's target already talks to the caller), None while
    ringing or waiting, and for good when the caller hung up (or the dialplan gave up) first.
    """

    at: datetime
    kind: Literal["blind", "attended"]
    target: str
    source: str = ""
    answered_at: datetime | None = None


@store_by_slots  # a snapshot is taken at every change of a call
@dataclass(frozen=True, slots=True)
class CallRecord:
    """One hotline call (inbound, or originated by the system such as a callback), keyed by the
    Uniqueid of its first channel. Calls among the agents' phones (agent to agent, outward
    dials, the consultation leg of an attended transfer) are not hotline calls and get no record.

    Transfers. `answered_at`, `agent`, `agent_interface` and `wait_seconds` are about the first
    answer only: the answer-time target ("answered within target", service level) measures how
    long a caller waited for the hotline to pick up, so the wait in a queue the caller is
    transferred to later is not added, and the call stays filed under its first queue and agent
    (`queues`, `agents` and `transfers` list what came after). `talk_seconds` is all the time
    the caller talked to someone, from the first answer to the hangup: each agent's AgentComplete
    TalkTime, plus, after a transfer, the time with the transfer's target from its answer; the
    time spent waiting in another queue or ringing a transfer target is not talk. A caller who
    was answered is never an abandon: hanging up while a transfer rings (or waits in the next
    queue) keeps abandoned=False and end_reason "completed", and shows as the last transfer's
    `answered_at` being None.
    """

    uniqueid: str
    linkedid: str
    channel: str
    started_at: datetime
    caller_number: str = ""
    caller_name: str = ""
    dialed_number: str = ""
    direction: Literal["inbound", "outbound"] = "inbound"
    ivr_path: tuple[str, ...] = ()  # node ids / choices, e.g. ("main", "1", "bookings")
    ivr_choice: str | None = None  # the final menu choice, when the IVR reported it
    queue: str | None = None
    queue_priority: int | None = None
    queue_joined_at: datetime | None = None
    queue_left_at: datetime | None = None
    agent: str | None = None  # member name
    agent_interface: str | None = None  # e.g. PJSIP/1001
    answered_at: datetime | None = None  # when an agent answered
    ended_at: datetime | None = None
    wait_seconds: float | None = None  # queue join -> first agent answer (or -> abandon)
    talk_seconds: float | None = None  # time talking to someone, agents and transfer targets
    abandoned: bool = False
    abandon_stage: AbandonStage | None = None
    abandon_after_seconds: float | None = None  # from call start (ivr) or queue join (queue)
    transfers: tuple[Transfer, ...] = ()
    hangup_cause: int | None = None
    hangup_cause_text: str | None = None
    recording_file: str | None = None
    end_reason: EndReason | None = None
    variables: dict[str, str] = field(default_factory=dict)  # CALLCENTER_* VarSets worth keeping
    queues: tuple[str, ...] = ()  # every queue the caller joined, in order (transfers, overflow)
    agents: tuple[str, ...] = ()  # every member name that answered, in order
    adopted: bool = False  # first seen mid-call (resync or late start): start time approximate


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """A caller asked to be called back instead of waiting (recorded by the IVR)."""

    call_uniqueid: str
    number: str
    requested_at: datetime
    queue: str | None = None
    note: str | None = None


# -- back from JSON (the field-by-field objects orjson writes for these dataclasses) -------------


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO 8601 time, got {value!r}")
    return datetime.fromisoformat(value)


def _opt_time(value: Any) -> datetime | None:
    return None if value is None else _time(value)


def _texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def call_record_from_json(data: Mapping[str, Any]) -> CallRecord:
    """The CallRecord whose JSON object (as orjson writes the dataclass) is `data`."""
    fields = dict(data)
    fields["started_at"] = _time(fields["started_at"])
    for name in ("queue_joined_at", "queue_left_at", "answered_at", "ended_at"):
        fields[name] = _opt_time(fields.get(name))
    for name in ("ivr_path", "queues", "agents"):
        fields[name] = _texts(fields.get(name, []))
    fields["transfers"] = tuple(
        Transfer(
            at=_time(t["at"]),
            kind=t["kind"],
            target=t["target"],
            source=t.get("source", ""),
            answered_at=_opt_time(t.get("answered_at")),
        )
        for t in fields.get("transfers", [])
    )
    variables = fields.get("variables", {})
    if not isinstance(variables, dict):
        raise TypeError(f"expected an object of variables, got {variables!r}")
    return CallRecord(**fields)


def ivr_step_from_json(data: Mapping[str, Any]) -> IvrStep:
    """The IvrStep whose JSON object (as orjson writes the dataclass) is `data`."""
    return IvrStep(**{**data, "at": _time(data["at"])})
