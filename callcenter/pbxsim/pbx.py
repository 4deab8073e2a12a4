"""Core model of the Asterisk emulator: clocks, id sources, channels and the AMI events they emit.

Everything that makes output non-deterministic (wall clock, uniqueid/channel counters, UUIDs,
SIP call-ids, AGI CommandIds) is injectable, so a scenario can reproduce a transcript byte for byte.
Field orders follow /work/shared/asterisk/PROTOCOL.md §2 (Asterisk 20, AMI 9.0.0).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time as _time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Protocol

from callcenter.pbxsim.wire import escape_c

Fields = list[tuple[str, str]]

STATE_DESC = {
    0: "Down",
    1: "Rsrvd",
    2: "OffHook",
    3: "Dialing",
    4: "Ring",
    5: "Ringing",
    6: "Up",
    7: "Busy",
    8: "Dialing Offhook",
    9: "Pre-ring",
    10: "Mute",
}
STATE_DOWN, STATE_RING, STATE_RINGING, STATE_UP, STATE_BUSY = 0, 4, 5, 6, 7

CAUSE_TXT = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    3: "No route to destination",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    20: "Subscriber absent",
    21: "Call Rejected",
    26: "Answered elsewhere",
    27: "Destination out of order",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    41: "Temporary failure",
    127: "Interworking, unspecified",
}

UNKNOWN = "<unknown>"


def parse_channelvars(names: str | Iterable[str]) -> list[str]:
    """`"A,B"` or `["A", "B"]` -> `["A", "B"]`: blanks around names dropped, empty entries
    skipped. A name with `=`, `,` or blanks inside is refused (ValueError)."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for raw in items:
        name = raw.strip()
        if not name:
            continue
        if "=" in name or "," in name or any(ch.isspace() for ch in name):
            raise ValueError(f"bad channel variable name for channelvars: {raw!r}")
        out.append(name)
    return out


def escape_ctl(value: str) -> str:
    """Only CR/LF escaped: for raw protocol text (AGI command lines) that is not C-escaped."""
    return value.replace("\r", "\\r").replace("\n", "\\n")


class EventSink(Protocol):
    """What the core needs from the AMI server: `AmiServer.publish`."""

    def __call__(self, name: str, klass: str, fields: Sequence[tuple[str, str]]) -> object: ...


def null_sink(name: str, klass: str, fields: Sequence[tuple[str, str]]) -> None:
    """An EventSink that drops everything (AGI benchmark without AMI)."""


# --------------------------------------------------------------------------- clocks


class Clock(Protocol):
    """Simulated time. `time()` is epoch seconds; `sleep()` takes simulated seconds."""

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """Wall-clock based time running `speed` times faster than real time (1.0 = real time)."""

    def __init__(self, *, speed: float = 1.0, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._start = _time.time() if start is None else start
        self._m0 = _time.monotonic()

    def time(self) -> float:
        return self._start + (_time.monotonic() - self._m0) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class VirtualClock:
    """Discrete-event clock for deterministic scenarios.

    Sleepers wait on futures; when the event loop has been idle for a few iterations, time jumps
    to the earliest pending wake-up. Socket I/O does not advance time. `freeze()` stops the
    jumps (only sleepers already due wake up) until `thaw()`.
    """

    def __init__(self, *, start: float = 1715681702.0, idle_spins: int = 30) -> None:
        self._now = start
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._idle_spins = idle_spins
        self._driver: asyncio.Task[None] | None = None
        self._frozen = False
        self._kick: asyncio.Event | None = None

    def time(self) -> float:
        return self._now

    def set_time(self, value: float) -> None:
        """Jump forward (never backwards); sleepers now due wake up in order."""
        self._now = max(self._now, value)
        self._poke()

    def freeze(self, at: float | None = None) -> None:
        if at is not None:
            self._now = max(self._now, at)
        self._frozen = True
        self._poke()

    def thaw(self) -> None:
        self._frozen = False
        self._poke()

    def _poke(self) -> None:
        if self._kick is not None:
            self._kick.set()

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (self._now + max(0.0, seconds), next(self._seq), fut))
        if self._kick is None:
            self._kick = asyncio.Event()
        self._kick.set()
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive())
        await fut

    async def _drive(self) -> None:
        assert self._kick is not None
        while self._heap:
            marker = len(self._heap), self._heap[0][1]
            for _ in range(self._idle_spins):
                await asyncio.sleep(0)
            while self._heap and self._heap[0][2].done():
                heapq.heappop(self._heap)
            if not self._heap or (len(self._heap), self._heap[0][1]) != marker:
                continue
            if self._frozen and self._heap[0][0] > self._now:
                self._kick.clear()
                await self._kick.wait()
                continue
            wake, _, fut = heapq.heappop(self._heap)
            self._now = max(self._now, wake)
            fut.set_result(None)


