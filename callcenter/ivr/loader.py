"""Load and validate IVR flows and the business calendar from YAML, with file/line/node errors.

Flow file schema (``ivr_flows/<name>.yaml``)::

    name: hotline            # optional, defaults to the file stem (the AGI script name)
    start: welcome           # first node id
    language: zh             # default prompt language
    languages: [zh, en]      # optional; when set, prompt "x/y" is played as "<lang>/x/y"
    variables: {K: v}        # optional initial flow variables
    nodes:
      <id>: {type: <type>, ...fields}

Node types and fields (``timeout`` in seconds; targets are node ids):

* play:     prompt (str or list), next
* menu:     prompt, options {key: target}, timeout=5, max_invalid=3, max_timeouts=3,
            on_exhausted (default: the default queue), replay_key, operator_key,
            invalid_prompt, timeout_prompt
* collect:  prompt, var, next, min_digits=1, max_digits=20, timeout=6, terminator="#",
            max_attempts=3, invalid_prompt, on_fail (default: next)
* hours:    open, closed, holiday (default: closed)
* lookup:   next, key_priority=10
* language: prompt, options {key: lang}, default, next, timeout=4, skip_if_known=true
* set:      var, value ({VAR} substituted), next, channel=false
* queue:    queue, priority=0, prompt
* callback: confirm_prompt, confirm_menu_prompt, enter_prompt, done_prompt, queue, min_digits=5,
            max_digits=15, timeout=6, max_attempts=3, invalid_prompt, on_fail (default: queue)
* hangup:   prompt
* goto:     target

Every node may also carry ``description``. Calendar file schema (``calendar.yaml``)::

    timezone: Asia/Shanghai
    weekly: {mon-sat: ["08:00-20:00"], sun: ["10:00-16:00"]}   # unlisted days are closed
    holidays: [{date: 2026-10-01, name: National Day, hours: []}]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from callcenter.ivr.calendar import WEEKDAYS, BusinessCalendar, Holiday, TimeRange
from callcenter.ivr.model import (
    TERMINAL_TYPES,
    AnyNode,
    CallbackNode,
    CollectNode,
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
    is_dtmf_key,
    successors,
)

CALENDAR_FILE = "calendar.yaml"
PROMPTS_FILE = "prompts.yaml"  # the words of the prompts (`callcenter flows prompts`)
MAX_FILE_BYTES = 1_000_000

_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RANGE_RE = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


@dataclass(frozen=True, slots=True)
class FlowError:
    """One validation problem: where (file, 1-based line, node id) and what."""

    file: str
    line: int
    node: str | None
    code: str  # yaml, schema, unknown_type, unknown_field, unknown_target, unreachable,
    # no_way_out, duplicate_key, bad_time, bad_timezone, bad_value, io
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.node}: {self.message}" if self.node else f"{where}: {self.message}"


class FlowLoadError(Exception):
    """A flow or calendar file failed validation; ``errors`` lists every problem found."""

    def __init__(self, errors: list[FlowError]) -> None:
        super().__init__("; ".join(str(e) for e in errors[:5]))
        self.errors = errors


# ---------------------------------------------------------------------------------------------
# YAML with marks


class _Doc:
    """Error collector + typed accessors over composed YAML nodes (which keep line marks)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[FlowError] = []

    def error(self, at: yaml.Node | int, node: str | None, code: str, message: str) -> None:
        line = at if isinstance(at, int) else at.start_mark.line + 1
        self.errors.append(FlowError(self.source, line, node, code, message))

    def compose(self, text: str) -> yaml.Node | None:
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            self.error(line, None, "yaml", f"YAML syntax error: {exc.problem or exc}")
        except yaml.YAMLError as exc:
            self.error(1, None, "yaml", f"YAML error: {exc}")
        return None

    def mapping(
        self, n: yaml.Node, node: str | None, what: str
    ) -> list[tuple[str, yaml.Node, yaml.Node]] | None:
        """(key, key node, value node) triples; duplicate keys are reported and dropped."""
        if not isinstance(n, yaml.MappingNode):
            self.error(n, node, "schema", f"{what} must be a mapping")
            return None
        seen: dict[str, int] = {}
        out: list[tuple[str, yaml.Node, yaml.Node]] = []
        for k, v in n.value:
            if not isinstance(k, yaml.ScalarNode):
                self.error(k, node, "schema", f"{what}: keys must be plain values")
                continue
            key = str(k.value)
            if key in seen:
                self.error(
                    k,
                    node,
                    "duplicate_key",
                    f"{what}: duplicate key {key!r} (first on line {seen[key]})",
                )
                continue
            seen[key] = k.start_mark.line + 1
            out.append((key, k, v))
        return out

    def top_level(
        self, text: str, what: str, known: tuple[str, ...]
    ) -> tuple[yaml.Node, dict[str, tuple[yaml.Node, yaml.Node]]] | None:
        """The document's root and its fields (key -> key node, value node); an empty
        document, a root that is not a mapping and unknown fields are reported."""
        root = self.compose(text)
        if root is None:
            if not self.errors:
                self.error(1, None, "schema", f"empty {what} file")
            return None
        pairs = self.mapping(root, None, f"{what} file")
        if pairs is None:
            return None
        top = {k: (kn, vn) for k, kn, vn in pairs}
        for key, (kn, _vn) in top.items():
            if key not in known:
                self.error(kn, None, "unknown_field", f"unknown {what} field {key!r}")
        return root, top

    def named_values(
        self,
        n: yaml.Node,
        node: str | None,
        what: str,
        *,
        valid: Callable[[str], object],
        invalid: str,
        item: str,
    ) -> list[tuple[str, str, yaml.Node]]:
        """(name, value, value node) of a mapping of names to single values. A name that is
        not ``valid`` is reported as ``'<name>' <invalid>``; ``item`` names a value in its
        error (``variable`` -> "variable 'X' must be a single value")."""
        out: list[tuple[str, str, yaml.Node]] = []
        for key, kn, vn in self.mapping(n, node, what) or []:
            value = self.scalar(vn, node, f"{item} {key!r}")
            if not valid(key):
                self.error(kn, node, "bad_value", f"{key!r} {invalid}")
            elif value is not None:
                out.append((key, value, vn))
        return out

    def scalar(self, n: yaml.Node, node: str | None, what: str) -> str | None:
        if not isinstance(n, yaml.ScalarNode) or n.tag == "tag:yaml.org,2002:null":
            self.error(n, node, "schema", f"{what} must be a single value")
            return None
        return str(n.value)

    def string_list(self, n: yaml.Node, node: str | None, what: str) -> list[str] | None:
        if isinstance(n, yaml.ScalarNode):
            value = self.scalar(n, node, what)
            return None if value is None else [value]
        if not isinstance(n, yaml.SequenceNode):
            self.error(n, node, "schema", f"{what} must be a value or a list")
            return None
        out: list[str] = []
        for item in n.value:
            value = self.scalar(item, node, what)
            if value is None:
                return None
            out.append(value)
        return out


