"""IVR flow model: flows and nodes as frozen data, plus the small Protocols the runner needs.

A flow is a graph of named nodes loaded from ``ivr_flows/<name>.yaml`` (see ``loader.py`` for the
schema). Nodes are immutable; per-call state lives in the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from callcenter.calls.model import CallbackRequest, IvrStep

DTMF_KEYS = "0123456789*#"


def is_dtmf_key(text: str) -> bool:
    """Exactly one telephone key."""
    return len(text) == 1 and text in DTMF_KEYS


_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CustomerInfo:
    """What the IVR needs to know about a caller, found by number."""

    customer_id: str
    name: str
    is_key_customer: bool = False
    language: str | None = None  # preferred prompt language, e.g. "zh" or "en"


class CustomerLookup(Protocol):
    async def lookup(self, number: str) -> CustomerInfo | None: ...


class IvrRecorder(Protocol):
    async def record_steps(self, steps: Sequence[IvrStep]) -> None: ...

    async def record_callback(self, req: CallbackRequest) -> None: ...


# ---------------------------------------------------------------------------------------------
# nodes (every node has an id, the file line it was defined on, and a type-specific payload)


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    line: int


@dataclass(frozen=True, slots=True)
class PlayNode(Node):
    prompts: tuple[str, ...]
    next: str


@dataclass(frozen=True, slots=True)
class MenuNode(Node):
    prompt: str
    options: Mapping[str, str]  # key -> node id
    timeout_ms: int = 5000
    max_invalid: int = 3
    max_timeouts: int = 3
    on_exhausted: str | None = None  # None: end in the default queue
    replay_key: str | None = None
    operator_key: str | None = None  # ends in the operator queue
    invalid_prompt: str | None = None
    timeout_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class CollectNode(Node):
    prompt: str
    var: str
    next: str
    min_digits: int = 1
    max_digits: int = 20
    timeout_ms: int = 6000
    terminator: str = "#"
    max_attempts: int = 3
    invalid_prompt: str | None = None
    on_fail: str | None = None  # None: same as next, without the variable


@dataclass(frozen=True, slots=True)
class HoursNode(Node):
    open: str
    closed: str
    holiday: str | None = None  # None: same as closed


@dataclass(frozen=True, slots=True)
class LookupNode(Node):
    next: str
    key_priority: int = 10  # queue priority of key customers


@dataclass(frozen=True, slots=True)
class LanguageNode(Node):
    prompt: str  # played as is (no language prefix): it is bilingual
    options: Mapping[str, str]  # key -> language code
    default: str
    next: str
    timeout_ms: int = 4000
    skip_if_known: bool = True  # a known customer's language skips the question


@dataclass(frozen=True, slots=True)
class SetNode(Node):
    var: str
    value: str  # may reference {VARS}
    next: str
    channel: bool = False  # also SET VARIABLE on the Asterisk channel


@dataclass(frozen=True, slots=True)
class QueueNode(Node):
    queue: str
    priority: int = 0
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class CallbackNode(Node):
    confirm_prompt: str  # "we will call you back on ..." followed by the digits
    confirm_menu_prompt: str  # "press 1 to confirm, 2 to enter another number"
    enter_prompt: str
    done_prompt: str
    queue: str | None = None  # which team calls back
    min_digits: int = 5
    max_digits: int = 15
    timeout_ms: int = 6000
    max_attempts: int = 3
    invalid_prompt: str | None = None
    on_fail: str | None = None  # None: end in the default queue


@dataclass(frozen=True, slots=True)
class HangupNode(Node):
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class GotoNode(Node):
    target: str


AnyNode = (
    PlayNode
    | MenuNode
    | CollectNode
    | HoursNode
    | LookupNode
    | LanguageNode
    | SetNode
    | QueueNode
    | CallbackNode
    | HangupNode
    | GotoNode
)

TERMINAL_TYPES = (QueueNode, CallbackNode, HangupNode)


def node_kind(node: Node) -> str:
    """The YAML type name of a node (also IvrStep.kind)."""
    return _KIND_BY_CLASS[type(node)]


_KIND_BY_CLASS: dict[type[Node], str] = {
    PlayNode: "play",
    MenuNode: "menu",
    CollectNode: "collect",
    HoursNode: "hours",
    LookupNode: "lookup",
    LanguageNode: "language",
    SetNode: "set",
    QueueNode: "queue",
    CallbackNode: "callback",
    HangupNode: "hangup",
    GotoNode: "goto",
}


def successors(node: Node) -> tuple[str, ...]:
    """Node ids a node can lead to (for validation)."""
    match node:
        case PlayNode(next=n) | LookupNode(next=n) | SetNode(next=n) | LanguageNode(next=n):
            return (n,)
        case GotoNode(target=t):
            return (t,)
        case MenuNode():
            extra = (node.on_exhausted,) if node.on_exhausted else ()
            return (*node.options.values(), *extra)
        case CollectNode():
            return (node.next, *((node.on_fail,) if node.on_fail else ()))
        case HoursNode():
            return (node.open, node.closed, *((node.holiday,) if node.holiday else ()))
        case CallbackNode():
            return (node.on_fail,) if node.on_fail else ()
    return ()


@dataclass(frozen=True, slots=True)
class Flow:
    """A validated flow. ``languages`` non-empty means prompts resolve to ``<lang>/<prompt>``."""

    name: str
    start: str
    nodes: Mapping[str, AnyNode]
    language: str = "zh"
    languages: tuple[str, ...] = ()
    source: str = ""  # file path, for messages
    variables: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # initial vars