# --------------------------------------------------------------------------- ids


class GlibcRandom:
    """glibc random() (TYPE_3). Asterisk's ast_random() uses it; AGI CommandIds come from it."""

    def __init__(self, seed: int = 1) -> None:
        r = [seed & 0xFFFFFFFF]
        for i in range(1, 31):
            hi, lo = divmod(r[i - 1], 127773)
            word = 16807 * lo - 2836 * hi
            if word < 0:
                word += 2147483647
            r.append(word)
        r.extend(r[0:3])
        self._r = r
        for _ in range(310):
            self._step()

    def _step(self) -> int:
        v = (self._r[-31] + self._r[-3]) & 0xFFFFFFFF
        self._r.append(v)
        del self._r[0]
        return v

    def next(self) -> int:
        return self._step() >> 1


@dataclass
class Ids:
    """Counters and factories behind Uniqueid, channel names, bridge ids and call-ids."""

    uniqueid_counter: int = 1
    channel_counter: int = 0
    command_ids: GlibcRandom = field(default_factory=GlibcRandom)
    uuid_factory: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))
    call_id_factory: Callable[[str], str] | None = None
    thread_ids: Iterator[int] = field(
        default_factory=lambda: itertools.count(139780010514176, 8392704)
    )

    #: explicit sequences (scenario replay); the counters are used once they run out
    uniqueid_numbers: Iterator[int] | None = None
    channel_numbers: Iterator[int] | None = None

    def uniqueid(self, now: float) -> str:
        n = next(self.uniqueid_numbers, None) if self.uniqueid_numbers is not None else None
        if n is None:
            n = self.uniqueid_counter
            self.uniqueid_counter += 1
        return f"{int(now)}.{n}"

    def channel_suffix(self) -> str:
        n = next(self.channel_numbers, None) if self.channel_numbers is not None else None
        if n is None:
            n = self.channel_counter
            self.channel_counter += 1
        return f"{n:08x}"

    def bridge_id(self) -> str:
        return self.uuid_factory()

    def call_id(self, channel_name: str) -> str:
        if self.call_id_factory is not None:
            return self.call_id_factory(channel_name)
        return self.uuid_factory()

    def command_id(self) -> str:
        return str(self.command_ids.next())


# --------------------------------------------------------------------------- channels


class ChannelHungUp(Exception):
    """Raised inside a channel's dialplan when the channel is gone."""