# ---------------------------------------------------------------------------------------------
# field specs


@dataclass(frozen=True, slots=True)
class _F:
    kind: str  # str, int, bool, seconds, ref, prompts, key, options, langoptions, var, lang
    required: bool = False
    default: Any = None
    lo: float | None = None
    hi: float | None = None


_NODE_FIELDS: dict[str, dict[str, _F]] = {
    "play": {"prompt": _F("prompts", True), "next": _F("ref", True)},
    "menu": {
        "prompt": _F("str", True),
        "options": _F("options", True),
        "timeout": _F("seconds", default=5000, lo=0.5, hi=60),
        "max_invalid": _F("int", default=3, lo=1, hi=20),
        "max_timeouts": _F("int", default=3, lo=1, hi=20),
        "on_exhausted": _F("ref"),
        "replay_key": _F("key"),
        "operator_key": _F("key"),
        "invalid_prompt": _F("str"),
        "timeout_prompt": _F("str"),
    },
    "collect": {
        "prompt": _F("str", True),
        "var": _F("var", True),
        "next": _F("ref", True),
        "min_digits": _F("int", default=1, lo=1, hi=64),
        "max_digits": _F("int", default=20, lo=1, hi=64),
        "timeout": _F("seconds", default=6000, lo=0.5, hi=60),
        "terminator": _F("str", default="#"),
        "max_attempts": _F("int", default=3, lo=1, hi=20),
        "invalid_prompt": _F("str"),
        "on_fail": _F("ref"),
    },
    "hours": {"open": _F("ref", True), "closed": _F("ref", True), "holiday": _F("ref")},
    "lookup": {"next": _F("ref", True), "key_priority": _F("int", default=10, lo=0, hi=100)},
    "language": {
        "prompt": _F("str", True),
        "options": _F("langoptions", True),
        "default": _F("lang", True),
        "next": _F("ref", True),
        "timeout": _F("seconds", default=4000, lo=0.5, hi=60),
        "skip_if_known": _F("bool", default=True),
    },
    "set": {
        "var": _F("var", True),
        "value": _F("str", True),
        "next": _F("ref", True),
        "channel": _F("bool", default=False),
    },
    "queue": {
        "queue": _F("str", True),
        "priority": _F("int", default=0, lo=0, hi=100),
        "prompt": _F("str"),
    },
    "callback": {
        "confirm_prompt": _F("str", True),
        "confirm_menu_prompt": _F("str", True),
        "enter_prompt": _F("str", True),
        "done_prompt": _F("str", True),
        "queue": _F("str"),
        "min_digits": _F("int", default=5, lo=1, hi=32),
        "max_digits": _F("int", default=15, lo=1, hi=32),
        "timeout": _F("seconds", default=6000, lo=0.5, hi=60),
        "max_attempts": _F("int", default=3, lo=1, hi=20),
        "invalid_prompt": _F("str"),
        "on_fail": _F("ref"),
    },
    "hangup": {"prompt": _F("str")},
    "goto": {"target": _F("ref", True)},
}

