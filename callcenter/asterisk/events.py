"""Typed AMI events: the one subscription table from Asterisk event names to decoders.

Contract: `decode_event(msg)` returns a frozen dataclass for the events the call and agent
trackers use, and `None` for every other message (responses, unknown or irrelevant events,
and VarSet of a variable outside `TRACKED_VARIABLES`: Asterisk sends one for every variable any
channel sets, BRIDGEPEER, PLAYBACKSTATUS, AGISTATUS and so on).
Asterisk event names appear here and nowhere else in the project. Decoding never raises on bad
input: a missing or malformed number becomes `None` (or 0 for counters), never an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from operator import itemgetter
from typing import Any, Final, Literal, Protocol, cast, get_args

from callcenter.asterisk.message import AmiMessage
from callcenter.fastinit import store_by_slots

_Fields = dict[str, str]  # lower-cased header name -> first value

# Channel variables the trackers read (names without the `_`/`__` inheritance prefix).
TRACKED_VARIABLES = frozenset({"MIXMONITOR_FILENAME"})
TRACKED_VARIABLE_PREFIXES = ("CALLCENTER_", "IVR_", "QUEUE_")


def variable_name(raw: str) -> str:
    """A VarSet variable without its inheritance prefix (`__CALLCENTER_DID` -> CALLCENTER_DID)."""
    return raw.lstrip("_")


def is_tracked_variable(raw: str) -> bool:
    name = variable_name(raw)
    return name.startswith(TRACKED_VARIABLE_PREFIXES) or name in TRACKED_VARIABLES


UNKNOWN_CALLER = "<unknown>"
# Asterisk prints an empty caller id as `<unknown>` (snapshots) or `unknown` (QueueEntry).
_UNKNOWN_CIDS = frozenset((UNKNOWN_CALLER, "unknown", ""))


def _clean_cid(value: str) -> str:
    return "" if value in _UNKNOWN_CIDS else value


def _int(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value)  # int() ignores surrounding blanks itself
    except ValueError:
        return None


def _count(value: str | None) -> int:
    n = _int(value)
    return n if n is not None else 0


def _float(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "yes", "true", "y", "t", "on")


def _hms(value: str | None) -> int | None:
    """CoreShowChannel Duration is `HH:MM:SS` (hours may exceed 24)."""
    if not value:
        return None
    parts = value.strip().split(":")
    if len(parts) != 3:
        return None
    try:
        h, m, s = (int(p) for p in parts)
    except ValueError:
        return None
    if h < 0 or not 0 <= m < 60 or not 0 <= s < 60:
        return None
    return h * 3600 + m * 60 + s


# ---------------------------------------------------------------------------------------------
# Channel events (they carry the channel snapshot block)


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """Fields of the channel snapshot block that the trackers use."""

    channel: str
    uniqueid: str
    linkedid: str
    state: int | None  # 0 Down, 4 Ring, 5 Ringing, 6 Up, ...
    caller_number: str  # "" when Asterisk says <unknown>
    caller_name: str
    context: str
    exten: str


@dataclass(frozen=True, slots=True)
class ChannelCreated(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True)
class ChannelStateChanged(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True)
class CallerIdChanged(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True)
class DialplanStep(ChannelEvent):
    application: str
    app_data: str


@dataclass(frozen=True, slots=True)
class VariableSet(ChannelEvent):
    variable: str  # as sent: inherited variables keep their leading `_`/`__`
    value: str


@dataclass(frozen=True, slots=True)
class HangupRequested(ChannelEvent):
    cause: int | None
    soft: bool  # True: an internal soft hangup (bridge, AGI HANGUP, AMI Hangup); False: remote


@dataclass(frozen=True, slots=True)
class ChannelHungUp(ChannelEvent):
    cause: int | None
    cause_text: str


@dataclass(frozen=True, slots=True)
class AgiCommandStarted(ChannelEvent):
    command_id: str
    command: str


@dataclass(frozen=True, slots=True)
class BridgeEntered(ChannelEvent):
    bridge_uniqueid: str


@dataclass(frozen=True, slots=True)
class QueueCallerJoined(ChannelEvent):
    queue: str
    position: int | None
    count: int | None


@dataclass(frozen=True, slots=True)
class QueueCallerLeft(ChannelEvent):
    queue: str
    position: int | None
    count: int | None


@dataclass(frozen=True, slots=True)
class QueueCallerAbandoned(ChannelEvent):
    queue: str
    position: int | None
    original_position: int | None
    hold_time: int | None  # seconds


@dataclass(frozen=True, slots=True)
class AgentEvent(ChannelEvent):
    """Queue agent events: the caller's snapshot, the member leg (Dest*) and the member."""

    dest_channel: str
    dest_uniqueid: str
    dest_linkedid: str
    queue: str
    interface: str
    member_name: str


