"""CallTracker: a pure transition function from AMI events to call records.

Contract: feed every decoded event, in arrival order, to `apply(event, now)`; after each AMI
(re)connect feed the resync snapshot to `reconcile(snapshot, now)` (or its two lists apart, each
where it was taken in the stream: `reconcile_channels`, then `reconcile_queue_entries`); call
`expire(now)` now and then. Each returns the effects to publish/persist. No I/O, no clock: time
is injected.

One record per call. A call is keyed by the Uniqueid of its first channel, which is the Linkedid
every later channel of the call (agent legs, Local halves, transfer legs) inherits; events are
correlated through that, never through arrival order across calls.

Channel variables read from VarSet on the first channel (leading `_`/`__` ignored):
CALLCENTER_DID (dialed number), CALLCENTER_IVR_PATH ("main>1>bookings", replaces the path),
IVR_CHOICE (last choice; appended to the path when no CALLCENTER_IVR_PATH is set), QUEUE_PRIO,
MIXMONITOR_FILENAME (recording, any channel of the call). CALLCENTER_*, IVR_* and QUEUE_* values
are kept in `variables` (bounded).

end_reason: outbound -> "completed" if the far end was reached, else "failed" (an originated
call's first channel is our side: it is answered once another channel of the call goes Up, enters
a bridge, or a queue member connects);
inbound answered by an agent (or bridged) -> "completed"; caller hung up in a queue ->
"abandoned" (stage queue); left a queue unanswered otherwise -> "failed"; never reached a queue ->
"abandoned" (stage ivr) unless the IVR/dialplan hung up itself (-> "completed");
"ended_while_disconnected" (reconcile) and "expired" (expire / size cap) when the end is unknown.
wait_seconds prefers AgentConnect HoldTime (plus the time spent in earlier queues when the
caller was sent on to another one; the call stays filed under the first queue, where its wait
began); it is about the first answer only (see CallRecord).
talk_seconds adds up the caller's connections: a queue member's from AgentConnect to its
AgentComplete (TalkTime; on the clock when it has none, up to a transfer or the hangup when it
never comes; matched by member, Queue + Interface, when it names another leg), and after a
transfer the target's, from its answer (an attended transfer's target bridged Up is talking
already; a blind transfer's, or an attended one's into the consultation's Dial/Queue (DestType
App), is answered when another leg of the call goes Up or enters a bridge, or a member of the
queue it led to connects) to the next transfer, the target leg's hangup or the caller's; an
answered originated call with neither counts answer -> hangup (-> the transfer). A Threeway
"transfer" keeps the agent talking. Asterisk sends no AgentComplete for the part after a
transfer. When the first channel transferred the other party and hangs up (the agent's phone
of a callback), that party's channel carries the call on.

Internal calls: a call whose first channel is an agent's phone (created ringing, not
originated, in one of `internal_contexts` - the agents' dialplan context - or named after a
queue member interface seen in this run) is followed (an attended transfer's target leg is
taken from it) but gives no effects: agent to agent, outward dials from the phones and the
consultation leg of an attended transfer are not hotline calls. A call adopted mid-way must
be both (a transferred caller runs in the agents' context too, a callback from a phone not).
Member phones are learnt from Agent* and QueueMember* events and the resync's QueueMember
items; a call `reconcile_channels` adopts in an agents' context from a phone not known yet is
held back (no effect) until `reconcile_queue_entries` has learnt the members.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from callcenter.asterisk.events import (
    TRACKED_VARIABLE_PREFIXES,
    AgentCalled,
    AgentCompleted,
    AgentConnected,
    AgentEvent,
    AgentRingNoAnswer,
    AgiCommandStarted,
    AmiEvent,
    AttendedTransferred,
    BlindTransferred,
    BridgeEntered,
    CallerIdChanged,
    ChannelCreated,
    ChannelEvent,
    ChannelHungUp,
    ChannelListed,
    ChannelStateChanged,
    DialplanStep,
    HangupRequested,
    QueueCallerAbandoned,
    QueueCallerJoined,
    QueueCallerLeft,
    QueueEntryListed,
    QueueMemberChanged,
    ResyncSource,
    TransferParty,
    VariableSet,
    decode_all,
    variable_name,
)
from callcenter.asterisk.message import AmiMessage
from callcenter.calls.model import AbandonStage, CallRecord, EndReason, Transfer

# Channel variables our dialplan / IVR set (names without the inheritance underscores).
VAR_DID = "CALLCENTER_DID"
VAR_IVR_PATH = "CALLCENTER_IVR_PATH"
VAR_IVR_CHOICE = "IVR_CHOICE"
VAR_QUEUE_PRIO = "QUEUE_PRIO"
VAR_RECORDING = "MIXMONITOR_FILENAME"  # one of events.TRACKED_VARIABLES
KEPT_VAR_PREFIXES = TRACKED_VARIABLE_PREFIXES
IVR_PATH_SEPARATORS = (">", ",")  # CALLCENTER_IVR_PATH = "main>1>bookings" (or comma-separated)

STATE_DOWN = 0
STATE_UP = 6

# dialplan contexts of the agents' phones: deploy/asterisk/extensions.conf `[agents]`, and the
# `from-internal` of the AMI transcripts and the emulator
INTERNAL_CONTEXTS = frozenset({"agents", "from-internal"})

CallChange = Literal[
    "caller", "dialed_number", "ivr", "queued", "left_queue", "answered", "abandoned",
    "transfer", "recording",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Effects


@dataclass(frozen=True, slots=True)
class CallStarted:
    record: CallRecord


@dataclass(frozen=True, slots=True)
class CallUpdated:
    record: CallRecord
    change: CallChange


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The final record: emitted once, when the call's first channel hangs up (or is lost)."""

    record: CallRecord


@dataclass(frozen=True, slots=True)
class AgentLegEffect:
    record: CallRecord  # the caller's call, as it stands
    queue: str
    interface: str  # e.g. PJSIP/1001
    member_name: str
    agent_channel: str
    agent_uniqueid: str


@dataclass(frozen=True, slots=True)
class AgentRinging(AgentLegEffect):
    hold_seconds: float | None  # how long the caller has waited in this queue so far


@dataclass(frozen=True, slots=True)
class AgentNoAnswer(AgentLegEffect):
    ring_seconds: float | None


@dataclass(frozen=True, slots=True)
class AgentAnswered(AgentLegEffect):
    hold_seconds: float | None
    ring_seconds: float | None