_FLOW_FIELDS = {"name", "start", "language", "languages", "variables", "nodes", "description"}
_BOOL_TRUE = {"true", "yes", "on"}
_BOOL_FALSE = {"false", "no", "off"}


def _parse_field(
    doc: _Doc, spec: _F, name: str, v: yaml.Node, node_id: str, refs: list[tuple[str, yaml.Node]]
) -> Any:
    what = f"field {name!r}"
    if spec.kind == "prompts":
        items = doc.string_list(v, node_id, what)
        if items is not None and not items:
            doc.error(v, node_id, "schema", f"{what} must not be empty")
            return None
        return None if items is None else tuple(items)
    if spec.kind in ("options", "langoptions"):
        pairs = doc.mapping(v, node_id, what)
        if pairs is None:
            return None
        opts: dict[str, str] = {}
        for key, knode, vnode in pairs:
            if not is_dtmf_key(key):
                doc.error(knode, node_id, "bad_value", f"option key {key!r} is not one DTMF key")
                continue
            value = doc.scalar(vnode, node_id, f"option {key!r}")
            if value is None:
                continue
            if spec.kind == "options":
                refs.append((value, vnode))
            opts[key] = value
        return MappingProxyType(opts)
    value = doc.scalar(v, node_id, what)
    if value is None:
        return None
    if spec.kind == "ref":
        refs.append((value, v))
        return value
    if spec.kind in ("str", "lang"):
        if value == "":
            doc.error(v, node_id, "bad_value", f"{what} must not be empty")
            return None
        return value
    if spec.kind == "var":
        if not _VAR_RE.match(value):
            doc.error(v, node_id, "bad_value", f"{what}: {value!r} is not a variable name")
            return None
        return value
    if spec.kind == "key":
        if not is_dtmf_key(value):
            doc.error(v, node_id, "bad_value", f"{what}: {value!r} is not one DTMF key")
            return None
        return value
    if spec.kind == "bool":
        low = value.lower()
        if low in _BOOL_TRUE or low in _BOOL_FALSE:
            return low in _BOOL_TRUE
        doc.error(v, node_id, "bad_value", f"{what} must be true or false")
        return None
    number: float
    try:
        number = int(value) if spec.kind == "int" else float(value)
    except ValueError:
        doc.error(v, node_id, "bad_value", f"{what} must be a number, not {value!r}")
        return None
    if (spec.lo is not None and number < spec.lo) or (spec.hi is not None and number > spec.hi):
        doc.error(v, node_id, "bad_value", f"{what} must be between {spec.lo:g} and {spec.hi:g}")
        return None
    return int(number * 1000) if spec.kind == "seconds" else number