@dataclass(frozen=True, slots=True)
class AgentCalled(AgentEvent):
    pass


@dataclass(frozen=True, slots=True)
class AgentRingNoAnswer(AgentEvent):
    ring_time_ms: int | None  # milliseconds here (seconds in AgentConnected)


@dataclass(frozen=True, slots=True)
class AgentConnected(AgentEvent):
    hold_time: int | None  # seconds (the Asterisk docs wrongly say "since 1970")
    ring_time: int | None  # seconds


@dataclass(frozen=True, slots=True)
class AgentCompleted(AgentEvent):
    hold_time: int | None
    talk_time: int | None
    reason: str  # caller | agent | transfer


@dataclass(frozen=True, slots=True)
class AgentDumped(AgentEvent):
    pass


@dataclass(frozen=True, slots=True)
class ChannelListed(ChannelEvent):
    """One live channel of a resync (CoreShowChannels item)."""

    application: str
    application_data: str
    duration_seconds: int | None
    bridge_id: str


# ---------------------------------------------------------------------------------------------
# Transfers


@dataclass(frozen=True, slots=True)
class TransferParty:
    channel: str
    uniqueid: str
    linkedid: str
    caller_number: str
    connected_number: str
    state: int | None  # channel state (6 Up): a transfer target may still be ringing


@dataclass(frozen=True, slots=True)
class BlindTransferred:
    result: str
    transferer: TransferParty
    transferee: TransferParty | None
    context: str
    extension: str
    is_external: bool


@dataclass(frozen=True, slots=True)
class AttendedTransferred:
    result: str
    orig_transferer: TransferParty
    second_transferer: TransferParty | None
    transferee: TransferParty | None
    target: TransferParty | None
    dest_type: str  # Bridge | App | Link | Threeway | Fail
    dest_app: str


# ---------------------------------------------------------------------------------------------
# Queue members and queue status (no channel snapshot)

MemberChange = Literal["status", "added", "removed", "pause", "penalty", "ringinuse", "listed"]


@dataclass(frozen=True, slots=True)
class QueueMemberChanged:
    change: MemberChange
    queue: str
    member_name: str
    interface: str
    state_interface: str
    membership: str
    penalty: int
    calls_taken: int
    last_call: int
    last_pause: int
    login_time: int
    in_call: bool
    status: int  # device state 0-8: 0 UNKNOWN 1 NOT_INUSE 2 INUSE 3 BUSY 4 INVALID ...
    paused: bool
    paused_reason: str
    wrapup_time: int


@dataclass(frozen=True, slots=True)
class QueueParamsListed:
    queue: str
    max: int
    strategy: str
    calls: int
    holdtime: int
    talktime: int
    completed: int
    abandoned: int
    service_level: int
    service_level_perf: float | None
    weight: int


@dataclass(frozen=True, slots=True)
class QueueEntryListed:
    queue: str
    position: int | None
    channel: str
    uniqueid: str
    caller_number: str
    caller_name: str
    wait_seconds: int | None


AmiEvent = (
    ChannelCreated
    | ChannelStateChanged
    | CallerIdChanged
    | DialplanStep
    | VariableSet
    | HangupRequested
    | ChannelHungUp
    | AgiCommandStarted
    | BridgeEntered
    | QueueCallerJoined
    | QueueCallerLeft
    | QueueCallerAbandoned
    | AgentCalled
    | AgentRingNoAnswer
    | AgentConnected
    | AgentCompleted
    | AgentDumped
    | ChannelListed
    | BlindTransferred
    | AttendedTransferred
    | QueueMemberChanged
    | QueueParamsListed
    | QueueEntryListed
)


for _event_class in (*get_args(AmiEvent), TransferParty):
    store_by_slots(_event_class)  # events are built for every AMI event


# ---------------------------------------------------------------------------------------------
# Decoders


_STATES = {str(n): n for n in range(16)}  # ChannelState as sent: one or two digits


def _state(raw: str) -> int | None:
    state = _STATES.get(raw)
    return state if state is not None else _int(raw)


