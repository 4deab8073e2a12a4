"""The IVR engine: a pure generator that walks a flow (no sockets, no clock, no database).

``run_flow`` yields command objects and receives their results via ``send``:

=================  =================================================================
yielded            expected reply
=================  =================================================================
Play               Digits (the escape digit pressed, "" when played to the end/failed)
GetData            Digits (collected digits; timed_out when ended by the timeout)
WaitDigit          Digits ("" on timeout)
SayDigits          Digits
SetVar             Ack
Lookup             LookupResult (customer None = unknown; failed = lookup error/timeout)
HoursCheck         datetime (the current time, aware)
RecordCallback     Ack (ok False when the request could not be stored)
Step               Ack (a path record for the runner to persist; never an AGI command)
Hangup             Ack
=================  =================================================================

Any I/O command may instead receive ``HUNG_UP``: the engine then yields a final ``Step`` with
result ``"hangup"`` and returns. The generator's return value is an ``Outcome``.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

from callcenter.ivr.calendar import BusinessCalendar
from callcenter.ivr.model import (
    DTMF_KEYS,
    AnyNode,
    CallbackNode,
    CollectNode,
    CustomerInfo,
    Flow,
    GotoNode,
    HangupNode,
    HoursNode,
    LanguageNode,
    LookupNode,
    MenuNode,
    PlayNode,
    QueueNode,
    SetNode,
    node_kind,
)

MAX_NODE_VISITS: Final = 200


# ---------------------------------------------------------------------------------------------
# commands
#
# Commands and replies are messages: one is made for nearly every step of every call and
# dropped once handled, so they are not frozen (a frozen dataclass costs five times as much to
# build). Nothing keeps them; treat them as immutable.


@dataclass(slots=True)
class Play:
    file: str
    escape_digits: str = ""


@dataclass(slots=True)
class GetData:
    file: str
    timeout_ms: int
    max_digits: int


@dataclass(slots=True)
class WaitDigit:
    timeout_ms: int


@dataclass(slots=True)
class SayDigits:
    digits: str


@dataclass(slots=True)
class SetVar:
    name: str
    value: str


@dataclass(slots=True)
class Lookup:
    number: str


@dataclass(slots=True)
class HoursCheck:
    pass


@dataclass(slots=True)
class RecordCallback:
    number: str
    queue: str | None
    note: str | None = None


@dataclass(slots=True)
class Step:
    node: str
    kind: str
    input: str | None = None
    result: str | None = None


@dataclass(slots=True)
class Hangup:
    pass


Command = (
    Play
    | GetData
    | WaitDigit
    | SayDigits
    | SetVar
    | Lookup
    | HoursCheck
    | RecordCallback
    | Step
    | Hangup
)

# ---------------------------------------------------------------------------------------------
# replies


@dataclass(slots=True)
class Digits:
    digits: str = ""
    timed_out: bool = False


@dataclass(slots=True)
class Ack:
    ok: bool = True


@dataclass(slots=True)
class LookupResult:
    customer: CustomerInfo | None
    failed: bool = False


class _HungUp:
    def __repr__(self) -> str:
        return "HUNG_UP"


HUNG_UP: Final = _HungUp()

Reply = Digits | Ack | LookupResult | datetime | _HungUp | None

OutcomeKind = Literal["queue", "hangup", "callback", "caller_hangup"]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    path: tuple[str, ...]
    queue: str | None = None
    priority: int = 0
    variables: dict[str, str] = field(default_factory=dict)


class _CallerHangup(Exception):
    pass


_NO_DIGITS: Final = Digits()
_OFF_PATH: Final = (GotoNode, SetNode, PlayNode)  # nodes not listed in Outcome.path


Gen = Generator[Command, Reply, "Outcome"]

_VAR_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


# ---------------------------------------------------------------------------------------------
# the engine


class _Call:
    def __init__(
        self,
        flow: Flow,
        *,
        calendar: BusinessCalendar,
        caller: str | None,
        default_queue: str,
        operator_queue: str,
        variables: dict[str, str],
        language: str | None,
    ) -> None:
        self.flow = flow
        self.calendar = calendar
        self.caller = caller
        self.default_queue = default_queue
        self.operator_queue = operator_queue
        self.language = flow.language
        self.language_known = False
        self.priority = 0
        self.path: list[str] = []
        self.vars: dict[str, str] = {**flow.variables, **variables}
        self.vars.setdefault("CALLER", caller or "")
        self.vars["LANG"] = self.language
        self._prefer_language(language)

    # helpers -----------------------------------------------------------------------------

    def prompt(self, name: str) -> str:
        return f"{self.language}/{name}" if self.flow.languages else name

    # The helpers below yield their command themselves rather than through further
    # ``yield from`` levels: every level costs a generator per command and a hop per reply.

    def _ask(self, cmd: Command) -> Generator[Command, Reply, Reply]:
        reply = yield cmd
        if isinstance(reply, _HungUp):
            raise _CallerHangup
        return reply

    def _digits(
        self, cmd: Play | GetData | WaitDigit | SayDigits
    ) -> Generator[Command, Reply, Digits]:
        reply = yield cmd
        if isinstance(reply, _HungUp):
            raise _CallerHangup
        return reply if isinstance(reply, Digits) else _NO_DIGITS

    def _play(self, name: str | None, escape: str = "") -> Generator[Command, Reply, str]:
        if name is None:
            return ""
        reply = yield Play(self.prompt(name), escape)
        if isinstance(reply, _HungUp):
            raise _CallerHangup
        return reply.digits[:1] if isinstance(reply, Digits) else ""

    def _key(self, prompt: Play, timeout_ms: int) -> Generator[Command, Reply, str]:
        """One key: pressed during ``prompt``, else within ``timeout_ms`` after it ("" if none)."""
        reply = yield prompt
        if isinstance(reply, _HungUp):
            raise _CallerHangup
        if isinstance(reply, Digits) and reply.digits:
            return reply.digits[:1]
        reply = yield WaitDigit(timeout_ms)
        if isinstance(reply, _HungUp):
            raise _CallerHangup
        return reply.digits[:1] if isinstance(reply, Digits) else ""

    @staticmethod
    def _step(node: AnyNode, *, input: str | None = None, result: str | None = None) -> Step:
        """A path record, yielded as ``yield self._step(...)`` (its Ack is not looked at)."""
        return Step(node.id, node_kind(node), input, result)

    def _set(self, name: str, value: str) -> Generator[Command, Reply, None]:
        reply = yield SetVar(name, value)
        if isinstance(reply, _HungUp):
            raise _CallerHangup

    def _queue_end(
        self, node: AnyNode, queue: str, priority: int, reason: str
    ) -> Generator[Command, Reply, Outcome]:
        prio = max(priority, self.priority)
        yield from self._set("IVR_QUEUE", queue)
        yield from self._set("QUEUE_PRIO", str(prio))
        if "IVR_CHOICE" in self.vars:  # the call tracker's ivr_choice (the last menu key)
            yield from self._set("IVR_CHOICE", self.vars["IVR_CHOICE"])
        yield from self._set("CALLCENTER_IVR_PATH", ",".join(self.path))
        yield self._step(node, result=reason)
        return Outcome("queue", tuple(self.path), queue, prio, dict(self.vars))

    # main loop ---------------------------------------------------------------------------

    def run(self) -> Gen:
        current: AnyNode = self.flow.nodes[self.flow.start]
        visits = 0
        try:
            while True:
                visits += 1
                if visits > MAX_NODE_VISITS:
                    return (yield from self._queue_end(current, self.default_queue, 0, "loop"))
                if not isinstance(current, _OFF_PATH):
                    self.path.append(current.id)
                nxt = yield from self._node(current)
                if isinstance(nxt, Outcome):
                    return nxt
                current = self.flow.nodes[nxt]
        except _CallerHangup:
            yield Step(current.id, node_kind(current), None, "hangup")
            return Outcome("caller_hangup", tuple(self.path), None, self.priority, dict(self.vars))

    def _node(self, node: AnyNode) -> Generator[Command, Reply, str | Outcome]:
        match node:
            case PlayNode():
                for p in node.prompts:
                    yield from self._play(p)
                yield self._step(node, result="played")
                return node.next
            case GotoNode():
                yield self._step(node, result=node.target)
                return node.target
            case SetNode():
                value = _VAR_REF.sub(lambda m: self.vars.get(m[1], ""), node.value)
                self.vars[node.var] = value
                if node.channel:
                    yield from self._set(node.var, value)
                yield self._step(node, input=value, result="set")
                return node.next
            case MenuNode():
                return (yield from self._menu(node))
            case CollectNode():
                return (yield from self._collect(node))
            case HoursNode():
                return (yield from self._hours(node))
            case LookupNode():
                return (yield from self._lookup(node))
            case LanguageNode():
                return (yield from self._language(node))
            case QueueNode():
                yield from self._play(node.prompt)
                return (yield from self._queue_end(node, node.queue, node.priority, node.queue))
            case CallbackNode():
                return (yield from self._callback(node))
            case HangupNode():
                yield from self._play(node.prompt)
                yield self._step(node, result="hangup_by_ivr")
                yield from self._ask(Hangup())
                return Outcome("hangup", tuple(self.path), None, self.priority, dict(self.vars))
        raise AssertionError(f"unhandled node {node!r}")

    def _menu(self, node: MenuNode) -> Generator[Command, Reply, str | Outcome]:
        invalid = timeouts = 0
        while True:
            key = yield from self._key(Play(self.prompt(node.prompt), DTMF_KEYS), node.timeout_ms)
            if not key:
                timeouts += 1
                yield self._step(node, result="timeout")
                if timeouts >= node.max_timeouts:
                    break
                yield from self._play(node.timeout_prompt)
            elif key == node.replay_key:
                yield self._step(node, input=key, result="replay")
            elif key == node.operator_key:
                self.path.append(key)
                self.vars["IVR_CHOICE"] = key
                return (yield from self._queue_end(node, self.operator_queue, 0, "operator"))
            elif key in node.options:
                target = node.options[key]
                self.path.append(key)
                self.vars["IVR_CHOICE"] = key
                yield self._step(node, input=key, result=target)
                return target
            else:
                invalid += 1
                yield self._step(node, input=key, result="invalid")
                if invalid >= node.max_invalid:
                    break
                yield from self._play(node.invalid_prompt)
        if node.on_exhausted is not None:
            yield self._step(node, result="exhausted")
            return node.on_exhausted
        return (yield from self._queue_end(node, self.default_queue, 0, "exhausted"))

    def _collect(self, node: CollectNode) -> Generator[Command, Reply, str]:
        for attempt in range(1, node.max_attempts + 1):
            d = yield from self._digits(
                GetData(self.prompt(node.prompt), node.timeout_ms, node.max_digits)
            )
            digits = d.digits
            if _acceptable(digits, node):
                self.vars[node.var] = digits
                yield from self._set(f"CALLCENTER_{node.var}", digits)
                yield self._step(node, input=digits, result="ok")
                return node.next
            yield self._step(node, input=digits or None, result="invalid" if digits else "timeout")
            if attempt < node.max_attempts:
                yield from self._play(node.invalid_prompt)
        yield self._step(node, result="failed")
        return node.on_fail or node.next

    def _hours(self, node: HoursNode) -> Generator[Command, Reply, str]:
        now = yield from self._ask(HoursCheck())
        if not isinstance(now, datetime):
            raise TypeError("HoursCheck needs a datetime reply")
        status = self.calendar.status(now)
        if status.open:
            result, target = "open", node.open
        elif status.holiday is not None:
            result, target = "holiday", node.holiday or node.closed
        else:
            result, target = "closed", node.closed
        yield self._step(node, input=status.holiday, result=result)
        return target

    def _lookup(self, node: LookupNode) -> Generator[Command, Reply, str]:
        if not self.caller:
            yield self._step(node, result="anonymous")
            return node.next
        reply = yield from self._ask(Lookup(self.caller))
        if not isinstance(reply, LookupResult) or reply.failed:
            yield self._step(node, input=self.caller, result="failed")
            return node.next
        customer = reply.customer
        if customer is None:
            yield self._step(node, input=self.caller, result="unknown")
            return node.next
        self.vars["CUSTOMER_ID"] = customer.customer_id
        self.vars["CUSTOMER_NAME"] = customer.name
        self.vars["KEY_CUSTOMER"] = "1" if customer.is_key_customer else "0"
        yield from self._set("CALLCENTER_CUSTOMER_ID", customer.customer_id)
        if customer.is_key_customer:
            self.priority = max(self.priority, node.key_priority)
            yield from self._set("CALLCENTER_KEY_CUSTOMER", "1")
        self._prefer_language(customer.language)
        result = "key" if customer.is_key_customer else "known"
        yield self._step(node, input=self.caller, result=result)
        return node.next

    def _prefer_language(self, lang: str | None) -> None:
        """Use the caller's or customer's language when the flow offers it."""
        if lang and (not self.flow.languages or lang in self.flow.languages):
            self._use_language(lang)

    def _use_language(self, lang: str) -> None:
        self.language = lang
        self.language_known = True
        self.vars["LANG"] = lang

    def _language(self, node: LanguageNode) -> Generator[Command, Reply, str]:
        if node.skip_if_known and self.language_known:
            yield self._step(node, result=self.language)
            return node.next
        # The language question is bilingual: it is played without a language prefix.
        key = yield from self._key(Play(node.prompt, "".join(node.options)), node.timeout_ms)
        lang = node.options.get(key, node.default)
        self._use_language(lang)
        yield from self._set("CALLCENTER_LANGUAGE", lang)
        yield self._step(node, input=key or None, result=lang)
        return node.next

    def _callback(self, node: CallbackNode) -> Generator[Command, Reply, str | Outcome]:
        number = yield from self._callback_number(node)
        if number is None:
            yield self._step(node, result="failed")
            return (yield from self._leave(node))
        ack = yield from self._ask(RecordCallback(number, node.queue, f"ivr:{self.flow.name}"))
        if not (isinstance(ack, Ack) and ack.ok):
            yield self._step(node, input=number, result="record_failed")
            return (yield from self._leave(node))
        yield from self._set("CALLCENTER_CALLBACK", number)
        yield self._step(node, input=number, result="requested")
        yield from self._play(node.done_prompt)
        yield from self._ask(Hangup())
        return Outcome("callback", tuple(self.path), node.queue, self.priority, dict(self.vars))

    def _leave(self, node: CallbackNode) -> Generator[Command, Reply, str | Outcome]:
        if node.on_fail is not None:
            return node.on_fail
        return (yield from self._queue_end(node, self.default_queue, 0, "callback_failed"))

    def _callback_number(self, node: CallbackNode) -> Generator[Command, Reply, str | None]:
        use_caller = bool(self.caller)
        for attempt in range(1, node.max_attempts + 1):
            if use_caller and self.caller:
                yield from self._play(node.confirm_prompt)
                # SAY DIGITS answers 520 to anything but digits ("+86..." included).
                yield from self._digits(SayDigits("".join(c for c in self.caller if c.isdigit())))
                confirm = Play(self.prompt(node.confirm_menu_prompt), "12")
                key = yield from self._key(confirm, node.timeout_ms)
                if key == "1":
                    yield self._step(node, input=key, result="confirmed")
                    return self.caller
                if key == "2":
                    yield self._step(node, input=key, result="other_number")
                    use_caller = False
                    continue
                yield self._step(node, input=key or None, result="invalid" if key else "timeout")
            else:
                d = yield from self._digits(
                    GetData(self.prompt(node.enter_prompt), node.timeout_ms, node.max_digits)
                )
                if _acceptable(d.digits, node):
                    yield self._step(node, input=d.digits, result="entered")
                    return d.digits
                result = "invalid" if d.digits else "timeout"
                yield self._step(node, input=d.digits or None, result=result)
            if attempt < node.max_attempts:
                yield from self._play(node.invalid_prompt)
        return None


def _acceptable(digits: str, node: CollectNode | CallbackNode) -> bool:
    return digits.isdigit() and node.min_digits <= len(digits) <= node.max_digits


def run_flow(
    flow: Flow,
    *,
    calendar: BusinessCalendar,
    caller: str | None,
    default_queue: str,
    operator_queue: str,
    variables: dict[str, str] | None = None,
    language: str | None = None,
) -> Gen:
    """Start a call through ``flow``; see the module docstring for the protocol.

    ``language`` (e.g. from ``?lang=en`` in the AGI URL) preselects the prompt language when the
    flow offers it; language nodes with ``skip_if_known`` then do not ask.
    """
    call = _Call(
        flow,
        calendar=calendar,
        caller=caller,
        default_queue=default_queue,
        operator_queue=operator_queue,
        variables=dict(variables or {}),
        language=language,
    )
    return call.run()