_BUILDERS: dict[str, Callable[..., AnyNode]] = {
    "play": lambda **f: PlayNode(prompts=f.pop("prompt"), **f),
    "menu": lambda **f: MenuNode(timeout_ms=f.pop("timeout"), **f),
    "collect": lambda **f: CollectNode(timeout_ms=f.pop("timeout"), **f),
    "hours": lambda **f: HoursNode(**f),
    "lookup": lambda **f: LookupNode(**f),
    "language": lambda **f: LanguageNode(timeout_ms=f.pop("timeout"), **f),
    "set": lambda **f: SetNode(**f),
    "queue": lambda **f: QueueNode(**f),
    "callback": lambda **f: CallbackNode(timeout_ms=f.pop("timeout"), **f),
    "hangup": lambda **f: HangupNode(**f),
    "goto": lambda **f: GotoNode(**f),
}


def _parse_node(
    doc: _Doc, node_id: str, knode: yaml.Node, v: yaml.Node, refs: list[tuple[str, yaml.Node]]
) -> AnyNode | None:
    if not _ID_RE.match(node_id):
        doc.error(knode, node_id, "bad_value", f"node id {node_id!r} is not a valid identifier")
    pairs = doc.mapping(v, node_id, f"node {node_id!r}")
    if pairs is None:
        return None
    fields = {k: (kn, vn) for k, kn, vn in pairs}
    if "type" not in fields:
        doc.error(v, node_id, "schema", "node has no 'type'")
        return None
    kind = doc.scalar(fields["type"][1], node_id, "field 'type'")
    if kind is None:
        return None
    specs = _NODE_FIELDS.get(kind)
    if specs is None:
        doc.error(
            fields["type"][1],
            node_id,
            "unknown_type",
            f"unknown node type {kind!r} (known: {', '.join(sorted(_NODE_FIELDS))})",
        )
        return None
    ok = True
    values: dict[str, Any] = {}
    for name, (kn, _vn) in fields.items():
        if name not in specs and name not in ("type", "description"):
            doc.error(kn, node_id, "unknown_field", f"unknown field {name!r} for a {kind} node")
            ok = False
    for name, spec in specs.items():
        if name not in fields:
            if spec.required:
                doc.error(v, node_id, "schema", f"{kind} node needs field {name!r}")
                ok = False
            elif spec.default is not None:
                values[name] = spec.default
            continue
        parsed = _parse_field(doc, spec, name, fields[name][1], node_id, refs)
        if parsed is None:
            ok = False
        else:
            values[name] = parsed
    if not ok:
        return None
    line = knode.start_mark.line + 1
    node = _BUILDERS[kind](id=node_id, line=line, **values)
    _check_node(doc, node, v, fields)
    return node