def _snap(f: _Fields) -> tuple[str, str, str, int | None, str, str, str, str]:
    get = f.get
    raw_state = get("channelstate")
    state = _state(raw_state) if raw_state is not None else None
    number = get("calleridnum", "")
    name = get("calleridname", "")
    return (
        get("channel", ""),
        get("uniqueid", ""),
        get("linkedid", ""),
        state,
        "" if number in _UNKNOWN_CIDS else number,  # _clean_cid, inlined: every event has two
        "" if name in _UNKNOWN_CIDS else name,
        get("context", ""),
        get("exten", ""),
    )


def _agent(f: _Fields) -> tuple[str, str, str, str, str, str]:
    return (
        f.get("destchannel", ""),
        f.get("destuniqueid", ""),
        f.get("destlinkedid", ""),
        f.get("queue", ""),
        f.get("interface", ""),
        f.get("membername", ""),
    )


def _party(f: _Fields, prefix: str) -> TransferParty | None:
    channel = f.get(prefix + "channel")
    uniqueid = f.get(prefix + "uniqueid")
    if channel is None and uniqueid is None:
        return None
    return TransferParty(
        channel=channel or "",
        uniqueid=uniqueid or "",
        linkedid=f.get(prefix + "linkedid", ""),
        caller_number=_clean_cid(f.get(prefix + "calleridnum", "")),
        connected_number=_clean_cid(f.get(prefix + "connectedlinenum", "")),
        state=_state(state) if (state := f.get(prefix + "channelstate")) is not None else None,
    )


def _member(change: MemberChange, f: _Fields) -> QueueMemberChanged:
    # QueueMember list items say Name/Location where the events say MemberName/Interface.
    return QueueMemberChanged(
        change=change,
        queue=f.get("queue", ""),
        member_name=f.get("membername") or f.get("name", ""),
        interface=f.get("interface") or f.get("location", ""),
        state_interface=f.get("stateinterface", ""),
        membership=f.get("membership", ""),
        penalty=_count(f.get("penalty")),
        calls_taken=_count(f.get("callstaken")),
        last_call=_count(f.get("lastcall")),
        last_pause=_count(f.get("lastpause")),
        login_time=_count(f.get("logintime")),
        in_call=_bool(f.get("incall")),
        status=_count(f.get("status")),
        paused=_bool(f.get("paused")),
        paused_reason=f.get("pausedreason", ""),
        wrapup_time=_count(f.get("wrapuptime")),
    )


def _member_decoder(change: MemberChange) -> Callable[[_Fields], AmiEvent]:
    return lambda f: _member(change, f)


def _hangup_request(soft: bool) -> Callable[[_Fields], AmiEvent]:
    return lambda f: HangupRequested(*_snap(f), cause=_int(f.get("cause")), soft=soft)