@dataclass(frozen=True, slots=True)
class AgentFinished(AgentLegEffect):
    talk_seconds: float | None
    reason: str  # caller | agent | transfer


CallEffect = (
    CallStarted | CallUpdated | CallEnded | AgentRinging | AgentNoAnswer | AgentAnswered
    | AgentFinished
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Mutable per-call state (private)


class _Call:
    __slots__ = (
        "abandon_after",
        "abandon_stage",
        "abandoned",
        "adopted",
        "agent",
        "agent_interface",
        "agents",
        "answered_at",
        "bridged",
        "caller_name",
        "caller_number",
        "channel",
        "connect_place",
        "dialed_number",
        "did_from_var",
        "direction",
        "hangup_cause",
        "hangup_cause_text",
        "in_agent_stint",
        "in_queue",
        "internal",
        "ivr_choice",
        "ivr_path",
        "ivr_path_explicit",
        "join_at",
        "last_event",
        "last_seen",
        "legs",
        "member_stints",
        "plain_from",
        "plain_leg",
        "primary",
        "queue",
        "queue_joined_at",
        "queue_left_at",
        "queue_priority",
        "queues",
        "recording_file",
        "started_at",
        "system_hangup",
        "talk_counted",
        "talk_total",
        "talking_to",
        "transfer_inferred",
        "transfer_pending",
        "transferee",
        "transfers",
        "uniqueid",
        "up",
        "variables",
        "wait_seconds",
    )

    def __init__(
        self, ev: ChannelEvent, started_at: datetime, *, adopted: bool, internal: bool
    ) -> None:
        self.uniqueid = ev.uniqueid
        self.primary = ev.uniqueid  # the channel whose hangup ends the call
        self.channel = ev.channel
        self.started_at = started_at
        self.last_seen = started_at
        self.caller_number = ev.caller_number
        self.caller_name = ev.caller_name
        self.dialed_number = ev.exten if ev.exten not in ("", "s") else ""
        self.did_from_var = False
        outbound = ev.state == STATE_DOWN and not adopted
        self.direction: Literal["inbound", "outbound"] = "outbound" if outbound else "inbound"
        self.up = ev.state == STATE_UP
        self.adopted = adopted
        self.internal = internal  # an agent's phone calling: followed, never published
        self.ivr_path: list[str] = []
        self.ivr_path_explicit = False
        self.ivr_choice: str | None = None
        self.queue: str | None = None
        self.queue_priority: int | None = None
        self.queue_joined_at: datetime | None = None
        self.queue_left_at: datetime | None = None
        self.queues: list[str] = []
        self.in_queue: str | None = None  # the queue the caller is waiting in right now
        self.join_at: datetime | None = None  # when the caller joined `in_queue`
        self.agent: str | None = None
        self.agent_interface: str | None = None
        self.agents: list[str] = []
        self.answered_at: datetime | None = None
        self.wait_seconds: float | None = None
        self.talk_total: float | None = None  # sum of AgentComplete TalkTime
        self.talk_counted: set[str] = set()  # member legs whose TalkTime is counted
        # open member connections (leg uniqueid -> member, connect time, cut by a transfer):
        # closed by their AgentComplete, else on the clock up to the cut (or the end)
        self.member_stints: dict[str, _Stint] = {}
        self.plain_from: datetime | None = None  # talking to a transfer's target since
        self.plain_leg = ""  # that target's leg, when known (its hangup ends the talk)
        self.talking_to = ""  # who the caller talks (or last talked) to: member or target
        self.in_agent_stint = False  # connected to a member since the last queue join
        self.connect_place: tuple[str, str] = ("", "")  # (context, exten) when connected
        self.transfer_pending = False  # a transfer was recorded; the next queue join is its end
        self.transferee = ""  # the leg the last transfer handed on (the customer of a callback)
        self.transfer_inferred = False  # the last transfer was inferred, no event told it yet
        self.abandoned = False
        self.abandon_stage: AbandonStage | None = None
        self.abandon_after: float | None = None
        self.transfers: list[Transfer] = []
        self.hangup_cause: int | None = None
        self.hangup_cause_text: str | None = None
        self.recording_file: str | None = None
        self.variables: dict[str, str] = {}
        self.system_hangup = False  # hung up by the dialplan/IVR, not by the caller
        self.bridged = False
        self.legs: set[str] = set()
        self.last_event: object = None

    def record(
        self,
        *,
        ended_at: datetime | None = None,
        talk: float | None = None,
        end_reason: EndReason | None = None,
    ) -> CallRecord:
        # positional, in CallRecord's field order (a snapshot is taken at every change)
        return CallRecord(
            self.uniqueid,
            self.uniqueid,  # linkedid
            self.channel,
            self.started_at,
            self.caller_number,
            self.caller_name,
            self.dialed_number,
            self.direction,
            tuple(self.ivr_path),
            self.ivr_choice,
            self.queue,
            self.queue_priority,
            self.queue_joined_at,
            self.queue_left_at,
            self.agent,
            self.agent_interface,
            self.answered_at,
            ended_at,
            self.wait_seconds,
            talk,  # talk_seconds
            self.abandoned,
            self.abandon_stage,
            self.abandon_after,
            tuple(self.transfers),
            self.hangup_cause,
            self.hangup_cause_text,
            self.recording_file,
            end_reason,
            dict(self.variables),
            tuple(self.queues),
            tuple(self.agents),
            self.adopted,
        )


# (queue, interface) of the member, connect time, cut time (a transfer ended the talk)
_Stint = tuple[tuple[str, str], datetime, datetime | None]


class _Held:
    """An adopted call of the agents' context whose channel is not a known phone yet: its
    effects wait for the resync's member list (QueueStatus) to tell whether it is internal."""

    __slots__ = ("channel", "context", "effects", "since")

    def __init__(self, channel: str, context: str, since: datetime) -> None:
        self.channel = channel
        self.context = context
        self.since = since
        self.effects: list[CallEffect] = []


def _seconds(later: datetime, earlier: datetime | None) -> float | None:
    if earlier is None:
        return None
    return max(0.0, (later - earlier).total_seconds())


def _queued(call: _Call, held: float | None) -> float | None:
    """Total queue wait: `held` in the current queue stint plus the earlier stints (a caller
    sent on to an overflow queue after a queue timeout waits from the first join)."""
    first, current = call.queue_joined_at, call.join_at
    if held is None or first is None or current is None or current <= first:
        return held
    return held + (current - first).total_seconds()


def _parse_path(value: str) -> list[str]:
    for sep in IVR_PATH_SEPARATORS:
        if sep in value:
            return [p.strip() for p in value.split(sep) if p.strip()]
    value = value.strip()
    return [value] if value else []


def _ignored(_ev: Any, _now: datetime) -> list[CallEffect]:
    return []


class CallTracker:
    """Pure call state machine. Not thread-safe; feed it from one task, in arrival order."""

    def __init__(
        self,
        *,
        max_idle: timedelta = timedelta(hours=6),
        max_calls: int = 50_000,
        max_tombstones: int = 20_000,
        max_variables: int = 32,
        max_value_length: int = 512,
        max_legs: int = 64,
        internal_contexts: Iterable[str] = INTERNAL_CONTEXTS,
        max_member_interfaces: int = 4096,
        max_hold: timedelta = timedelta(seconds=30),
    ) -> None:
        """`internal_contexts`: the dialplan contexts of the agents' phones; a call they start
        is internal (see the module docstring). `max_hold`: how long a call adopted by
        `reconcile_channels` in one of those contexts, from a channel not known as a member's
        phone, waits for `reconcile_queue_entries` (whose member list tells) before `expire`
        decides it by what is known."""
        if max_calls < 1 or max_tombstones < 0:
            raise ValueError("max_calls must be >= 1 and max_tombstones >= 0")
        self._max_idle = max_idle
        self._max_calls = max_calls
        self._max_tombstones = max_tombstones
        self._max_variables = max_variables
        self._max_value_length = max_value_length
        self._max_legs = max_legs
        self._internal_contexts = frozenset(internal_contexts)
        self._max_member_interfaces = max_member_interfaces
        self._max_hold = max_hold
        self._held: dict[str, _Held] = {}  # call key -> effects held back (see _Held)
        self._member_interfaces: set[str] = set()  # queue member interfaces seen (PJSIP/1001)
        self._internal: set[str] = set()  # keys of the live internal calls
        # call key -> key of the call it was transferred to as the target (two callers joined)
        self._joined: dict[str, str] = {}
        self._calls: dict[str, _Call] = {}
        self._legs: dict[str, str] = {}  # leg uniqueid -> call key
        # ended call ids: late or duplicate events for them must not resurrect the call
        self._tombstones: OrderedDict[str, None] = OrderedDict()
        self._handlers: dict[type, Callable[[Any, datetime], list[CallEffect]]] = {
            ChannelCreated: self._on_created,
            ChannelStateChanged: self._on_state,
            CallerIdChanged: self._on_callerid,
            DialplanStep: self._on_dialplan,
            VariableSet: self._on_varset,
            HangupRequested: self._on_hangup_request,
            ChannelHungUp: self._on_hangup,
            AgiCommandStarted: self._on_agi,
            BridgeEntered: self._on_bridge,
            QueueCallerJoined: self._on_join,
            QueueCallerLeft: self._on_leave,
            QueueCallerAbandoned: self._on_abandon,
            AgentCalled: self._on_agent_called,
            AgentRingNoAnswer: self._on_ring_no_answer,
            AgentConnected: self._on_agent_connect,
            AgentCompleted: self._on_agent_complete,
            BlindTransferred: self._on_blind_transfer,
            AttendedTransferred: self._on_attended_transfer,
            QueueMemberChanged: self._on_member,
        }

    # -- public API ----------------------------------------------------------------------------

    def apply(self, event: AmiEvent, now: datetime) -> list[CallEffect]:
        """Advance the state with one event; return what happened (possibly nothing)."""
        return self._public(self._handlers.get(type(event), _ignored)(event, now))

    def reconcile(self, snapshot: ResyncSource, now: datetime) -> list[CallEffect]:
        """Align with a whole resync snapshot: `reconcile_channels`, then
        `reconcile_queue_entries`, both at this point of the event stream."""
        effects = self.reconcile_channels(snapshot.channels, now)
        effects += self.reconcile_queue_entries(snapshot.queue_status, now)
        return effects

    def _public(self, effects: list[CallEffect]) -> list[CallEffect]:
        """`effects` without those of internal calls, and those of held calls kept back."""
        if not effects or not (self._internal or self._held):
            return effects
        out: list[CallEffect] = []
        for effect in effects:
            key = effect.record.uniqueid
            held = self._held.get(key)
            if held is not None:
                held.effects.append(effect)
                if len(held.effects) >= self._max_legs:  # bounded: decide it now
                    out.extend(self._decide(key))
            elif key not in self._internal:
                out.append(effect)
        return out

    def _decide(self, key: str) -> list[CallEffect]:
        """Decide a held call by the phones known now: internal (its effects dropped) or a
        hotline call (its effects released, in order)."""
        held = self._held.pop(key)
        if held.context in self._internal_contexts and self._is_member_phone(held.channel):
            call = self._calls.get(key)
            if call is not None:
                call.internal = True
                self._internal.add(key)
            return []
        return held.effects

    def _decide_held(self, since: datetime | None = None) -> list[CallEffect]:
        """Decide the held calls (those held since `since` or before)."""
        out: list[CallEffect] = []
        for key in [k for k, h in self._held.items() if since is None or h.since <= since]:
            out.extend(self._decide(key))
        return out

    def reconcile_channels(self, channels: Iterable[AmiMessage], now: datetime) -> list[CallEffect]:
        """Align with the live channels (CoreShowChannel items) after a (re)connect.

        Apply it right where the list was taken in the event stream (after
        CoreShowChannelsComplete), before any later event: a call whose first event comes
        after the list is not in it and would be taken for one that ended meanwhile.
        Known calls whose first channel is gone are ended with end_reason
        "ended_while_disconnected" (hangup cause unknown). Live first channels we did not know
        are adopted (`adopted=True`, started_at = now - Duration). Calls still up continue.
        """
        released = self._decide_held()  # the previous resync's queue list never came
        live: dict[str, ChannelListed] = {}
        for ev in decode_all(channels):
            if isinstance(ev, ChannelListed) and ev.uniqueid:
                live[ev.uniqueid] = ev
        effects: list[CallEffect] = []
        for call in list(self._calls.values()):
            listed = live.get(call.primary)
            if listed is None:
                effects.extend(self._end(call, now, override="ended_while_disconnected"))
            else:
                call.last_seen = now  # still up: not idle ghost state
                if listed.bridge_id:
                    call.bridged = True  # answered (or connected) while the link was down
        for ev in live.values():
            if (ev.linkedid in ("", ev.uniqueid)) and ev.uniqueid not in self._calls:
                effects.extend(self._adopt_listed(ev, now))
        for call in self._calls.values():
            for leg in [leg for leg in call.legs if leg not in live]:
                self._leg_gone(call, leg, now)  # hung up while the link was down: by now
        for ev in live.values():
            if ev.linkedid and ev.uniqueid != ev.linkedid:
                owner = self._calls.get(ev.linkedid)
                if owner is not None:
                    self._add_leg(owner, ev.uniqueid)
        return released + self._public(effects)

    def reconcile_queue_entries(
        self, queue_status: Iterable[AmiMessage], now: datetime
    ) -> list[CallEffect]:
        """Take the queue wait of known calls from QueueStatus items (QueueEntry), where the
        list was taken in the stream (after QueueStatusComplete) and after the channels.
        Known calls waiting in a queue with no QueueEntry left it meanwhile (`queue_left_at` =
        now; a later AgentComplete tells the answer time)."""
        items = decode_all(queue_status)
        for item in items:
            if isinstance(item, QueueMemberChanged):
                self._learn_phones(item)
        effects = self._decide_held()  # the member list tells which calls are internal
        queued: set[str] = set()
        for item in items:
            if isinstance(item, QueueEntryListed):
                queued.add(item.uniqueid)
                waiting = self._calls.get(item.uniqueid)
                if waiting is None or waiting.answered_at is not None or waiting.join_at:
                    continue
                joined = now - timedelta(seconds=item.wait_seconds or 0)
                if waiting.in_queue is None:
                    self._enter_queue(waiting, item.queue, joined)
                else:  # adopted while queued: QueueStatus tells how long it has waited
                    waiting.join_at = joined
                    if waiting.queue_joined_at is None and waiting.queue == waiting.in_queue:
                        waiting.queue_joined_at = joined
                effects.append(CallUpdated(waiting.record(), "queued"))
        for call in self._calls.values():
            if call.in_queue is not None and call.uniqueid not in queued:
                # left the queue while the link was down (answered, timed out): when is unknown
                call.in_queue = None
                call.queue_left_at = now
                effects.append(CallUpdated(call.record(), "left_queue"))
        return self._public(effects)

    def expire(self, now: datetime) -> list[CallEffect]:
        """End calls with no event for `max_idle` (ghost state); end_reason "expired"."""
        cutoff = now - self._max_idle
        effects = self._decide_held(now - self._max_hold)  # no member list came (refused?)
        for call in [c for c in self._calls.values() if c.last_seen < cutoff]:
            effects.extend(self._end(call, now, override="expired"))
        return self._public(effects)

    def active_calls(self) -> list[CallRecord]:
        """The calls in progress, oldest first (for the wallboard); internal calls left out."""
        live = (c.record() for c in self._calls.values() if self._shown(c))
        return sorted(live, key=lambda r: r.started_at)

    def _shown(self, call: _Call) -> bool:
        return not call.internal and call.uniqueid not in self._held

    def get(self, uniqueid: str) -> CallRecord | None:
        """The live record of a call, by its key or by the uniqueid of any of its channels
        (None for an internal call)."""
        call = self._find(uniqueid, uniqueid)
        return call.record() if call is not None and self._shown(call) else None

    def __len__(self) -> int:
        return len(self._calls)

    # -- lookup ---------------------------------------------------------------------------------

    def _find(self, uniqueid: str, linkedid: str) -> _Call | None:
        call = self._calls.get(uniqueid)
        if call is not None:
            return call  # a call's own first channel, even when another call took it as a target
        key = self._legs.get(uniqueid)
        if key is not None:
            # a leg taken over by another call (an attended transfer's target) may still carry
            # the Linkedid of the call it was made in
            return self._calls.get(key)
        return self._calls.get(linkedid)

    def _resolve(
        self, ev: ChannelEvent, now: datetime, out: list[CallEffect], *, adopt: bool = True
    ) -> _Call | None:
        """The call `ev` belongs to, or None (unknown/ended call, or an exact duplicate)."""
        call = self._find(ev.uniqueid, ev.linkedid)
        if call is None:
            if not adopt or not self._adoptable(ev.uniqueid, ev.linkedid):
                return None
            # first seen mid-call (we started late, or missed Newchannel): adopt it
            call = self._new_call(
                ev, now, adopted=True, internal=self._is_internal_now(ev), out=out
            )
        elif call.last_event == ev:
            return None  # the same event delivered twice
        call.last_event = ev
        call.last_seen = now
        return call

    def _adoptable(self, uniqueid: str, linkedid: str) -> bool:
        return (
            bool(uniqueid)
            and uniqueid != "none"  # global VarSet: Channel/Uniqueid "none"
            and linkedid in ("", uniqueid)
            and uniqueid not in self._tombstones
        )

    def _new_call(
        self,
        ev: ChannelEvent,
        started_at: datetime,
        *,
        adopted: bool,
        internal: bool,
        out: list[CallEffect],
    ) -> _Call:
        if len(self._calls) >= self._max_calls:
            oldest = min(self._calls.values(), key=lambda c: c.last_seen)
            out.extend(self._end(oldest, max(started_at, oldest.last_seen), override="expired"))
        call = _Call(ev, started_at, adopted=adopted, internal=internal)
        self._calls[call.uniqueid] = call
        if internal:
            self._internal.add(call.uniqueid)
        out.append(CallStarted(call.record()))
        return call

    def _is_member_phone(self, channel: str) -> bool:
        """`channel` (PJSIP/1001-0000002a) is a channel of a queue member's phone."""
        return _device(channel) in self._member_interfaces

    def _is_internal_start(self, ev: ChannelCreated) -> bool:
        """A new first channel that an agent's phone started (an originated call is created
        Down, even from an agent's phone: a callback is a hotline call)."""
        if ev.state == STATE_DOWN:
            return False
        return ev.context in self._internal_contexts or self._is_member_phone(ev.channel)

    def _is_internal_now(self, ev: ChannelEvent) -> bool:
        """A first channel seen mid-call is an agent's phone calling: a member's phone in the
        agents' context (a transferred caller runs there too; a callback runs elsewhere)."""
        return ev.context in self._internal_contexts and self._is_member_phone(ev.channel)

    def _on_member(self, ev: QueueMemberChanged, _now: datetime) -> list[CallEffect]:
        self._learn_phones(ev)
        return []

    def _learn_phones(self, ev: QueueMemberChanged) -> None:
        """A queue member's interface, and the device its state follows (the phone behind a
        Local/1001@agents member)."""
        self._learn_member(ev.interface)
        if ev.state_interface != ev.interface:
            self._learn_member(ev.state_interface)

    def _learn_member(self, interface: str) -> None:
        members = self._member_interfaces
        if interface and interface not in members and len(members) < self._max_member_interfaces:
            members.add(interface)

    def _add_leg(self, call: _Call, uniqueid: str) -> None:
        if uniqueid and uniqueid != call.uniqueid and len(call.legs) < self._max_legs:
            call.legs.add(uniqueid)
            self._legs[uniqueid] = call.uniqueid

    def _is_primary(self, call: _Call, ev: ChannelEvent) -> bool:
        return ev.uniqueid == call.primary

    # -- channel lifecycle ----------------------------------------------------------------------

    def _on_created(self, ev: ChannelCreated, now: datetime) -> list[CallEffect]:
        if not ev.uniqueid or ev.uniqueid in self._calls or ev.uniqueid in self._legs:
            return []
        out: list[CallEffect] = []
        if ev.linkedid in ("", ev.uniqueid):
            if self._adoptable(ev.uniqueid, ev.linkedid):
                internal = self._is_internal_start(ev)
                call = self._new_call(ev, now, adopted=False, internal=internal, out=out)
                call.last_event = ev
            return out
        owner = self._calls.get(ev.linkedid)
        if owner is not None:
            self._add_leg(owner, ev.uniqueid)
            owner.last_seen = now
        return out

    def _on_state(self, ev: ChannelStateChanged, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._resolve(ev, now, out)
        if call is None or ev.state != STATE_UP:
            return out
        if self._is_primary(call, ev):
            # an originated call's first channel is our side (the agent's phone for a
            # callback): its answer is not the far end's
            call.up = True
        elif call.direction == "outbound" and call.answered_at is None:
            self._far_end_reached(call, now, out)
        else:
            self._leg_connected(call, ev.uniqueid, now, out)
        return out

    def _far_end_reached(self, call: _Call, now: datetime, out: list[CallEffect]) -> None:
        call.answered_at = now
        out.append(CallUpdated(call.record(), "answered"))

    def _on_callerid(self, ev: CallerIdChanged, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._resolve(ev, now, out)
        if call is None or not self._is_primary(call, ev):
            return out
        if (ev.caller_number, ev.caller_name) != (call.caller_number, call.caller_name):
            call.caller_number = ev.caller_number
            call.caller_name = ev.caller_name
            out.append(CallUpdated(call.record(), "caller"))
        return out

    def _on_dialplan(self, ev: DialplanStep, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._resolve(ev, now, out)
        if call is None or not self._is_primary(call, ev):
            return out
        if ev.application.lower() == "hangup":
            call.system_hangup = True
        if call.in_agent_stint and (ev.context, ev.exten) != call.connect_place:
            # the caller left the member's bridge for other dialplan: an AMI Redirect / transfer
            self._record_transfer(call, now, "blind", ev.exten, inferred=True)
            out.append(CallUpdated(call.record(), "transfer"))
        if not call.dialed_number and ev.exten not in ("", "s"):
            call.dialed_number = ev.exten
            out.append(CallUpdated(call.record(), "dialed_number"))
        return out

    def _on_varset(self, ev: VariableSet, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._resolve(ev, now, out)
        if call is None:
            return out
        name = variable_name(ev.variable)
        value = ev.value[: self._max_value_length]
        if name == VAR_RECORDING:
            primary_or_first = call.recording_file is None or self._is_primary(call, ev)
            if value and primary_or_first and value != call.recording_file:
                call.recording_file = value
                out.append(CallUpdated(call.record(), "recording"))
            return out
        if not self._is_primary(call, ev) or not name.startswith(KEPT_VAR_PREFIXES):
            return out
        if name in call.variables or len(call.variables) < self._max_variables:
            call.variables[name] = value
        if name == VAR_DID:
            if value and (value != call.dialed_number or not call.did_from_var):
                call.did_from_var = True
                changed = value != call.dialed_number
                call.dialed_number = value
                if changed:
                    out.append(CallUpdated(call.record(), "dialed_number"))
        elif name == VAR_IVR_PATH:
            call.ivr_path = _parse_path(value)[: self._max_variables]
            call.ivr_path_explicit = True
            out.append(CallUpdated(call.record(), "ivr"))
        elif name == VAR_IVR_CHOICE:
            call.ivr_choice = value
            if not call.ivr_path_explicit and len(call.ivr_path) < self._max_variables:
                call.ivr_path.append(value)
            out.append(CallUpdated(call.record(), "ivr"))
        elif name == VAR_QUEUE_PRIO:
            # a bad value from the dialplan is kept in `variables` only
            with suppress(ValueError):
                call.queue_priority = int(value.strip())
        return out

    def _on_hangup_request(self, ev: HangupRequested, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._resolve(ev, now, out, adopt=False)
        if call is not None and ev.soft and self._is_primary(call, ev):
            call.system_hangup = True
        return out

    def _on_agi(self, ev: AgiCommandStarted, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._resolve(ev, now, out)
        is_hangup = ev.command.strip().upper().startswith("HANGUP")
        if call is not None and is_hangup and self._is_primary(call, ev):
            call.system_hangup = True
        return out

    def _on_bridge(self, ev: BridgeEntered, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._resolve(ev, now, out)
        if call is None:
            return out
        if self._is_primary(call, ev):
            call.bridged = True
        if call.direction == "outbound" and call.answered_at is None:
            self._far_end_reached(call, now, out)  # a bridge forms once the dialled party answers
        elif not self._is_primary(call, ev):
            self._leg_connected(call, ev.uniqueid, now, out)
        return out

    def _leg_connected(self, call: _Call, leg: str, now: datetime, out: list[CallEffect]) -> None:
        """Another channel of the call went Up or entered a bridge: after a blind transfer
        that did not lead into a queue (a member's answer is AgentConnect's), the target took
        the caller."""
        if call.answered_at is None or call.in_queue is not None:
            return
        last = call.transfers[-1] if call.transfers else None
        if last is None or last.answered_at is not None:
            return
        if call.join_at is not None and call.join_at >= last.at:
            return  # the transfer led into a queue
        self._target_answered(call, now, leg)
        out.append(CallUpdated(call.record(), "transfer"))

    def _target_answered(self, call: _Call, now: datetime, leg: str) -> None:
        last = call.transfers[-1]
        call.transfers[-1] = replace(last, answered_at=now)
        self._close_plain(call, now)
        call.plain_from = now
        call.plain_leg = leg
        call.talking_to = last.target

    def _add_talk(self, call: _Call, seconds: float) -> None:
        call.talk_total = (call.talk_total or 0.0) + max(0.0, seconds)

    def _close_plain(self, call: _Call, now: datetime) -> None:
        """End the talk with a transfer's target (at a transfer, its hangup, the end)."""
        if call.plain_from is not None:
            self._add_talk(call, (now - call.plain_from).total_seconds())
            call.plain_from = None
            call.plain_leg = ""

    def _leg_gone(self, call: _Call, leg: str, now: datetime) -> None:
        """Another channel of the call hung up (at `now`, or by then): whoever talked on it
        talks no longer (a member whose AgentComplete is still to come, or was lost in a link
        gap; the transfer's target)."""
        call.legs.discard(leg)
        self._legs.pop(leg, None)
        stint = call.member_stints.get(leg)
        if stint is not None and stint[2] is None:
            call.member_stints[leg] = (stint[0], stint[1], now)
        if call.plain_leg == leg:
            self._close_plain(call, now)

    def _cut_member_stints(self, call: _Call, now: datetime) -> None:
        """A transfer ends the members' talk; their AgentComplete TalkTime still counts."""
        for leg, (member, start, cut) in call.member_stints.items():
            if cut is None:
                call.member_stints[leg] = (member, start, now)

    def _on_hangup(self, ev: ChannelHungUp, now: datetime) -> list[CallEffect]:
        call = self._find(ev.uniqueid, ev.linkedid)
        if call is None:
            if self._adoptable(ev.uniqueid, ev.linkedid):
                self._tombstone(ev.uniqueid)  # never seen alive: keep late events from adopting it
            return []
        call.last_seen = now
        if not self._is_primary(call, ev):
            self._leg_gone(call, ev.uniqueid, now)
            return []
        heir = call.transferee
        if heir and heir != ev.uniqueid and heir in call.legs:
            # the first channel transferred the other party and left (the agent's phone of a
            # callback): the call goes on with that party, whose hangup ends it
            call.primary = heir
            call.transferee = ""
            return []
        call.hangup_cause = ev.cause
        call.hangup_cause_text = ev.cause_text or None
        return self._end(call, now)

    # -- queue ------------------------------------------------------------------------------------

    def _enter_queue(self, call: _Call, queue: str, at: datetime) -> None:
        call.queues.append(queue)
        if call.queue is None:
            call.queue = queue
            call.queue_joined_at = at
        call.in_queue = queue
        call.join_at = at

    def _on_join(self, ev: QueueCallerJoined, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._resolve(ev, now, out)
        if call is None or call.in_queue == ev.queue:
            return out
        if call.in_agent_stint and not call.transfer_pending:
            # the caller, once connected, now waits in a queue again: moved by a transfer
            self._record_transfer(call, now, "blind", ev.queue, inferred=True)
        call.transfer_pending = False
        call.in_agent_stint = False
        self._close_plain(call, now)
        self._cut_member_stints(call, now)
        self._enter_queue(call, ev.queue, now)
        out.append(CallUpdated(call.record(), "queued"))
        return out

    def _on_leave(self, ev: QueueCallerLeft, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._resolve(ev, now, out, adopt=False)
        if call is None or call.in_queue is None:
            return out
        call.in_queue = None
        call.queue_left_at = now
        out.append(CallUpdated(call.record(), "left_queue"))
        return out

    def _on_abandon(self, ev: QueueCallerAbandoned, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._resolve(ev, now, out, adopt=False)
        if call is None or call.abandoned or call.answered_at is not None:
            return out
        held = float(ev.hold_time) if ev.hold_time is not None else _seconds(now, call.join_at)
        held = _queued(call, held)
        call.abandoned = True
        call.abandon_stage = "queue"
        call.abandon_after = held
        if call.wait_seconds is None:
            call.wait_seconds = held
        out.append(CallUpdated(call.record(), "abandoned"))
        return out

    # -- agents -----------------------------------------------------------------------------------

    def _agent_call(self, ev: AgentEvent, now: datetime, out: list[CallEffect]) -> _Call | None:
        self._learn_member(ev.interface)
        call = self._resolve(ev, now, out)
        if call is not None and ev.dest_linkedid in ("", call.uniqueid):
            self._add_leg(call, ev.dest_uniqueid)
        return call

    def _on_agent_called(self, ev: AgentCalled, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._agent_call(ev, now, out)
        if call is not None:
            held = _seconds(now, call.join_at) if call.in_queue else None
            out.append(AgentRinging(call.record(), *_leg(ev), hold_seconds=held))
        return out

    def _on_ring_no_answer(self, ev: AgentRingNoAnswer, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._agent_call(ev, now, out)
        if call is not None:
            ring = ev.ring_time_ms / 1000 if ev.ring_time_ms is not None else None
            out.append(AgentNoAnswer(call.record(), *_leg(ev), ring_seconds=ring))
        return out

    def _on_agent_connect(self, ev: AgentConnected, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._agent_call(ev, now, out)
        if call is None:
            return out
        if call.in_agent_stint and call.agents and call.agents[-1] == _member(ev):
            return out  # the same connection reported again
        held = float(ev.hold_time) if ev.hold_time is not None else _seconds(now, call.join_at)
        if call.answered_at is None:
            call.answered_at = now
        if call.agent is None:  # an outbound call may be answered (member leg up) before this
            call.agent = _member(ev)
            call.agent_interface = ev.interface or None
            call.wait_seconds = _queued(call, held)
        call.agents.append(_member(ev))
        call.in_agent_stint = True
        call.transfer_pending = False
        call.connect_place = (ev.context, ev.exten)
        call.in_queue = None
        if call.plain_leg and call.plain_leg == ev.dest_uniqueid:
            call.plain_from = None  # its Up was this member's answer: the stint below counts it
            call.plain_leg = ""
        self._close_plain(call, now)
        if len(call.member_stints) < self._max_legs:
            call.member_stints[ev.dest_uniqueid] = ((ev.queue, ev.interface), now, None)
        if call.transfers and call.transfers[-1].answered_at is None:
            call.transfers[-1] = replace(call.transfers[-1], answered_at=now)
        call.talking_to = _member(ev)
        record = call.record()  # records are immutable: both effects share one
        out.append(CallUpdated(record, "answered"))
        ring = float(ev.ring_time) if ev.ring_time is not None else None
        out.append(AgentAnswered(record, *_leg(ev), hold_seconds=held, ring_seconds=ring))
        return out

    def _on_agent_complete(self, ev: AgentCompleted, now: datetime) -> list[CallEffect]:
        out: list[CallEffect] = []
        call = self._agent_call(ev, now, out)
        if call is None or (ev.dest_uniqueid and ev.dest_uniqueid in call.talk_counted):
            return out
        if ev.dest_uniqueid and len(call.talk_counted) < self._max_legs:
            call.talk_counted.add(ev.dest_uniqueid)
        if call.answered_at is None and not call.abandoned:
            self._answered_unseen(call, ev, now)
            out.append(CallUpdated(call.record(), "answered"))
        stint = _pop_stint(call, ev)
        if ev.dest_uniqueid and call.plain_leg == ev.dest_uniqueid:
            # a member timed as a transfer's target (its AgentConnect lost in a link gap):
            # counted once, by its TalkTime when there is one
            if ev.talk_time is None and stint is None:
                self._close_plain(call, now)
            call.plain_from = None
            call.plain_leg = ""
        if ev.talk_time is not None:
            self._add_talk(call, ev.talk_time)
        elif stint is not None:  # no TalkTime: on the clock, up to a transfer
            _member_key, start, cut = stint
            self._add_talk(call, ((cut or now) - start).total_seconds())
        if ev.reason != "transfer":
            call.in_agent_stint = False  # dialplan after this is not a transfer
        talk = float(ev.talk_time) if ev.talk_time is not None else None
        out.append(AgentFinished(call.record(), *_leg(ev), talk_seconds=talk, reason=ev.reason))
        return out

    def _answered_unseen(self, call: _Call, ev: AgentCompleted, now: datetime) -> None:
        """An AgentComplete for a call whose answer was not seen (AMI link down meanwhile):
        the answer was TalkTime ago, after HoldTime in the queue."""
        answered = now - timedelta(seconds=ev.talk_time or 0)
        held = float(ev.hold_time) if ev.hold_time is not None else None
        call.answered_at = answered
        call.agent = _member(ev)
        call.agent_interface = ev.interface or None
        call.talking_to = call.agent
        if call.agents[-1:] != [call.agent]:
            call.agents.append(call.agent)
        if call.queue is None and ev.queue:  # the whole queue stint fell in the gap
            call.queue = ev.queue
            call.queues.append(ev.queue)
            call.queue_joined_at = answered - timedelta(seconds=held or 0)
        if call.queue_left_at is None or call.queue_left_at > answered:
            call.queue_left_at = answered  # a resync only knew it had left by then
        call.in_queue = None
        call.wait_seconds = (
            _queued(call, held) if held is not None else _seconds(answered, call.queue_joined_at)
        )

    # -- transfers --------------------------------------------------------------------------------

    def _call_of(self, *parties: TransferParty | None) -> _Call | None:
        for party in parties:
            if party is not None:
                call = self._find(party.uniqueid, party.linkedid)
                if call is not None:
                    return call
        return None

    def _record_transfer(
        self,
        call: _Call,
        now: datetime,
        kind: Literal["blind", "attended"],
        target: str,
        source: str = "",
        *,
        inferred: bool = False,
    ) -> None:
        """`source`: the transferring party when the call does not know whom the caller
        talked to. `inferred`: seen as the caller's leaving the member for other dialplan or a
        queue, not as a transfer event."""
        last = call.transfers[-1] if call.transfers else None
        if last is not None and call.transfer_inferred and last.answered_at is None:
            # bridge.c queues a transfer to the caller's own thread before the transferer
            # publishes the event: the caller's dialplan may come first; it is this transfer
            call.transfer_inferred = inferred
            if not inferred:
                call.transfers[-1] = replace(last, kind=kind, target=target or last.target)
            return
        call.transfer_inferred = inferred
        source = call.talking_to or source
        if (
            call.direction == "outbound"
            and call.answered_at is not None
            and not call.transfers
            and not call.member_stints
            and call.talk_total is None
            and call.plain_from is None
        ):
            # an originated call's own party (the agent of a callback) talked since the answer
            self._add_talk(call, (now - call.answered_at).total_seconds())
        if len(call.transfers) < self._max_legs:
            call.transfers.append(Transfer(at=now, kind=kind, target=target, source=source))
        call.transfer_pending = True
        call.in_agent_stint = False
        self._close_plain(call, now)
        self._cut_member_stints(call, now)

    def _transfer_done(self, call: _Call, ev: object, now: datetime) -> bool:
        if call.last_event == ev:
            return False
        call.last_event = ev
        call.last_seen = now
        return True

    def _on_blind_transfer(self, ev: BlindTransferred, now: datetime) -> list[CallEffect]:
        call = self._call_of(ev.transferee, ev.transferer)
        if call is None or ev.result.lower() != "success" or not self._transfer_done(call, ev, now):
            return []
        target = ev.extension or ev.context
        self._record_transfer(call, now, "blind", target, _device(ev.transferer.channel))
        call.transferee = ev.transferee.uniqueid if ev.transferee is not None else ""
        return [CallUpdated(call.record(), "transfer")]

    def _on_attended_transfer(self, ev: AttendedTransferred, now: datetime) -> list[CallEffect]:
        call = self._call_of(ev.transferee, ev.orig_transferer, ev.second_transferer)
        if call is None or ev.result.lower() != "success" or not self._transfer_done(call, ev, now):
            return []
        dest = ev.dest_type.lower()
        consult = self._consultation(call, ev.second_transferer)
        target = ""
        if ev.target is not None:
            target = ev.target.caller_number or _device(ev.target.channel)
        if not target and consult is not None:
            target = consult.dialed_number  # what the agent's phone dialled
        if not target and ev.second_transferer is not None:
            target = ev.second_transferer.connected_number
        target = target or ev.dest_app
        source = _device(ev.orig_transferer.channel)
        leg = ev.target.uniqueid if ev.target is not None else ""
        if dest == "threeway":
            # the agent stays in the call (app_queue sends her AgentComplete, with all her
            # TalkTime, at the end): the target joins a talk that goes on being hers
            if len(call.transfers) < self._max_legs:
                source = call.talking_to or source
                call.transfers.append(Transfer(now, "attended", target, source, answered_at=now))
            self._take_leg(call, leg)
            return [CallUpdated(call.record(), "transfer")]
        self._record_transfer(call, now, "attended", target, source)
        call.transferee = ev.transferee.uniqueid if ev.transferee is not None else ""
        if dest == "app":
            # the consultation was still in Dial/Queue (ringing, waiting): the caller took its
            # place there; nobody has answered yet
            if consult is not None:
                self._take_over(call, consult, now)
        elif dest != "fail" and call.transfers:
            self._take_leg(call, leg)
            if ev.target is None or ev.target.state in (None, STATE_UP):
                # the target was talking to the agent: it talks to the caller from now on
                self._target_answered(call, now, leg)
            # else still ringing (a "blond" transfer): its answer is the leg's Up or bridge
        return [CallUpdated(call.record(), "transfer")]

    def _consultation(self, call: _Call, party: TransferParty | None) -> _Call | None:
        """The agent's consultation call (internal, first channel `party`), if followed."""
        if party is None:
            return None
        consult = self._calls.get(party.uniqueid)
        return consult if consult is not None and consult is not call and consult.internal else None

    def _take_over(self, call: _Call, consult: _Call, now: datetime) -> None:
        """The caller took the consultation's place in its application: its legs (a ringing
        target) and its queue wait are the caller's now."""
        for leg in list(consult.legs):
            self._take_leg(call, leg)
        if consult.in_queue is not None and call.in_queue is None:
            self._enter_queue(call, consult.in_queue, now)

    def _take_leg(self, call: _Call, leg: str) -> None:
        """Make `leg` (a channel of another call, such as the consultation) one of `call`'s.
        The first channel of another live call stays that call's (an agent joined two callers):
        its hangup ends that call, and `call`'s talk with it (`_joined`)."""
        if not leg or leg == call.uniqueid:
            return
        if leg in self._calls:
            if len(self._joined) < self._max_calls:
                self._joined[leg] = call.uniqueid
            return
        owner = self._calls.get(self._legs.get(leg, ""))
        if owner is not None and owner is not call:
            owner.legs.discard(leg)
        self._add_leg(call, leg)

    # -- end of call ------------------------------------------------------------------------------

    def _end(
        self, call: _Call, now: datetime, *, override: EndReason | None = None
    ) -> list[CallEffect]:
        if call.internal:
            self._internal.discard(call.uniqueid)
            self._forget(call)
            return []
        reason: EndReason
        if override is not None:
            talk = call.talk_total
            reason = override  # how it ended is unknown: no abandon inference, no clock talk time
        else:
            self._close_plain(call, now)
            for _member_key, start, cut in call.member_stints.values():  # no AgentComplete came
                self._add_talk(call, ((cut or now) - start).total_seconds())
            call.member_stints.clear()
            talk = call.talk_total
            if talk is None and call.answered_at is not None:
                talk = _seconds(now, call.answered_at)
            if call.direction == "outbound":
                reached = call.answered_at is not None or call.bridged
                reason = "completed" if reached else "failed"
            elif call.answered_at is not None or call.bridged:
                reason = "completed"
            elif call.abandoned:
                reason = "abandoned"
            elif call.in_queue is not None:
                # hung up while waiting but the QueueCallerAbandon was not seen
                call.abandoned = True
                call.abandon_stage = "queue"
                call.abandon_after = _queued(call, _seconds(now, call.join_at))
                call.wait_seconds = call.abandon_after
                reason = "abandoned"
            elif call.queues:
                reason = "failed"  # left the queue unanswered (timeout, empty), not by hanging up
            elif call.system_hangup:
                reason = "completed"  # the IVR ended it (information, callback request)
            else:
                call.abandoned = True
                call.abandon_stage = "ivr"
                call.abandon_after = _seconds(now, call.started_at)
                reason = "abandoned"
        record = call.record(ended_at=now, talk=talk, end_reason=reason)
        self._forget(call)
        return [CallEnded(record)]

    def _forget(self, call: _Call) -> None:
        self._calls.pop(call.uniqueid, None)
        joined = self._calls.get(self._joined.pop(call.uniqueid, ""))
        if joined is not None and joined.plain_leg == call.uniqueid:
            self._close_plain(joined, call.last_seen)  # the target (another caller) is gone
        for leg in call.legs:
            if self._legs.get(leg) == call.uniqueid:
                self._legs.pop(leg, None)
        self._tombstone(call.uniqueid)

    def _tombstone(self, uniqueid: str) -> None:
        if self._max_tombstones == 0:
            return
        self._tombstones[uniqueid] = None
        self._tombstones.move_to_end(uniqueid)
        while len(self._tombstones) > self._max_tombstones:
            self._tombstones.popitem(last=False)

    def _adopt_listed(self, ev: ChannelListed, now: datetime) -> list[CallEffect]:
        if ev.uniqueid in self._tombstones:
            return []
        started = now - timedelta(seconds=ev.duration_seconds or 0)
        out: list[CallEffect] = []
        internal = self._is_internal_now(ev)
        if not internal and ev.context in self._internal_contexts:
            # an agent's phone after a restart, or a transferred caller: the member list of
            # the resync's queue part tells (see _Held)
            self._held[ev.uniqueid] = _Held(ev.channel, ev.context, now)
        call = self._new_call(ev, started, adopted=True, internal=internal, out=out)
        call.last_seen = now
        call.bridged = bool(ev.bridge_id)
        if ev.application.lower() == "queue" and ev.application_data:
            queue = ev.application_data.split(",", 1)[0]
            call.queue = queue
            call.queues.append(queue)
            if not ev.bridge_id:
                call.in_queue = queue  # join time unknown here; QueueStatus may tell it
        out[-1] = CallStarted(call.record())
        return out


def _pop_stint(call: _Call, ev: AgentCompleted) -> _Stint | None:
    """The member connection `ev` ends: the one of its Dest leg, else the member's oldest.
    AgentComplete may name another leg than AgentConnect did (a Local member's is the phone
    channel optimised in) or none at all (the member snapshot was gone)."""
    stint = call.member_stints.pop(ev.dest_uniqueid, None)
    if stint is not None:
        return stint
    member = (ev.queue, ev.interface)
    for leg, open_stint in call.member_stints.items():
        if open_stint[0] == member:
            del call.member_stints[leg]
            return open_stint
    return None


def _device(channel: str) -> str:
    """The device of a channel: PJSIP/1001-0000002a -> PJSIP/1001."""
    return channel.rsplit("-", 1)[0]


def _member(ev: AgentEvent) -> str:
    return ev.member_name or ev.interface


def _leg(ev: AgentEvent) -> tuple[str, str, str, str, str]:
    return (ev.queue, ev.interface, ev.member_name, ev.dest_channel, ev.dest_uniqueid)