def _check_node(
    doc: _Doc, node: AnyNode, v: yaml.Node, fields: Mapping[str, tuple[yaml.Node, yaml.Node]]
) -> None:
    def at(name: str) -> yaml.Node:
        return fields[name][1] if name in fields else v

    if isinstance(node, MenuNode):
        used = set(node.options)
        for name, key in (("replay_key", node.replay_key), ("operator_key", node.operator_key)):
            if key is None:
                continue
            if key in used:
                doc.error(at(name), node.id, "duplicate_key", f"{name} {key!r} is already used")
            used.add(key)
        if not node.options and node.operator_key is None:
            doc.error(v, node.id, "no_way_out", "menu has no options and no operator key")
    if isinstance(node, CollectNode | CallbackNode) and node.min_digits > node.max_digits:
        doc.error(at("min_digits"), node.id, "bad_value", "min_digits is larger than max_digits")
    if isinstance(node, CollectNode) and node.terminator != "#":
        # GET DATA always ends input with '#'; Asterisk offers no other terminator.
        doc.error(at("terminator"), node.id, "bad_value", "terminator must be '#'")
    if isinstance(node, LanguageNode) and not node.options:
        doc.error(at("options"), node.id, "no_way_out", "language node has no options")


def _graph_checks(
    doc: _Doc,
    nodes: Mapping[str, AnyNode],
    declared: set[str],
    start: str,
    start_node: yaml.Node,
    refs: list[tuple[str, yaml.Node, str]],
) -> None:
    for target, at, owner in refs:
        if target not in declared:
            doc.error(at, owner, "unknown_target", f"unknown target node {target!r}")
    if start not in declared:
        doc.error(start_node, None, "unknown_target", f"start node {start!r} does not exist")
        return
    if set(nodes) != declared:
        return  # reachability is only meaningful once every node parsed
    reachable: set[str] = set()
    stack = [start]
    while stack:
        nid = stack.pop()
        if nid in reachable or nid not in nodes:
            continue
        reachable.add(nid)
        stack.extend(successors(nodes[nid]))
    for nid, node in nodes.items():
        if nid not in reachable:
            doc.error(
                node.line, nid, "unreachable", f"node {nid!r} cannot be reached from {start!r}"
            )
    # Nodes that can end the call (menus without on_exhausted end in the default queue).
    ends: set[str] = {
        nid
        for nid, n in nodes.items()
        if isinstance(n, TERMINAL_TYPES)
        or (isinstance(n, MenuNode) and (n.on_exhausted is None or n.operator_key is not None))
    }
    changed = True
    while changed:
        changed = False
        for nid, n in nodes.items():
            if nid not in ends and any(s in ends for s in successors(n)):
                ends.add(nid)
                changed = True
    for nid in sorted(reachable - ends, key=lambda i: nodes[i].line):
        doc.error(nodes[nid].line, nid, "no_way_out", f"no path from {nid!r} ends the call")


def parse_flow(text: str, *, source: str, default_name: str) -> tuple[Flow | None, list[FlowError]]:
    """Parse and validate one flow document. Returns the flow only when there are no errors."""
    doc = _Doc(source)
    root = doc.compose(text)
    if root is None:
        if not doc.errors:
            doc.error(1, None, "schema", "empty flow file")
        return None, doc.errors
    pairs = doc.mapping(root, None, "flow file")
    if pairs is None:
        return None, doc.errors
    top = {k: (kn, vn) for k, kn, vn in pairs}
    for key, (kn, _vn) in top.items():
        if key not in _FLOW_FIELDS:
            doc.error(kn, None, "unknown_field", f"unknown top-level field {key!r}")
    name = default_name
    if "name" in top:
        name = doc.scalar(top["name"][1], None, "name") or default_name
    language = "zh"
    if "language" in top:
        language = doc.scalar(top["language"][1], None, "language") or language
    languages: tuple[str, ...] = ()
    if "languages" in top:
        langs = doc.string_list(top["languages"][1], None, "languages")
        languages = tuple(langs or ())
        if languages and language not in languages:
            doc.error(
                top["language"][1] if "language" in top else root,
                None,
                "bad_value",
                f"default language {language!r} is not in languages",
            )
    variables: dict[str, str] = {}
    if "variables" in top:
        for key, value, _vn in doc.named_values(
            top["variables"][1],
            None,
            "variables",
            valid=_VAR_RE.match,
            invalid="is not a variable name",
            item="variable",
        ):
            variables[key] = value
    if "start" not in top:
        doc.error(root, None, "schema", "flow has no 'start' node")
    if "nodes" not in top:
        doc.error(root, None, "schema", "flow has no 'nodes'")
        return None, doc.errors
    nodes: dict[str, AnyNode] = {}
    declared: set[str] = set()
    refs: list[tuple[str, yaml.Node, str]] = []
    for node_id, kn, vn in doc.mapping(top["nodes"][1], None, "nodes") or []:
        declared.add(node_id)
        node_refs: list[tuple[str, yaml.Node]] = []
        node = _parse_node(doc, node_id, kn, vn, node_refs)
        refs.extend((t, at, node_id) for t, at in node_refs)
        if node is not None:
            nodes[node_id] = node
            if isinstance(node, LanguageNode) and languages:
                for lang in (*node.options.values(), node.default):
                    if lang not in languages:
                        doc.error(
                            vn, node_id, "bad_value", f"language {lang!r} is not in languages"
                        )
    if not declared:
        doc.error(top["nodes"][1], None, "schema", "flow has no nodes")
    start = doc.scalar(top["start"][1], None, "start") if "start" in top else None
    if start is not None and declared:
        _graph_checks(doc, nodes, declared, start, top["start"][1], refs)
    if doc.errors:
        return None, _dedupe(doc.errors)
    return (
        Flow(
            name=name,
            start=start or "",
            nodes=MappingProxyType(nodes),
            language=language,
            languages=languages,
            source=source,
            variables=MappingProxyType(variables),
        ),
        [],
    )