_DECODERS: dict[str, Callable[[_Fields], AmiEvent | None]] = {
    "Newchannel": lambda f: ChannelCreated(*_snap(f)),
    "Newstate": lambda f: ChannelStateChanged(*_snap(f)),
    "NewCallerid": lambda f: CallerIdChanged(*_snap(f)),
    "Newexten": lambda f: DialplanStep(
        *_snap(f), application=f.get("application", ""), app_data=f.get("appdata", "")
    ),
    "VarSet": lambda f: (
        VariableSet(*_snap(f), variable=f.get("variable", ""), value=f.get("value", ""))
        if is_tracked_variable(f.get("variable", ""))
        else None
    ),
    "HangupRequest": _hangup_request(False),
    "SoftHangupRequest": _hangup_request(True),
    "Hangup": lambda f: ChannelHungUp(
        *_snap(f), cause=_int(f.get("cause")), cause_text=f.get("cause-txt", "")
    ),
    "AGIExecStart": lambda f: AgiCommandStarted(
        *_snap(f), command_id=f.get("commandid", ""), command=f.get("command", "")
    ),
    "BridgeEnter": lambda f: BridgeEntered(*_snap(f), bridge_uniqueid=f.get("bridgeuniqueid", "")),
    "QueueCallerJoin": lambda f: QueueCallerJoined(
        *_snap(f),
        queue=f.get("queue", ""),
        position=_int(f.get("position")),
        count=_int(f.get("count")),
    ),
    "QueueCallerLeave": lambda f: QueueCallerLeft(
        *_snap(f),
        queue=f.get("queue", ""),
        position=_int(f.get("position")),
        count=_int(f.get("count")),
    ),
    "QueueCallerAbandon": lambda f: QueueCallerAbandoned(
        *_snap(f),
        queue=f.get("queue", ""),
        position=_int(f.get("position")),
        original_position=_int(f.get("originalposition")),
        hold_time=_int(f.get("holdtime")),
    ),
    "AgentCalled": lambda f: AgentCalled(*_snap(f), *_agent(f)),
    "AgentRingNoAnswer": lambda f: AgentRingNoAnswer(
        *_snap(f), *_agent(f), ring_time_ms=_int(f.get("ringtime"))
    ),
    "AgentConnect": lambda f: AgentConnected(
        *_snap(f),
        *_agent(f),
        hold_time=_int(f.get("holdtime")),
        ring_time=_int(f.get("ringtime")),
    ),
    "AgentComplete": lambda f: AgentCompleted(
        *_snap(f),
        *_agent(f),
        hold_time=_int(f.get("holdtime")),
        talk_time=_int(f.get("talktime")),
        reason=f.get("reason", ""),
    ),
    "AgentDump": lambda f: AgentDumped(*_snap(f), *_agent(f)),
    "CoreShowChannel": lambda f: ChannelListed(
        *_snap(f),
        application=f.get("application", ""),
        application_data=f.get("applicationdata", ""),
        duration_seconds=_hms(f.get("duration")),
        bridge_id=f.get("bridgeid", ""),
    ),
    "BlindTransfer": lambda f: BlindTransferred(
        result=f.get("result", ""),
        transferer=_party(f, "transferer") or TransferParty("", "", "", "", "", None),
        transferee=_party(f, "transferee"),
        context=f.get("context", ""),
        extension=f.get("extension", ""),
        is_external=_bool(f.get("isexternal")),
    ),
    "AttendedTransfer": lambda f: AttendedTransferred(
        result=f.get("result", ""),
        orig_transferer=_party(f, "origtransferer") or TransferParty("", "", "", "", "", None),
        second_transferer=_party(f, "secondtransferer"),
        transferee=_party(f, "transferee"),
        target=_party(f, "transfertarget"),
        dest_type=f.get("desttype", ""),
        dest_app=f.get("destapp", ""),
    ),
    "QueueMemberStatus": _member_decoder("status"),
    "QueueMemberAdded": _member_decoder("added"),
    "QueueMemberRemoved": _member_decoder("removed"),
    "QueueMemberPause": _member_decoder("pause"),
    "QueueMemberPenalty": _member_decoder("penalty"),
    "QueueMemberRinginuse": _member_decoder("ringinuse"),
    "QueueMember": _member_decoder("listed"),
    "QueueParams": lambda f: QueueParamsListed(
        queue=f.get("queue", ""),
        max=_count(f.get("max")),
        strategy=f.get("strategy", ""),
        calls=_count(f.get("calls")),
        holdtime=_count(f.get("holdtime")),
        talktime=_count(f.get("talktime")),
        completed=_count(f.get("completed")),
        abandoned=_count(f.get("abandoned")),
        service_level=_count(f.get("servicelevel")),
        service_level_perf=_float(f.get("servicelevelperf")),
        weight=_count(f.get("weight")),
    ),
    "QueueEntry": lambda f: QueueEntryListed(
        queue=f.get("queue", ""),
        position=_int(f.get("position")),
        channel=f.get("channel", ""),
        uniqueid=f.get("uniqueid", ""),
        caller_number=_clean_cid(f.get("calleridnum", "")),
        caller_name=_clean_cid(f.get("calleridname", "")),
        wait_seconds=_int(f.get("wait")),
    ),
}


class ResyncSource(Protocol):
    """What the trackers need from the AMI client's resync snapshot (taken after each connect)."""

    @property
    def channels(self) -> Sequence[AmiMessage]: ...  # CoreShowChannels items

    @property
    def queue_status(self) -> Sequence[AmiMessage]: ...  # QueueStatus items


def decode_all(messages: Iterable[AmiMessage]) -> list[AmiEvent]:
    """Decode the messages of a resync list, dropping the ones outside the table."""
    out: list[AmiEvent] = []
    for msg in messages:
        ev = decode_event(msg)
        if ev is not None:
            out.append(ev)
    return out


SUBSCRIBED_EVENTS: frozenset[str] = frozenset(_DECODERS)
"""The event names the trackers use (for an AMI `Events`/filter setup, if wanted)."""


# -- the fast path ------------------------------------------------------------------------------
# Events of one kind repeat the same header names in the same order, so for each (event, header
# names) seen, the positions of the headers a decoder needs are worked out once; then decoding
# picks those values by position instead of building a dict of every header. A header layout
# that lacks one of them goes the dict way (`_decode_fields`), which handles defaults.
# The caches are emptied when full, so odd streams cost speed, never memory.