@dataclass(eq=False)
class Channel:
    name: str
    tech: str
    endpoint: str
    uniqueid: str
    linkedid: str
    context: str
    exten: str
    created: float
    priority: int = 1
    state: int = STATE_DOWN
    caller_num: str = ""
    caller_name: str = ""
    connected_num: str = ""
    connected_name: str = ""
    language: str = "en"
    accountcode: str = ""
    dnid: str = ""
    pvt_call_id: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    #: variables set with `_` (1: the next channel only) or `__` (2: every later one) prefixes
    inheritable: dict[str, int] = field(default_factory=dict)
    application: str = ""
    app_data: str = ""
    bridge_id: str = ""
    hangup_cause: int = 0
    answered_at: float | None = None
    #: set when the far end hangs up (BYE) or the channel is hung up by AMI; carries the cause
    hangup_requested: asyncio.Event = field(default_factory=asyncio.Event)
    #: a Redirect (blind transfer) target: (context, exten, priority)
    redirect_to: tuple[str, str, int] | None = None
    redirected: asyncio.Event = field(default_factory=asyncio.Event)
    gone: bool = False
    #: CDR bookkeeping: the last dialed/bridged peer channel
    dest_channel: str = ""
    #: manager.conf `channelvars` (the Pbx's list, shared: a change applies to later events)
    manager_vars: Sequence[str] = ()

    def snapshot(self, prefix: str = "") -> Fields:
        """ast_manager_build_channel_state_string_prefix(): the channel block, every name
        prefixed (`Dest` for the dialled party), ending with its `<prefix>ChanVariable` lines."""
        p = prefix
        block = [
            (f"{p}Channel", self.name),
            (f"{p}ChannelState", str(self.state)),
            (f"{p}ChannelStateDesc", STATE_DESC.get(self.state, "Unknown")),
            (f"{p}CallerIDNum", escape_c(self.caller_num) or UNKNOWN),
            (f"{p}CallerIDName", escape_c(self.caller_name) or UNKNOWN),
            (f"{p}ConnectedLineNum", escape_c(self.connected_num) or UNKNOWN),
            (f"{p}ConnectedLineName", escape_c(self.connected_name) or UNKNOWN),
            (f"{p}Language", self.language),
            (f"{p}AccountCode", self.accountcode),
            (f"{p}Context", self.context),
            (f"{p}Exten", self.exten),
            (f"{p}Priority", str(self.priority)),
            (f"{p}Uniqueid", self.uniqueid),
            (f"{p}Linkedid", self.linkedid),
        ]
        if self.manager_vars:
            block.extend(self.chan_variables(prefix))
        return block

    def chan_variables(self, prefix: str = "") -> Fields:
        """One `ChanVariable: name=value` per channelvars entry, in configured order; an unset
        variable gives an empty value. Functions (`CALLERID(num)`) are evaluated like get_var."""
        # Asterisk writes the value raw; CR/LF are escaped so a value cannot end the message.
        return [
            (f"{prefix}ChanVariable", f"{name}={escape_ctl(self.get_var(name) or '')}")
            for name in self.manager_vars
        ]

    @property
    def is_up(self) -> bool:
        return self.state == STATE_UP

    def store_var(self, name: str, value: str) -> None:
        """Set a variable as Set()/SET VARIABLE do: `_X`/`__X` are stored as X, marked for
        inheritance by the channels this one creates (a later plain `X` ends that)."""
        bare = name.lstrip("_")
        self.variables[bare] = value
        level = min(2, len(name) - len(bare))
        if level:
            self.inheritable[bare] = level
        else:
            self.inheritable.pop(bare, None)

    def inherit_from(self, parent: Channel) -> None:
        """ast_channel_inherit_variables(): `__X` is passed on as `__X`, `_X` as plain X. No
        VarSet is sent for them; they show in the new channel's ChanVariable lines."""
        for bare, level in parent.inheritable.items():
            if bare in parent.variables:
                self.variables[bare] = parent.variables[bare]
                if level == 2:
                    self.inheritable[bare] = 2

    def get_var(self, name: str) -> str | None:
        """Plain variables (inherited `_`/`__` prefixes stripped) and a few functions."""
        upper = name.upper()
        if upper == "CALLERID(NUM)":
            return self.caller_num
        if upper == "CALLERID(NAME)":
            return self.caller_name
        if upper == "EXTEN":
            return self.exten
        if upper == "CONTEXT":
            return self.context
        if upper == "UNIQUEID":
            return self.uniqueid
        if upper == "CHANNEL":
            return self.name
        return self.variables.get(name.lstrip("_"))


@dataclass(eq=False)
class Bridge:
    uniqueid: str
    channels: list[Channel] = field(default_factory=list)

    def block(self) -> Fields:
        return [
            ("BridgeUniqueid", self.uniqueid),
            ("BridgeType", "basic"),
            ("BridgeTechnology", "simple_bridge"),
            ("BridgeCreator", UNKNOWN),
            ("BridgeName", UNKNOWN),
            ("BridgeNumChannels", str(len(self.channels))),
            ("BridgeVideoSourceMode", "none"),
        ]