def _dedupe(errors: list[FlowError]) -> list[FlowError]:
    seen: set[FlowError] = set()
    out: list[FlowError] = []
    for e in errors:
        if e not in seen:
            seen.add(e)
            out.append(e)
    return out


# ---------------------------------------------------------------------------------------------
# calendar


def _parse_ranges(doc: _Doc, n: yaml.Node, what: str) -> tuple[TimeRange, ...] | None:
    items = (
        doc.string_list(n, None, what)
        if not (isinstance(n, yaml.SequenceNode) and not n.value)
        else []
    )
    if items is None:
        return None
    out: list[TimeRange] = []
    for item in items:
        m = _RANGE_RE.match(item.strip())
        if m is None:
            doc.error(n, None, "bad_time", f"{what}: {item!r} is not HH:MM-HH:MM")
            return None
        h1, m1, h2, m2 = (int(x) for x in m.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 != 0):
            doc.error(n, None, "bad_time", f"{what}: {item!r} is not a valid time range")
            return None
        start = time(h1, m1)
        end = None if h2 == 24 else time(h2, m2)
        if end is not None and end <= start:
            doc.error(n, None, "bad_time", f"{what}: {item!r} ends before it starts")
            return None
        out.append(TimeRange(start, end))
    return tuple(out)


def _weekday_keys(key: str) -> list[int] | None:
    parts = [p.strip().lower() for p in key.split(",")]
    days: list[int] = []
    for part in parts:
        a, _, b = part.partition("-")
        if a not in WEEKDAYS or (b and b not in WEEKDAYS):
            return None
        i, j = WEEKDAYS.index(a), WEEKDAYS.index(b or a)
        if j < i:
            return None
        days.extend(range(i, j + 1))
    return days