class _DictWay(Enum):
    DICT_WAY = "dict way"


DICT_WAY: Final = _DictWay.DICT_WAY
_Build = Callable[[tuple[str, ...]], "AmiEvent | _DictWay | None"]

_PLANS_MAX = 256
_UNPLANNED: Final[Any] = object()  # a layout not seen yet (None: seen, and no plan fits)
_name_of = itemgetter(0)
_value_of = itemgetter(1)
_Values = tuple[str, ...]
_Picker = Callable[
    [tuple[tuple[str, str], ...]], tuple[tuple[str, str], ...]
]  # headers by position


def _snapv(v: _Values) -> tuple[str, str, str, int | None, str, str, str, str]:
    number, name = v[4], v[5]
    return (
        v[0],
        v[1],
        v[2],
        _state(v[3]),
        "" if number in _UNKNOWN_CIDS else number,
        "" if name in _UNKNOWN_CIDS else name,
        v[6],
        v[7],
    )


def _agentv(v: _Values) -> tuple[str, str, str, str, str, str]:
    return v[8], v[9], v[10], v[11], v[12], v[13]


_SNAP_KEYS = (
    "channel", "uniqueid", "linkedid", "channelstate", "calleridnum", "calleridname", "context",
    "exten",
)  # fmt: skip
_AGENT_KEYS = (*_SNAP_KEYS, "destchannel", "destuniqueid", "destlinkedid", "queue", "interface",
               "membername")  # fmt: skip


class _FastDecoder:
    """Decodes one event kind from header values picked by position (see above)."""

    __slots__ = ("build", "keys", "plans")

    def __init__(self, keys: tuple[str, ...], build: _Build) -> None:
        """`build` returns the event, None (not for the trackers) or DICT_WAY (decode this one
        through the dict of its headers instead)."""
        self.keys = keys
        self.build = build
        self.plans: dict[tuple[str, ...], _Picker | None] = {}

    def plan(self, names: tuple[str, ...]) -> _Picker | None:
        first: dict[str, int] = {}
        for i, name in enumerate(names):
            first.setdefault(name.lower(), i)  # a repeated header: the first one wins
        positions = [first.get(key) for key in self.keys]
        picker = None
        if None not in positions:
            picker = cast(_Picker, itemgetter(*cast(list[int], positions)))
        if len(self.plans) >= _PLANS_MAX:
            self.plans.clear()
        self.plans[names] = picker
        return picker


_MEMBER_KEYS = (
    "queue", "membername", "interface", "stateinterface", "membership", "penalty",
    "callstaken", "lastcall", "lastpause", "logintime", "incall", "status", "paused",
    "pausedreason", "wrapuptime",
)  # fmt: skip


_MEMBER_EVENTS: tuple[tuple[str, MemberChange], ...] = (
    ("QueueMemberStatus", "status"),
    ("QueueMemberAdded", "added"),
    ("QueueMemberRemoved", "removed"),
    ("QueueMemberPause", "pause"),
    ("QueueMemberPenalty", "penalty"),
    ("QueueMemberRinginuse", "ringinuse"),
)


def _member_fast(change: MemberChange) -> _Build:
    def build(v: _Values) -> AmiEvent | _DictWay:
        if not v[1] or not v[2]:
            return (
                DICT_WAY  # an empty MemberName/Interface: the dict way falls back to Name/Location
            )
        return QueueMemberChanged(
            change, v[0], v[1], v[2], v[3], v[4], _count(v[5]), _count(v[6]), _count(v[7]),
            _count(v[8]), _count(v[9]), _bool(v[10]), _count(v[11]), _bool(v[12]), v[13],
            _count(v[14]),
        )  # fmt: skip

    return build