class Pbx:
    """The channel registry; every state change publishes the AMI event Asterisk would."""

    def __init__(
        self,
        *,
        publish: EventSink,
        clock: Clock,
        ids: Ids | None = None,
        tz: tzinfo | None = None,
        version: str = "20.5.0",
        channelvars: Iterable[str] = (),
    ) -> None:
        self.publish = publish
        self.clock = clock
        self.ids = ids or Ids()
        self.tz = tz if tz is not None else datetime.now().astimezone().tzinfo or UTC
        self.version = version
        self.channels: dict[str, Channel] = {}
        self._manager_vars: list[str] = []
        self.set_channelvars(channelvars)

    @property
    def channelvars(self) -> tuple[str, ...]:
        return tuple(self._manager_vars)

    def set_channelvars(self, names: Iterable[str]) -> None:
        """manager.conf `channelvars=` (also on reload): every channel's later events carry one
        `ChanVariable` line per name. Names are checked by `parse_channelvars`."""
        self._manager_vars[:] = parse_channelvars(names)

    # ---- helpers
    def now(self) -> float:
        return self.clock.time()

    def emit(self, name: str, klass: str, fields: Sequence[tuple[str, str]]) -> None:
        self.publish(name, klass, list(fields))

    def find(self, name_or_uniqueid: str) -> Channel | None:
        ch = self.channels.get(name_or_uniqueid)
        if ch is not None:
            return ch
        for c in self.channels.values():
            if c.uniqueid == name_or_uniqueid:
                return c
        return None

    # ---- lifecycle
    def new_channel(
        self,
        *,
        endpoint: str,
        context: str,
        exten: str,
        state: int,
        tech: str = "PJSIP",
        caller_num: str = "",
        caller_name: str = "",
        linkedid: str | None = None,
        uniqueid: str | None = None,
        language: str = "en",
        accountcode: str = "",
        dnid: str = "",
        parent: Channel | None = None,
    ) -> Channel:
        """`parent`: the channel that dials this one (Queue/Dial), whose inheritable variables
        it gets."""
        now = self.now()
        uid = uniqueid or self.ids.uniqueid(now)
        name = f"{tech}/{endpoint}-{self.ids.channel_suffix()}"
        ch = Channel(
            name=name,
            tech=tech,
            endpoint=endpoint,
            uniqueid=uid,
            linkedid=linkedid or uid,
            context=context,
            exten=exten,
            created=now,
            state=state,
            caller_num=caller_num,
            caller_name=caller_name,
            language=language,
            accountcode=accountcode,
            dnid=dnid,
            manager_vars=self._manager_vars,
        )
        ch.pvt_call_id = self.ids.call_id(name)
        if parent is not None:
            ch.inherit_from(parent)
        self.channels[name] = ch
        self.emit("Newchannel", "call", ch.snapshot())
        return ch

    def set_state(self, ch: Channel, state: int) -> None:
        if ch.state == state:
            return
        ch.state = state
        if state == STATE_UP and ch.answered_at is None:
            ch.answered_at = self.now()
        self.emit("Newstate", "call", ch.snapshot())

    def newexten(self, ch: Channel, priority: int, app: str, data: str) -> None:
        ch.priority = priority
        ch.application, ch.app_data = app, data
        self.emit(
            "Newexten",
            "dialplan",
            [*ch.snapshot(), ("Extension", ch.exten), ("Application", app), ("AppData", data)],
        )

    def set_var(self, ch: Channel, name: str, value: str) -> None:
        ch.store_var(name, value)
        self.emit(
            "VarSet",
            "dialplan",
            [*ch.snapshot(), ("Variable", name), ("Value", escape_c(value))],
        )

    def set_callerid(self, ch: Channel, num: str, name: str) -> None:
        ch.caller_num, ch.caller_name = num, name
        self.emit(
            "NewCallerid",
            "call",
            [*ch.snapshot(), ("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")],
        )

    def set_connected(self, ch: Channel, num: str, name: str) -> None:
        ch.connected_num, ch.connected_name = num, name
        self.emit("NewConnectedLine", "call", ch.snapshot())

    def dtmf(self, ch: Channel, digit: str, duration_ms: int) -> None:
        self.emit(
            "DTMFBegin", "dtmf", [*ch.snapshot(), ("Digit", digit), ("Direction", "Received")]
        )
        self.emit(
            "DTMFEnd",
            "dtmf",
            [
                *ch.snapshot(),
                ("Digit", digit),
                ("DurationMs", str(duration_ms)),
                ("Direction", "Received"),
            ],
        )

    def moh_start(self, ch: Channel, klass: str = "default") -> None:
        self.emit("MusicOnHoldStart", "call", [*ch.snapshot(), ("Class", klass)])

    def moh_stop(self, ch: Channel) -> None:
        self.emit("MusicOnHoldStop", "call", ch.snapshot())

    def request_hangup(self, ch: Channel, cause: int = 16, *, publish: bool = True) -> None:
        """The far end hung up (BYE) or a hangup was requested: HangupRequest, then wake waiters."""
        if ch.gone or ch.hangup_requested.is_set():
            return
        ch.hangup_cause = cause
        if publish:
            self.emit("HangupRequest", "call", [*ch.snapshot(), ("Cause", str(cause))])
        ch.hangup_requested.set()

    def hangup(self, ch: Channel, cause: int | None = None) -> None:
        if ch.gone:
            return
        if cause is not None:
            ch.hangup_cause = cause
        ch.gone = True
        ch.hangup_requested.set()
        self.channels.pop(ch.name, None)
        c = ch.hangup_cause
        self.emit(
            "Hangup",
            "call",
            [*ch.snapshot(), ("Cause", str(c)), ("Cause-txt", CAUSE_TXT.get(c, "Unknown"))],
        )

    # ---- dialing
    def dial_event(
        self, name: str, caller: Channel | None, dest: Channel, tail: Sequence[tuple[str, str]]
    ) -> None:
        head = caller.snapshot() if caller is not None else []
        self.emit(name, "call", [*head, *dest.snapshot("Dest"), *tail])

    # ---- bridges
    def bridge(self, a: Channel, b: Channel) -> Bridge:
        br = Bridge(self.ids.bridge_id())
        self.emit("BridgeCreate", "call", br.block())
        for ch in (a, b):
            br.channels.append(ch)
            ch.bridge_id = br.uniqueid
            self.emit("BridgeEnter", "call", [*br.block(), *ch.snapshot()])
        return br

    def bridge_peer_vars(self, a: Channel, b: Channel) -> None:
        for ch, peer in ((a, b), (b, a)):
            self.set_var(ch, "BRIDGEPEER", peer.name)
            self.set_var(ch, "BRIDGEPVTCALLID", peer.pvt_call_id)

    def unbridge(self, br: Bridge) -> None:
        for ch in list(br.channels):
            br.channels.remove(ch)
            ch.bridge_id = ""
            self.emit("BridgeLeave", "call", [*br.block(), *ch.snapshot()])
        self.emit("BridgeDestroy", "call", br.block())

    # ---- cdr
    def fmt_time(self, t: float | None) -> str:
        if t is None:
            return ""
        return datetime.fromtimestamp(int(t), self.tz).strftime("%Y-%m-%d %H:%M:%S")

    def cdr(self, ch: Channel) -> None:
        """The Cdr event of `ch`, ending now (cdr_manager, written when the channel ends)."""
        start, answer, end = ch.created, ch.answered_at, self.now()
        duration = int(end) - int(start)
        billable = int(end) - int(answer) if answer is not None else 0
        cid = f'"{escape_c(ch.caller_name)}" <{ch.caller_num}>'
        self.emit(
            "Cdr",
            "cdr",
            [
                ("AccountCode", ch.accountcode),
                ("Source", ch.caller_num),
                ("Destination", ch.exten),
                ("DestinationContext", ch.context),
                ("CallerID", cid),
                ("Channel", ch.name),
                ("DestinationChannel", ch.dest_channel),
                ("LastApplication", ch.application),
                ("LastData", ch.app_data),
                ("StartTime", self.fmt_time(start)),
                ("AnswerTime", self.fmt_time(answer)),
                ("EndTime", self.fmt_time(end)),
                ("Duration", str(duration)),
                ("BillableSeconds", str(billable)),
                ("Disposition", "ANSWERED" if answer is not None else "NO ANSWER"),
                ("AMAFlags", "DOCUMENTATION"),
                ("UniqueID", ch.uniqueid),
                ("UserField", ""),
            ],
        )


def duration_hms(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


async def wait_any(
    clock: Clock, delay: float | None, events: Sequence[asyncio.Event]
) -> int | None:
    """Index of the first event set, or None when `delay` simulated seconds passed first."""
    for i, ev in enumerate(events):
        if ev.is_set():
            return i
    waiters = [asyncio.ensure_future(ev.wait()) for ev in events]
    sleeper = asyncio.ensure_future(clock.sleep(delay)) if delay is not None else None
    pending: set[asyncio.Future[object]] = set(waiters)  # type: ignore[arg-type]
    if sleeper is not None:
        pending.add(sleeper)  # type: ignore[arg-type]
    try:
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in pending:
            if not f.done():
                f.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for i, ev in enumerate(events):
        if ev.is_set():
            return i
    return None
