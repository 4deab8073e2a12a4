"""Screen-pop routing and agent state control for the agent console.

`ScreenPopService` follows the bus channel `agents` (payloads in callcenter.calls.notifier and
callcenter.agents.notifier). Each pop (agent.ringing / answered / no_answer / finished) is
enriched (customer card, history, IVR digits: bounded wait, fail open), numbered per agent
interface and delivered ONLY to the connections registered for that interface - every open
tab of the signed-in user(s) whose users.agent_interface equals the payload's interface.
A bounded buffer of recent pops per interface lets a reconnecting browser ask for what it
missed (`last_seq`); `epoch` changes on every start, so a client never mixes the sequence
numbers of two server runs.

`AgentStateController` turns the state an agent chooses into queue membership in Asterisk
(QueuePause with reason, QueueAdd, QueueRemove) and refuses to end a wrap-up while a call the
agent answered has no disposition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from callcenter.bus.base import Bus, Payload
from callcenter.bus.keys import AGENTS, IVR_STEPS
from callcenter.calls.model import CallRecord, IvrStep
from callcenter.console.model import (
    LOGGED_OUT_REASON,
    POP_TYPES,
    WRAP_UP_REASON,
    ConsoleState,
    CustomerCard,
    Enrichment,
    HistoryItem,
    IvrDigit,
    Pop,
)
from callcenter.customers.model import Customer
from callcenter.db.availability import is_database_down
from callcenter.web.hub import (
    CLOSE_TIMEOUT,
    RECHECK_INTERVAL,
    SessionRecheck,
    close_socket,
    finish_tasks,
    follow_bus,
)

log = logging.getLogger(__name__)

__all__ = [
    "AgentStateController",
    "Connection",
    "DispositionRequired",
    "PopBuffer",
    "PopEnricher",
    "ScreenPopService",
    "build_pop_data",
    "encode_frame",
    "path_digits",
    "steps_stored_messages",
]


# ------------------------------------------------------------------------------ ports


class CustomerDirectory(Protocol):
    async def find_by_number(self, number: str) -> Customer | None: ...


class CallHistory(Protocol):
    async def list_calls(
        self, *, caller: str | None = None, limit: int = 50
    ) -> list[CallRecord]: ...

    async def get_steps(self, uniqueid: str) -> list[IvrStep]: ...


# (customer id, limit) -> bookings/complaints/callbacks of a customer, newest first
TicketHistory = Callable[[int, int], Awaitable[Sequence[HistoryItem]]]


class FrameSink(Protocol):
    """One open WebSocket (aiohttp's WebSocketResponse fits)."""

    @property
    def closed(self) -> bool: ...

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool: ...


class QueueControl(Protocol):
    """The AMI actions the console needs (callcenter.asterisk.ami.AmiClient fits)."""

    async def queue_pause(
        self, interface: str, queue: str | None, paused: bool, reason: str | None = None
    ) -> Any: ...

    async def queue_add(
        self,
        interface: str,
        queue: str,
        *,
        member_name: str | None = None,
        penalty: int | None = None,
        paused: bool | None = None,
        state_interface: str | None = None,
    ) -> Any: ...

    async def queue_remove(self, interface: str, queue: str) -> Any: ...


DispositionCheck = Callable[[str, int], Awaitable[bool]]  # (call uniqueid, user id) -> has one?


# ------------------------------------------------------------------------------ frames


def encode_frame(frame: Mapping[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, default=str, separators=(",", ":"))


def pop_frame(pop: Pop) -> dict[str, Any]:
    return {"type": "pop", "seq": pop.seq, "pop": pop.data}


# ------------------------------------------------------------------------------ pure parts


def _customer_card(c: Customer) -> CustomerCard:
    return CustomerCard(
        id=c.id,
        name=c.name,
        tier=c.tier,
        key_customer=c.is_key_customer,
        company=c.company,
        credit_grade=c.credit_grade,
        notes=c.notes,
        preferred_language=c.preferred_language,
        do_not_call=c.do_not_call,
        provisional=bool(getattr(c, "provisional", False)),
        numbers=tuple(n.raw for n in c.numbers),
    )


def _seconds_between(start: str | None, end: datetime) -> float | None:
    if not start:
        return None
    try:
        began = datetime.fromisoformat(start)
    except ValueError:
        return None
    if began.tzinfo is None or end.tzinfo is None:
        return None
    return max(0.0, round((end - began).total_seconds(), 1))


def build_pop_data(payload: Payload, enrichment: Enrichment, now: datetime) -> dict[str, Any]:
    """The JSON a browser gets for one pop: the bus payload's facts plus the enrichment."""
    kind = POP_TYPES[str(payload["type"])]
    call = payload.get("call") if isinstance(payload.get("call"), dict) else {}
    assert isinstance(call, dict)
    waited = payload.get("hold_seconds")
    if waited is None:
        waited = call.get("wait_seconds")  # queue join -> answer, once answered
    if waited is None and kind == "ringing":  # still ringing: time in the queue so far
        waited = _seconds_between(call.get("queue_joined_at"), now)
    if isinstance(waited, int | float):
        waited = round(float(waited), 1)
    variables = call.get("variables") if isinstance(call.get("variables"), dict) else {}
    card = enrichment.customer
    # the stored steps, else the menu keys the call's IVR path carries (steps not stored yet)
    digits = enrichment.digits or path_digits(payload.get("ivr_path") or ())
    choice, choice_label = _ivr_choice(payload, digits)
    return {
        "kind": kind,
        "interface": payload.get("interface"),
        "member_name": payload.get("member_name"),
        "queue": payload.get("queue"),
        "uniqueid": payload.get("uniqueid"),
        "linkedid": payload.get("linkedid"),
        "caller_number": payload.get("caller_number") or "",
        "caller_name": payload.get("caller_name") or "",
        "dialed_number": payload.get("dialed_number") or "",
        "ivr_path": list(payload.get("ivr_path") or []),
        "ivr_choice": choice,
        "ivr_choice_label": choice_label,
        "digits": [asdict(d) for d in digits],
        "digits_pending": enrichment.steps_pending,
        "variables": dict(variables or {}),
        "waited_seconds": waited,
        "ring_seconds": payload.get("ring_seconds"),
        "talk_seconds": payload.get("talk_seconds"),
        "reason": payload.get("reason"),
        "call_started_at": call.get("started_at"),
        "customer": asdict(card) if card is not None else None,
        "key_customer": bool(card and card.key_customer),
        "history": [asdict(h) for h in enrichment.history],
        "complete": enrichment.complete,
        "at": now.isoformat(),
    }


_DTMF = frozenset("0123456789*#")


def _digits(steps: Iterable[IvrStep]) -> tuple[IvrDigit, ...]:
    """Keys the caller pressed, in order (a lookup step's input is the caller id, not keys)."""
    return tuple(digit for _seq, digit in _numbered_digits(steps))


def _numbered_digits(steps: Iterable[IvrStep]) -> list[tuple[int, IvrDigit]]:
    """`_digits` with the number (seq) of the step each key was pressed at."""
    return [
        (s.seq, IvrDigit(node=s.node, kind=s.kind, input=s.input, result=s.result))
        for s in sorted(steps, key=lambda s: s.seq)
        if s.input and s.kind != "lookup" and set(s.input) <= _DTMF
    ]


def steps_stored_messages(steps: Iterable[IvrStep]) -> list[Payload]:
    """The `IVR_STEPS` bus messages for IVR steps just written to the call log: one per call,
    {"uniqueid", "digits": [{seq, node, kind, input, result}]} (the keys the caller pressed, by
    step number: a write repeated after a timeout announces the same steps again)."""
    by_call: dict[str, list[IvrStep]] = {}
    for step in steps:
        by_call.setdefault(step.call_uniqueid, []).append(step)
    return [
        {
            "uniqueid": uniqueid,
            "digits": [{"seq": seq, **asdict(d)} for seq, d in _numbered_digits(found)],
        }
        for uniqueid, found in by_call.items()
    ]


def _message_digits(payload: Payload) -> tuple[str, dict[int, IvrDigit]] | None:
    """(uniqueid, digits by step number) of an `IVR_STEPS` message; None if it is malformed."""
    uniqueid, found = payload.get("uniqueid"), payload.get("digits")
    if not isinstance(uniqueid, str) or not uniqueid or not isinstance(found, list):
        return None
    digits: dict[int, IvrDigit] = {}
    for d in found:
        if (
            not isinstance(d, dict)
            or type(d.get("seq")) is not int
            or not all(isinstance(d.get(k), str) for k in ("node", "kind", "input"))
        ):
            return None
        result = d.get("result")
        digits[d["seq"]] = IvrDigit(
            node=d["node"],
            kind=d["kind"],
            input=d["input"],
            result=result if isinstance(result, str) else None,
        )
    return uniqueid, digits


def path_digits(path: Iterable[Any]) -> tuple[IvrDigit, ...]:
    """The menu keys of an IVR path ("lookup,language,hours,main,2,complaints_queue": the
    engine appends the key after its menu node, then the node it led to), as digits. What the
    call carries before its stored steps do: no language key, no collected digits."""
    nodes = [str(node) for node in path]
    found: list[IvrDigit] = []
    for i, key in enumerate(nodes):
        if len(key) != 1 or key not in _DTMF or i == 0 or nodes[i - 1] in _DTMF:
            continue
        after = nodes[i + 1] if i + 1 < len(nodes) and nodes[i + 1] not in _DTMF else None
        found.append(IvrDigit(node=nodes[i - 1], kind="menu", input=key, result=after))
    return tuple(found)


def _ivr_choice(payload: Payload, digits: Sequence[IvrDigit]) -> tuple[str | None, str | None]:
    """(the last menu key, what it chose): ("2", "complaints_queue"). From the stored steps, or
    else from the IVR path the call carries ("...,main,2,complaints_queue": the node after the
    key): the steps are written once the IVR session has ended, and the agent's phone may ring
    before they are."""
    menus = [d for d in digits if d.kind == "menu"]
    choice = payload.get("ivr_choice") or (menus[-1].input if menus else None)
    label = next((d.result for d in reversed(menus) if d.input == choice), None)
    if label is None and choice:
        path = [str(node) for node in payload.get("ivr_path") or ()]
        at = len(path) - 1 - path[::-1].index(str(choice)) if str(choice) in path else -1
        if 0 <= at < len(path) - 1:
            label = path[at + 1]
    return (str(choice) if choice else None), label


def _call_history_item(r: CallRecord) -> HistoryItem:
    if r.abandoned:
        outcome = "abandoned"
    elif r.answered_at is not None:
        outcome = f"answered by {r.agent or r.agent_interface or '?'}"
    else:
        outcome = "not answered" if r.ended_at is not None else "in progress"
    parts = [p for p in (r.queue, r.ivr_choice and f"IVR {r.ivr_choice}", outcome) if p]
    return HistoryItem(
        kind="call",
        at=r.started_at.isoformat(),
        summary=" · ".join(str(p) for p in parts),
        ref=r.uniqueid,
    )


class PopEnricher:
    """Looks up the caller in the archive and the call log. Each lookup has `timeout` seconds;
    a slow or failing one is skipped (the pop still goes out, `complete` False).

    A call that went through the IVR (it carries an IVR path) but whose steps are not stored
    yet is enriched with `steps_pending`: the screen-pop service then waits up to `steps_wait`
    seconds for the `IVR_STEPS` bus message the recorder sends once it has written them (no
    polling: a slow database gets no more reads)."""

    def __init__(
        self,
        *,
        customers: CustomerDirectory | None,
        calls: CallHistory | None,
        tickets: TicketHistory | None = None,
        timeout: float = 0.3,
        history_limit: int = 5,
        steps_wait: float = 60.0,
    ) -> None:
        self._customers = customers
        self._calls = calls
        self._tickets = tickets
        self._timeout = timeout
        self._limit = history_limit
        self.steps_wait = steps_wait

    async def enrich(self, payload: Payload) -> Enrichment:
        number = str(payload.get("caller_number") or "")
        uniqueid = str(payload.get("uniqueid") or "")
        customer_f = self._bounded(self._find(number))
        calls_f = self._bounded(self._history(number, uniqueid))
        steps_f = self._bounded(self._steps(uniqueid))
        customer, calls, steps = await asyncio.gather(customer_f, calls_f, steps_f)
        found = {"customer": customer, "history": calls, "steps": steps}
        failed = [name for name, got in found.items() if got is _FAILED]
        card = customer if isinstance(customer, CustomerCard) else None
        history = list(calls) if isinstance(calls, tuple) else []
        if card is not None and self._tickets is not None:
            tickets = await self._bounded(self._tickets(card.id, self._limit))
            if tickets is _FAILED:
                failed.append("tickets")
            elif isinstance(tickets, Sequence):
                history.extend(tickets)
        history.sort(key=lambda h: h.at or "", reverse=True)
        went_through_ivr = bool(payload.get("ivr_path")) and bool(uniqueid)
        return Enrichment(
            customer=card,
            history=tuple(history[: self._limit * 2]),
            digits=steps if isinstance(steps, tuple) else (),
            complete=not failed,
            steps_pending=went_through_ivr and not isinstance(steps, tuple),
            failed=tuple(failed),
        )

    async def _bounded(self, coro: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await coro
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            log.warning("screen-pop lookup took over %.2fs; popping without it", self._timeout)
            return _FAILED
        except Exception as exc:
            if is_database_down(exc):
                log.warning("screen-pop lookup: database unavailable; popping without it")
            else:
                log.exception("screen-pop lookup failed; popping without it")
            return _FAILED

    async def _find(self, number: str) -> CustomerCard | None:
        if self._customers is None or not number:
            return None
        found = await self._customers.find_by_number(number)
        return _customer_card(found) if found is not None else None

    async def _history(self, number: str, uniqueid: str) -> tuple[HistoryItem, ...]:
        if self._calls is None or not number:
            return ()
        records = await self._calls.list_calls(caller=number, limit=self._limit + 1)
        return tuple(_call_history_item(r) for r in records if r.uniqueid != uniqueid)[
            : self._limit
        ]

    async def _steps(self, uniqueid: str) -> tuple[IvrDigit, ...] | None:
        """The digits of the stored steps; None while none are stored."""
        if self._calls is None or not uniqueid:
            return ()
        steps = await self._calls.get_steps(uniqueid)
        return _digits(steps) if steps else None


_FAILED = object()
MAX_STEP_WAITS = 1000  # calls waiting for their IVR steps at once (the oldest wait ends first)


def _lookup_key(payload: Payload) -> str:
    return f"{payload.get('uniqueid')}|{payload.get('caller_number')}"


def _stored_outcome(
    enrichment: Enrichment, stored: asyncio.Future[tuple[IvrDigit, ...] | None]
) -> Enrichment:
    """`enrichment` once the wait for the stored steps is over: their digits, or (never
    stored, or the wait was cancelled) the path's as before, no longer pending."""
    found = None if stored.cancelled() or stored.exception() else stored.result()
    return _with_digits(enrichment, found)


def _with_digits(enrichment: Enrichment, found: tuple[IvrDigit, ...] | None) -> Enrichment:
    """`enrichment` no longer pending, with the stored digits `found` (None: none came)."""
    if found is None:
        return replace(enrichment, steps_pending=False)
    failed = tuple(name for name in enrichment.failed if name != "steps")
    # the digits were the only part missing: the pop is complete now
    complete = enrichment.complete or (bool(enrichment.failed) and not failed)
    return replace(enrichment, digits=found, steps_pending=False, complete=complete, failed=failed)


MAX_SHOWN = 32  # pops of one call updated when more of its stored digits come (the latest)


@dataclass(slots=True, eq=False)
class _Landed:
    """The stored digits of one call, from all its `IVR_STEPS` messages (one per write: held
    steps are flushed in batches, or one by one after a refused item, so a call's digits may
    come in parts; a write repeated after a timeout announces its steps again), merged by step
    number, and the pops showing them."""

    digits: tuple[IvrDigit, ...] = ()  # by step number
    by_seq: dict[int, IvrDigit] = field(default_factory=dict)
    # (pop, payload, enrichment before the digits, at): updated when another part comes
    shown: deque[tuple[Pop, Payload, Enrichment, datetime]] = field(
        default_factory=lambda: deque(maxlen=MAX_SHOWN)
    )


def _outcome(lookup: asyncio.Task[Enrichment]) -> Enrichment:
    """The result of a finished lookup task; a failed one enriches nothing."""
    if lookup.cancelled() or lookup.exception() is not None:
        return Enrichment(complete=False)
    return lookup.result()


@dataclass(slots=True)
class PopBuffer:
    """The last `size` pops of one interface, numbered from 1."""

    size: int
    last_seq: int = 0
    pops: deque[Pop] = field(default_factory=deque)

    def add(self, kind: Any, interface: str, uniqueid: str, data: dict[str, Any]) -> Pop:
        self.last_seq += 1
        pop = Pop(seq=self.last_seq, kind=kind, interface=interface, uniqueid=uniqueid, data=data)
        self.pops.append(pop)
        while len(self.pops) > self.size:
            self.pops.popleft()
        return pop

    def replace(self, seq: int, data: dict[str, Any]) -> None:
        """Swap the data of pop `seq` (the enriched version), if it is still buffered."""
        for i, pop in enumerate(self.pops):
            if pop.seq == seq:
                self.pops[i] = replace(pop, data=data)
                return

    def since(self, seq: int) -> tuple[list[Pop], bool]:
        """Pops after `seq`, and whether some were already dropped (a gap)."""
        missed = [p for p in self.pops if p.seq > seq]
        first = self.pops[0].seq if self.pops else self.last_seq + 1
        gap = seq + 1 < first and seq < self.last_seq
        return missed, gap


# ------------------------------------------------------------------------------ delivery


class Connection:
    """One open console tab. Frames queue in a bounded outbox; one writer task exists only
    while there is something to send (an idle tab costs no task)."""

    __slots__ = (
        "_abort",
        "_outbox",
        "_service",
        "_sink",
        "_writer",
        "dropped",
        "interface",
        "user_id",
    )

    def __init__(
        self,
        service: ScreenPopService,
        sink: FrameSink,
        interface: str,
        user_id: int,
        abort: Callable[[], None] | None = None,
    ) -> None:
        self._service = service
        self._sink = sink
        self._abort = abort
        self._outbox: deque[str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.interface = interface
        self.user_id = user_id
        self.dropped = False

    def push(self, text: str) -> None:
        if self.dropped:
            return
        outbox = self._outbox
        if outbox is None:  # created on the first frame, dropped when sent: idle tabs are small
            outbox = self._outbox = deque()
        if len(outbox) >= self._service.outbox_size:
            self.dropped = True
            outbox.clear()
            log.warning("console tab of %s too slow, disconnecting it", self.interface)
            self._service.forget(self)
            self._service.spawn(self.close(1013, b"too slow"))
            return
        outbox.append(text)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._outbox:
                text = self._outbox.popleft()
                if self._sink.closed:
                    return
                try:
                    await self._sink.send_str(text)
                except (ConnectionError, RuntimeError):
                    return
        finally:
            self._writer = None
            self._outbox = None

    async def close(self, code: int, message: bytes) -> None:
        """Close frame, bounded: a tab that stopped reading is aborted instead."""
        await close_socket(
            self._sink,
            code=code,
            message=message,
            abort=self._abort,
            bound=self._service.close_timeout,
        )

    async def stop(self) -> None:
        writer = self._writer
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer


class ScreenPopService:
    """See the module docstring. `run()` follows the bus; `attach()`/`detach()` per tab."""

    def __init__(
        self,
        *,
        bus: Bus,
        enricher: PopEnricher,
        clock: Callable[[], datetime],
        buffer_size: int = 20,  # ~7 calls (ring, answer, end) missed while away
        outbox_size: int = 64,
        max_interfaces: int = 2_000,  # phones with a buffer (least recently used dropped)
        on_pop: Callable[[str, Pop], Awaitable[None]] | None = None,
        close_timeout: float = CLOSE_TIMEOUT,
        recheck_interval: float = RECHECK_INTERVAL,
    ) -> None:
        self._bus = bus
        self.close_timeout = close_timeout
        # re-checks the sessions of open tabs (every interval, and a user's at once on poke)
        self.recheck = SessionRecheck(interval=recheck_interval)
        self._enricher = enricher
        self._clock = clock
        self._buffer_size = buffer_size
        self.outbox_size = max(outbox_size, buffer_size + 2)  # a full replay fits
        self._max_interfaces = max_interfaces
        self._on_pop = on_pop
        self.epoch = secrets.token_hex(6)
        self._buffers: OrderedDict[str, PopBuffer] = OrderedDict()
        self._connections: dict[str, set[Connection]] = {}
        self._enriched: OrderedDict[str, asyncio.Task[Enrichment]] = OrderedDict()
        # uniqueid -> the wait for the call's IVR steps to be stored (ring before the write):
        # the digits from their `IVR_STEPS` message, or None (not within steps_wait, evicted)
        self._stored: OrderedDict[str, asyncio.Future[tuple[IvrDigit, ...] | None]] = OrderedDict()
        # uniqueid -> the digits of the calls whose steps were announced lately, all parts
        # (one announced while its pop's lookup was reading is not missed)
        self._landed: OrderedDict[str, _Landed] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscribed = asyncio.Event()
        self._closing = False
        self.delivered = 0

    # -------------------------------------------------------------- bus side
    async def wait_subscribed(self) -> None:
        await self._subscribed.wait()

    async def run(self) -> None:
        """Follow the `agents` and `ivr_steps` channels until cancelled; a broken bus is
        retried."""
        await follow_bus(
            self._bus,
            (AGENTS, IVR_STEPS),
            lambda channel, payload: (
                self.steps_stored(payload) if channel == IVR_STEPS else self.feed(payload)
            ),
            subscribed=self._subscribed,
            stopping=lambda: self._closing,
            what="screen-pop",
        )

    def feed(self, payload: Payload) -> None:
        """One `agents` payload. A pop goes out at once, numbered in arrival order, with what
        the PBX told us plus whatever of the archive lookup is already known (the ring and the
        answer of one call share one lookup); when the lookup was still running, a
        `pop.update` frame with the same `seq` follows once it is done (or timed out). A call
        whose IVR steps are not stored yet pops with the menu keys of its IVR path
        (`digits_pending`), and another `pop.update` brings the stored digits once they are
        (the later pops of that call carry them at once)."""
        kind = payload.get("type")
        if kind == "agent.state":
            agent = payload.get("agent")
            if isinstance(agent, dict) and isinstance(agent.get("interface"), str):
                self._send_state(agent["interface"], agent)
            return
        if kind not in POP_TYPES:
            return
        interface = payload.get("interface")
        if not isinstance(interface, str) or not interface:
            return
        lookup = self._enrichment(payload)
        ready = lookup.done()
        now = self._clock()
        stored: asyncio.Future[tuple[IvrDigit, ...] | None] | None = None
        landed: _Landed | None = None
        if ready:
            base = _outcome(lookup)
            enrichment, stored, landed = self._with_stored_steps(payload, base)
        else:
            enrichment = Enrichment(steps_pending=bool(payload.get("ivr_path")))
        data = build_pop_data(payload, enrichment, now)
        data["pending"] = not ready
        pop = self._buffer(interface).add(
            data["kind"], interface, str(payload.get("uniqueid") or ""), data
        )
        self._push(interface, encode_frame(pop_frame(pop)))
        if landed is not None:
            landed.shown.append((pop, payload, base, now))
        if not ready:
            self.spawn(self._complete(pop, payload, lookup, now))
        elif stored is not None:
            self.spawn(self._when_stored(pop, payload, enrichment, stored, now))
        if self._on_pop is not None and interface in self._connections:
            # only for agents working in the console (the demo's simulated agents are not);
            # tasks start in creation order: one call's answered hook runs before its finished
            self.spawn(self._hook(interface, pop))

    def _enrichment(self, payload: Payload) -> asyncio.Task[Enrichment]:
        # ring, answer and finish of one call share one lookup
        key = _lookup_key(payload)
        task = self._enriched.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._enricher.enrich(payload))
            self._enriched[key] = task
            while len(self._enriched) > 1000:
                self._enriched.popitem(last=False)
        else:
            self._enriched.move_to_end(key)
        return task

    def steps_stored(self, payload: Payload) -> None:
        """An `IVR_STEPS` message: the call's IVR steps are written to the call log. The pops
        waiting for them get their digits (a `pop.update`), and the call's later pops carry
        them at once."""
        if self._closing:
            return
        found = _message_digits(payload)
        if found is None:
            log.warning("screen-pop: malformed IVR steps message ignored")
            return
        uniqueid, digits = found
        landed = self._landed.get(uniqueid)
        if landed is None:
            landed = self._landed[uniqueid] = _Landed()
            while len(self._landed) > MAX_STEP_WAITS:
                self._landed.popitem(last=False)
        else:
            self._landed.move_to_end(uniqueid)
        fresh = digits.keys() - landed.by_seq.keys()  # a part, or the same steps written again
        landed.by_seq.update(digits)
        landed.digits = tuple(landed.by_seq[seq] for seq in sorted(landed.by_seq))
        wait = self._stored.get(uniqueid)
        if wait is not None and not wait.done():
            wait.set_result(landed.digits)
        for pop, shown, enrichment, at in landed.shown if fresh else ():  # had earlier parts
            self._update(pop, shown, _with_digits(enrichment, landed.digits), at)

    def _with_stored_steps(
        self, payload: Payload, enrichment: Enrichment
    ) -> tuple[Enrichment, asyncio.Future[tuple[IvrDigit, ...] | None] | None, _Landed | None]:
        """`enrichment` with the call's stored digits if they came since its lookup (and
        their entry: the pop made with them joins its `shown`); else the wait for them
        (None: nothing to wait for)."""
        if not enrichment.steps_pending:
            return enrichment, None, None
        uniqueid = str(payload.get("uniqueid") or "")
        landed = self._landed.get(uniqueid)
        if landed is not None:
            return _with_digits(enrichment, landed.digits), None, landed
        if self._closing:  # no wait may outlive the service
            return _with_digits(enrichment, None), None, None
        wait = self._stored.get(uniqueid)
        if wait is None:
            wait = self._wait_for_steps(uniqueid, _lookup_key(payload))
        return enrichment, wait, None

    def _wait_for_steps(
        self, uniqueid: str, lookup_key: str
    ) -> asyncio.Future[tuple[IvrDigit, ...] | None]:
        """A wait for the call's `IVR_STEPS` message, bounded by `steps_wait`. One that ends
        without the digits is forgotten with the call's lookup: a later pop of the call starts
        afresh (the steps may have been written since, by another process or after an outage
        longer than the wait)."""
        loop = asyncio.get_running_loop()
        wait: asyncio.Future[tuple[IvrDigit, ...] | None] = loop.create_future()
        timer = loop.call_later(self._enricher.steps_wait, self._give_up, uniqueid, wait)

        def ended(done: asyncio.Future[tuple[IvrDigit, ...] | None]) -> None:
            timer.cancel()
            if self._stored.get(uniqueid) is done:
                del self._stored[uniqueid]
            if done.cancelled() or done.result() is None:
                lookup = self._enriched.get(lookup_key)
                if lookup is not None and lookup.done():
                    del self._enriched[lookup_key]

        wait.add_done_callback(ended)
        self._stored[uniqueid] = wait
        while len(self._stored) > MAX_STEP_WAITS:
            evicted = self._stored.popitem(last=False)[1]
            if not evicted.done():  # ended, not cancelled: its pops still get their update
                evicted.set_result(None)
        return wait

    def _give_up(self, uniqueid: str, wait: asyncio.Future[tuple[IvrDigit, ...] | None]) -> None:
        if not wait.done():
            log.info(
                "screen-pop: IVR steps of %s not stored after %ss",
                uniqueid,
                self._enricher.steps_wait,
            )
            wait.set_result(None)

    async def _complete(
        self, pop: Pop, payload: Payload, lookup: asyncio.Task[Enrichment], at: datetime
    ) -> None:
        await asyncio.wait([lookup])  # its failure or cancellation enriches nothing
        base = _outcome(lookup)
        enrichment, stored, landed = self._with_stored_steps(payload, base)
        self._update(pop, payload, enrichment, at)
        if landed is not None:
            landed.shown.append((pop, payload, base, at))
        if stored is not None:
            await self._when_stored(pop, payload, enrichment, stored, at)

    async def _when_stored(
        self,
        pop: Pop,
        payload: Payload,
        enrichment: Enrichment,
        stored: asyncio.Future[tuple[IvrDigit, ...] | None],
        at: datetime,
    ) -> None:
        await asyncio.wait([stored])  # does not raise whatever ended the wait
        landed = self._landed.get(str(payload.get("uniqueid") or ""))
        if landed is None or stored.cancelled() or stored.result() is None:
            self._update(pop, payload, _stored_outcome(enrichment, stored), at)
            return
        # all parts come so far (more may have come since the first ended the wait)
        self._update(pop, payload, _with_digits(enrichment, landed.digits), at)
        landed.shown.append((pop, payload, enrichment, at))

    def _update(self, pop: Pop, payload: Payload, enrichment: Enrichment, at: datetime) -> None:
        data = build_pop_data(payload, enrichment, at)
        data["pending"] = False
        buf = self._buffers.get(pop.interface)
        if buf is not None:
            buf.replace(pop.seq, data)
        self._push(pop.interface, encode_frame({"type": "pop.update", "seq": pop.seq, "pop": data}))

    async def _hook(self, interface: str, pop: Pop) -> None:
        assert self._on_pop is not None
        try:
            await self._on_pop(interface, pop)
        except Exception:
            log.exception("screen-pop hook failed")

    def _push(self, interface: str, text: str) -> None:
        for conn in tuple(self._connections.get(interface, ())):
            conn.push(text)
            self.delivered += 1

    def _buffer(self, interface: str) -> PopBuffer:
        buf = self._buffers.get(interface)
        if buf is None:
            buf = self._buffers[interface] = PopBuffer(size=self._buffer_size)
            while len(self._buffers) > self._max_interfaces:
                self._buffers.popitem(last=False)
        else:
            self._buffers.move_to_end(interface)
        return buf

    def _send_state(self, interface: str, agent: Mapping[str, Any]) -> None:
        conns = self._connections.get(interface)
        if not conns:
            return
        text = encode_frame({"type": "state", "agent": agent})
        for conn in tuple(conns):
            conn.push(text)

    # -------------------------------------------------------------- browser side
    def attach(
        self,
        sink: FrameSink,
        *,
        interface: str,
        user_id: int,
        last_seq: int | None = None,
        epoch: str | None = None,
        state: Mapping[str, Any] | None = None,
        abort: Callable[[], None] | None = None,
    ) -> Connection:
        """Register one tab and queue its first frames: `hello` (epoch, current seq, agent
        state), then every buffered pop after `last_seq` (all of them when `epoch` is not ours:
        the server restarted since that tab last saw a pop). `abort` drops the tab's
        connection when a close frame cannot go out."""
        conn = Connection(self, sink, interface, user_id, abort)
        buf = self._buffers.get(interface)
        current = buf.last_seq if buf is not None else 0
        missed: list[Pop] = []
        gap = False
        if buf is not None and last_seq is None:
            missed = list(buf.pops)[-1:]  # a new tab shows the latest pop
        elif buf is not None and last_seq is not None:
            restarted = epoch != self.epoch or not 0 <= last_seq <= current
            missed, gap = buf.since(0 if restarted else last_seq)
        conn.push(
            encode_frame(
                {
                    "type": "hello",
                    "epoch": self.epoch,
                    "seq": current,
                    "interface": interface,
                    "replayed": len(missed),
                    "gap": gap,
                    "state": dict(state) if state is not None else None,
                }
            )
        )
        for pop in missed:
            conn.push(encode_frame({**pop_frame(pop), "replay": True}))
        self._connections.setdefault(interface, set()).add(conn)
        return conn

    def forget(self, conn: Connection) -> None:
        """No more frames for `conn` (dropped, closing)."""
        conns = self._connections.get(conn.interface)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._connections[conn.interface]

    async def detach(self, conn: Connection) -> None:
        self.forget(conn)
        await conn.stop()

    def recent(self, interface: str) -> list[Pop]:
        buf = self._buffers.get(interface)
        return list(buf.pops) if buf is not None else []

    @property
    def connection_count(self) -> int:
        return sum(len(c) for c in self._connections.values())

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def recheck_interval(self) -> float:
        return self.recheck.interval

    @recheck_interval.setter
    def recheck_interval(self, seconds: float) -> None:
        self.recheck.interval = seconds

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until every pop received so far went out (tests, benches)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Refuse new tabs, close every open one with 1001 (going away). Idempotent. Bounded:
        a tab whose close frame cannot go out within `close_timeout` is aborted, and a close
        still running after that is cancelled."""
        self._closing = True
        await self.recheck.close()
        conns = [c for group in self._connections.values() for c in group]
        closing = {asyncio.ensure_future(c.close(1001, b"server shutdown")) for c in conns}
        await finish_tasks(closing, self.close_timeout + 1.0)
        for c in conns:
            await c.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        waits: list[asyncio.Future[Any]] = [*self._enriched.values(), *self._stored.values()]
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


# ------------------------------------------------------------------------------ state control


class DispositionRequired(Exception):
    """Leaving wrap-up before every answered call has a disposition."""

    def __init__(self, uniqueids: Sequence[str]) -> None:
        super().__init__("a disposition is required for " + ", ".join(uniqueids))
        self.uniqueids = list(uniqueids)


@dataclass(frozen=True, slots=True)
class MemberView:
    """What the controller needs to know of the agent's current membership."""

    queues: tuple[str, ...]
    name: str | None = None
    static: tuple[str, ...] = ()  # of `queues`, those from queues.conf (QueueRemove refuses)


class AgentStateController:
    """Applies a chosen state through AMI and keeps the calls awaiting a disposition."""

    def __init__(
        self,
        *,
        ami: Callable[[], QueueControl | None],
        has_disposition: DispositionCheck,
        default_queues: Sequence[str],
        max_pending: int = 20,
    ) -> None:
        self._ami = ami
        self._has_disposition = has_disposition
        self._default_queues = tuple(default_queues)
        self._max_pending = max_pending
        self._pending: dict[str, list[str]] = {}  # interface -> answered call uniqueids
        self._left: dict[str, tuple[str, ...]] = {}  # interface -> queues before logging out

    def pending(self, interface: str) -> list[str]:
        return list(self._pending.get(interface, ()))

    async def on_pop(self, interface: str, pop: Pop) -> None:
        """Screen-pop hook: an answered call needs a disposition; when it ends the agent is
        paused in wrap-up (Asterisk's own wrapuptime would end by itself, ours waits for the
        disposition)."""
        if pop.kind == "answered" and pop.uniqueid:
            calls = self._pending.setdefault(interface, [])
            if pop.uniqueid not in calls:
                calls.append(pop.uniqueid)
                del calls[: -self._max_pending]
        elif pop.kind == "finished" and pop.uniqueid in self._pending.get(interface, ()):
            ami = self._ami()
            if ami is not None:
                try:
                    await ami.queue_pause(interface, None, True, WRAP_UP_REASON)
                except Exception as exc:  # the agent can still pause by hand
                    log.warning("wrap-up pause for %s failed: %s", interface, exc)

    async def outstanding(self, interface: str, user_id: int) -> list[str]:
        """Answered calls of this agent still without this user's disposition."""
        calls = self._pending.get(interface, [])
        missing = [u for u in calls if not await self._has_disposition(u, user_id)]
        if not missing:
            self._pending.pop(interface, None)
        else:
            self._pending[interface] = missing
        return missing

    async def set_state(
        self,
        *,
        interface: str,
        user_id: int,
        state: ConsoleState,
        reason: str | None,
        member: MemberView,
    ) -> None:
        """Raises DispositionRequired, LookupError (AMI not connected) or the AMI error."""
        if state != "wrap_up":
            missing = await self.outstanding(interface, user_id)
            if missing:
                raise DispositionRequired(missing)
        ami = self._ami()
        if ami is None:
            raise LookupError("not connected to Asterisk")
        if state == "logged_out":
            dynamic = tuple(q for q in member.queues if q not in member.static)
            for queue in dynamic:
                await ami.queue_remove(interface, queue)
            if dynamic:
                self._left[interface] = dynamic
            for queue in member.static:  # a static member cannot leave: paused instead
                await ami.queue_pause(interface, queue, True, LOGGED_OUT_REASON)
            return
        if not member.queues or set(member.queues) <= set(member.static):
            queues = self._left.pop(interface, None) or (
                () if member.queues else self._default_queues
            )
            for queue in queues:
                await ami.queue_add(
                    interface, queue, member_name=member.name, paused=state != "available"
                )
        if state == "available":
            await ami.queue_pause(interface, None, False)
        elif state == "paused":
            await ami.queue_pause(interface, None, True, reason)
        else:
            await ami.queue_pause(interface, None, True, WRAP_UP_REASON)