def parse_calendar(text: str, *, source: str) -> tuple[BusinessCalendar | None, list[FlowError]]:
    """Parse and validate a calendar document."""
    doc = _Doc(source)
    parsed = doc.top_level(text, "calendar", ("timezone", "weekly", "holidays", "description"))
    if parsed is None:
        return None, doc.errors
    root, top = parsed
    tz: ZoneInfo | None = None
    if "timezone" not in top:
        doc.error(root, None, "schema", "calendar has no 'timezone'")
    else:
        tzname = doc.scalar(top["timezone"][1], None, "timezone")
        if tzname is not None:
            try:
                tz = ZoneInfo(tzname)
            except (ZoneInfoNotFoundError, ValueError):
                doc.error(top["timezone"][1], None, "bad_timezone", f"unknown timezone {tzname!r}")
    weekly: dict[int, tuple[TimeRange, ...]] = {}
    day_lines: dict[int, int] = {}
    if "weekly" in top:
        for key, kn, vn in doc.mapping(top["weekly"][1], None, "weekly") or []:
            days = _weekday_keys(key)
            if days is None:
                doc.error(kn, None, "bad_time", f"{key!r} is not a weekday or range like mon-fri")
                continue
            ranges = _parse_ranges(doc, vn, f"weekly {key}")
            for d in days:
                if d in day_lines:
                    doc.error(
                        kn,
                        None,
                        "duplicate_key",
                        f"{WEEKDAYS[d]} already given on line {day_lines[d]}",
                    )
                    continue
                day_lines[d] = kn.start_mark.line + 1
                if ranges is not None:
                    weekly[d] = ranges
    holidays: dict[date, Holiday] = {}
    if "holidays" in top:
        hn = top["holidays"][1]
        if not isinstance(hn, yaml.SequenceNode):
            doc.error(hn, None, "schema", "holidays must be a list")
        else:
            for item in hn.value:
                fields = {k: vn for k, _kn, vn in doc.mapping(item, None, "holiday") or []}
                for extra in set(fields) - {"date", "name", "hours"}:
                    doc.error(
                        fields[extra], None, "unknown_field", f"unknown holiday field {extra!r}"
                    )
                if "date" not in fields:
                    doc.error(item, None, "schema", "holiday has no 'date'")
                    continue
                raw = doc.scalar(fields["date"], None, "date")
                if raw is None:
                    continue
                try:
                    day = date.fromisoformat(raw)
                except ValueError:
                    doc.error(fields["date"], None, "bad_time", f"{raw!r} is not a YYYY-MM-DD date")
                    continue
                if day in holidays:
                    doc.error(fields["date"], None, "duplicate_key", f"holiday {raw} listed twice")
                    continue
                name = doc.scalar(fields["name"], None, "name") if "name" in fields else None
                hours: tuple[TimeRange, ...] | None = ()
                if "hours" in fields:
                    hours = _parse_ranges(doc, fields["hours"], f"holiday {raw} hours")
                holidays[day] = Holiday(day, name or "holiday", hours or ())
    if doc.errors or tz is None:
        return None, doc.errors
    return BusinessCalendar(tz, MappingProxyType(weekly), MappingProxyType(holidays)), []


# ---------------------------------------------------------------------------------------------
# prompt texts

_PROMPT_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
# Asterisk's language folders: zh, en, en_GB, pt_BR...
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(?:[_-][A-Za-z0-9]+)*$")
_NOT_A_LANGUAGE = "is not a language code like zh or en"


def is_prompt_name(name: str) -> bool:
    """A sound file name under Asterisk's sounds directory, without extension: relative, no
    segment starting with a dot, so no ``..`` (``hotline/welcome``)."""
    return _PROMPT_NAME_RE.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class PromptTexts:
    """``prompts.yaml``: the words of each prompt per language (placeholders for recorded
    prompts), and the espeak-ng voice of each language."""

    words: Mapping[str, Mapping[str, str]]  # prompt -> language -> words
    voices: Mapping[str, str]  # language -> espeak-ng voice (the language code when absent)
    lines: Mapping[str, int]  # prompt -> line in the file
    source: str = ""