_FAST: dict[str, _FastDecoder] = {
    "Newchannel": _FastDecoder(_SNAP_KEYS, lambda v: ChannelCreated(*_snapv(v))),
    "Newstate": _FastDecoder(_SNAP_KEYS, lambda v: ChannelStateChanged(*_snapv(v))),
    "NewCallerid": _FastDecoder(_SNAP_KEYS, lambda v: CallerIdChanged(*_snapv(v))),
    "Newexten": _FastDecoder(
        (*_SNAP_KEYS, "application", "appdata"), lambda v: DialplanStep(*_snapv(v), v[8], v[9])
    ),
    "VarSet": _FastDecoder(
        (*_SNAP_KEYS, "variable", "value"),
        lambda v: VariableSet(*_snapv(v), v[8], v[9]) if is_tracked_variable(v[8]) else None,
    ),
    "HangupRequest": _FastDecoder(
        (*_SNAP_KEYS, "cause"), lambda v: HangupRequested(*_snapv(v), _int(v[8]), False)
    ),
    "SoftHangupRequest": _FastDecoder(
        (*_SNAP_KEYS, "cause"), lambda v: HangupRequested(*_snapv(v), _int(v[8]), True)
    ),
    "Hangup": _FastDecoder(
        (*_SNAP_KEYS, "cause", "cause-txt"),
        lambda v: ChannelHungUp(*_snapv(v), _int(v[8]), v[9]),
    ),
    "AGIExecStart": _FastDecoder(
        (*_SNAP_KEYS, "commandid", "command"),
        lambda v: AgiCommandStarted(*_snapv(v), v[8], v[9]),
    ),
    "BridgeEnter": _FastDecoder(
        (*_SNAP_KEYS, "bridgeuniqueid"), lambda v: BridgeEntered(*_snapv(v), v[8])
    ),
    "QueueCallerJoin": _FastDecoder(
        (*_SNAP_KEYS, "queue", "position", "count"),
        lambda v: QueueCallerJoined(*_snapv(v), v[8], _int(v[9]), _int(v[10])),
    ),
    "QueueCallerLeave": _FastDecoder(
        (*_SNAP_KEYS, "queue", "position", "count"),
        lambda v: QueueCallerLeft(*_snapv(v), v[8], _int(v[9]), _int(v[10])),
    ),
    "QueueCallerAbandon": _FastDecoder(
        (*_SNAP_KEYS, "queue", "position", "originalposition", "holdtime"),
        lambda v: QueueCallerAbandoned(*_snapv(v), v[8], _int(v[9]), _int(v[10]), _int(v[11])),
    ),
    "AgentCalled": _FastDecoder(_AGENT_KEYS, lambda v: AgentCalled(*_snapv(v), *_agentv(v))),
    "AgentDump": _FastDecoder(_AGENT_KEYS, lambda v: AgentDumped(*_snapv(v), *_agentv(v))),
    "AgentRingNoAnswer": _FastDecoder(
        (*_AGENT_KEYS, "ringtime"),
        lambda v: AgentRingNoAnswer(*_snapv(v), *_agentv(v), _int(v[14])),
    ),
    "AgentConnect": _FastDecoder(
        (*_AGENT_KEYS, "holdtime", "ringtime"),
        lambda v: AgentConnected(*_snapv(v), *_agentv(v), _int(v[14]), _int(v[15])),
    ),
    "AgentComplete": _FastDecoder(
        (*_AGENT_KEYS, "holdtime", "talktime", "reason"),
        lambda v: AgentCompleted(*_snapv(v), *_agentv(v), _int(v[14]), _int(v[15]), v[16]),
    ),
    **{event: _FastDecoder(_MEMBER_KEYS, _member_fast(change)) for event, change in _MEMBER_EVENTS},
}

# Header names as sent -> the same names lower-cased, in reverse order (the dict way).
_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _decode_fields(
    decoder: Callable[[_Fields], AmiEvent | None], names: tuple[str, ...], values: _Values
) -> AmiEvent | None:
    keys = _KEYS.get(names)
    if keys is None:
        if len(_KEYS) >= _PLANS_MAX:
            _KEYS.clear()
        keys = _KEYS[names] = tuple(name.lower() for name in reversed(names))
    # reversed: when a header repeats (ChanVariable), the first one wins
    return decoder(dict(zip(keys, reversed(values), strict=True)))


def decode_event(msg: AmiMessage) -> AmiEvent | None:
    """Decode `msg` if it is an event in the subscription table; otherwise return None cheaply."""
    headers = msg.headers
    if not headers:
        return None
    first_name, event_name = headers[0]
    decoder = _DECODERS.get(event_name)
    if decoder is None or (first_name != "Event" and first_name.lower() != "event"):
        return None
    names = tuple(map(_name_of, headers))
    fast = _FAST.get(event_name)
    if fast is not None:
        picker = fast.plans.get(names, _UNPLANNED)
        if picker is _UNPLANNED:
            picker = fast.plan(names)
        if picker is not None:
            event = fast.build(tuple(map(_value_of, picker(headers))))
            if event is not DICT_WAY:
                return event
    return _decode_fields(decoder, names, tuple(map(_value_of, headers)))