def parse_prompt_texts(text: str, *, source: str) -> tuple[PromptTexts | None, list[FlowError]]:
    """Parse and validate a prompt texts document."""
    doc = _Doc(source)
    parsed = doc.top_level(text, "prompts", ("voices", "prompts", "description"))
    if parsed is None:
        return None, doc.errors
    root, top = parsed
    voices: dict[str, str] = {}
    if "voices" in top:
        for lang, voice, _vn in doc.named_values(
            top["voices"][1],
            None,
            "voices",
            valid=_LANGUAGE_RE.fullmatch,
            invalid=_NOT_A_LANGUAGE,
            item="voice of",
        ):
            voices[lang] = voice
    words: dict[str, dict[str, str]] = {}
    lines: dict[str, int] = {}
    entries: list[tuple[str, yaml.Node, yaml.Node]] = []
    if "prompts" in top:
        entries = doc.mapping(top["prompts"][1], None, "prompts") or []
    else:
        doc.error(root, None, "schema", "prompts file has no 'prompts'")
    for name, kn, vn in entries:
        if not is_prompt_name(name):
            doc.error(kn, name, "bad_value", "not a sound file name like hotline/welcome")
            continue
        per_language: dict[str, str] = {}
        for lang, said, lvn in doc.named_values(
            vn,
            name,
            f"prompt {name!r}",
            valid=_LANGUAGE_RE.fullmatch,
            invalid=_NOT_A_LANGUAGE,
            item="words in",
        ):
            if not said.strip():
                doc.error(lvn, name, "bad_value", f"empty words in {lang!r}")
            else:
                per_language[lang] = said.strip()
        words[name] = per_language
        lines[name] = kn.start_mark.line + 1
    if doc.errors:
        return None, doc.errors
    texts = PromptTexts(
        words=MappingProxyType({k: MappingProxyType(v) for k, v in words.items()}),
        voices=MappingProxyType(voices),
        lines=MappingProxyType(lines),
        source=source,
    )
    return texts, []


# ---------------------------------------------------------------------------------------------
# files


def _read(path: Path) -> str:
    def fail(message: str) -> FlowLoadError:
        return FlowLoadError([FlowError(str(path), 1, None, "io", message)])

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read: {exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise fail(f"file larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8: {exc}") from exc


def load_flow(path: Path) -> Flow:
    """Load one flow file; raises ``FlowLoadError`` listing every problem."""
    flow, errors = parse_flow(_read(path), source=str(path), default_name=path.stem)
    if flow is None:
        raise FlowLoadError(errors)
    return flow


def load_calendar(path: Path) -> BusinessCalendar:
    """Load the calendar file; raises ``FlowLoadError`` listing every problem."""
    cal, errors = parse_calendar(_read(path), source=str(path))
    if cal is None:
        raise FlowLoadError(errors)
    return cal


def load_prompt_texts(path: Path) -> PromptTexts:
    """Load the prompt texts file; raises ``FlowLoadError`` listing every problem."""
    texts, errors = parse_prompt_texts(_read(path), source=str(path))
    if texts is None:
        raise FlowLoadError(errors)
    return texts


def flow_files(directory: Path) -> list[Path]:
    """The flow files of a directory (``*.yaml``/``*.yml`` except the calendar and the prompt
    texts), sorted."""
    return sorted(
        p
        for p in [*directory.glob("*.yaml"), *directory.glob("*.yml")]
        if p.is_file() and p.name not in (CALENDAR_FILE, PROMPTS_FILE)
    )


def duplicate_flow_name(path: Path, name: str, other: Path) -> FlowError:
    """Two files define the same flow name (the AGI script name must pick one flow)."""
    return FlowError(
        str(path), 1, None, "duplicate_key", f"flow name {name!r} already used by {other}"
    )


def check_flows(directory: Path) -> list[FlowError]:
    """Validate every flow file and the calendar of a directory (``callcenter flows check``)."""
    if not directory.is_dir():
        return [FlowError(str(directory), 1, None, "io", "flows directory does not exist")]
    errors: list[FlowError] = []
    names: dict[str, Path] = {}
    for path in flow_files(directory):
        try:
            flow = load_flow(path)
        except FlowLoadError as exc:
            errors.extend(exc.errors)
            continue
        if flow.name in names:
            errors.append(duplicate_flow_name(path, flow.name, names[flow.name]))
        names[flow.name] = path
    loaders: tuple[tuple[str, Callable[[Path], object]], ...] = (
        (CALENDAR_FILE, load_calendar),
        (PROMPTS_FILE, load_prompt_texts),
    )
    for name, load in loaders:
        path = directory / name
        if path.is_file():
            try:
                load(path)
            except FlowLoadError as exc:
                errors.extend(exc.errors)
    return errors
