"""AMI server of the PBX emulator: the session and protocol machinery of Asterisk 20's manager.c.

The PBX core registers its actions and CLI commands here and publishes events through
`AmiServer.publish`; this module owns framing, login, permissions, event routing and shutdown.

Asterisk behaviours emulated (PROTOCOL.md §1, §8; transcripts 01, 02, 03, 08, 10):

* Banner `Asterisk Call Manager/<version>` with no empty line after it; CRLF output; CRLF or bare
  LF input; 1024-byte input buffer ("Failed to parse message: line too long"); 128 lines per
  message ("Too many lines in message or allocation failure"); a NUL ends a line; header names
  case-insensitive, value after the colon with leading blanks skipped, first occurrence wins.
* Response layout Response / ActionID (if non-empty) / EventList / Message / action headers.
  An empty message gives "Missing action in request"; unknown actions the exact
  "Invalid/unknown command" text; actions the user may not write give "Permission denied".
* Before login only Login, Logoff and Challenge. Plaintext and MD5 (Challenge, lowercase hex Key)
  login, case-insensitive user names; a failed login sleeps 1 s, answers "Authentication failed"
  and closes; "Login Already In Use" (allowmultiplelogin=no) likewise; "Already authenticated".
  FullyBooted written inline after Login when the session reads system events.
* `Events:` on Login and Action Events (on/off/class list with ast_instring's prefix quirk/bit
  mask, brokeneventsaction); Action Filter and per-user eventfilter, legacy regex with `!`
  exclude and the advanced MatchCriteria form (action/name/header/method).
* One action at a time per session; queued events are written only between actions, never
  inside a list; an action handler may block (sync Originate). Logoff answers Goodbye and closes.
* Events: `Privilege: <classes>,all`, optional Timestamp (timestampevents), SequenceNumber/File/
  Line/Func (debug), SystemName (systemname), disabledevents; read permission is checked when
  an event is queued, the session's event mask and its filters when it is written.
* authtimeout (silent drop), authlimit (refuse before the banner), writetimeout (a client that
  stops reading is disconnected instead of being buffered for), ListCommands, Command in the
  Asterisk >= 14 format (Output lines, "No such command ...", usage/failure texts, blacklist).
* Shutdown: actions get "Asterisk is shutting down"; Event Shutdown to system readers, then every
  socket closes.

manager.conf `channelvars` is applied where channel blocks are built (`pbx.Channel.snapshot`,
`EmulatorConfig.channelvars`), as Asterisk applies it to channel snapshots; this server writes
the lines it is given.

Not emulated: TLS, HTTP manager (rawman/mxml), ACLs (permit/deny), `SuppressEvents` (events are
flushed between actions).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from callcenter.asterisk.message import AmiMessage
from callcenter.pbxsim.wire import (
    Header,
    RawRequest,
    RequestFramer,
    action_id_header,
    ast_false,
    ast_true,
    encode_message,
    format_timeval,
    render_lines,
    to_wire,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Permission classes (manager.c perms[], manager.h EVENT_FLAG_*)

INT_MAX = 0x7FFFFFFF
EVENT_CLASSES: tuple[tuple[str, int], ...] = (
    ("system", 1 << 0),
    ("call", 1 << 1),
    ("log", 1 << 2),
    ("verbose", 1 << 3),
    ("command", 1 << 4),
    ("agent", 1 << 5),
    ("user", 1 << 6),
    ("config", 1 << 7),
    ("dtmf", 1 << 8),
    ("reporting", 1 << 9),
    ("cdr", 1 << 10),
    ("dialplan", 1 << 11),
    ("originate", 1 << 12),
    ("agi", 1 << 13),
    ("cc", 1 << 15),
    ("aoc", 1 << 16),
    ("test", 1 << 17),
    ("security", 1 << 18),
    ("message", 1 << 19),
    ("all", INT_MAX),
    ("none", 0),
)
_CLASS_BITS = dict(EVENT_CLASSES)
SYSTEM = _CLASS_BITS["system"]
COMMAND = _CLASS_BITS["command"]


def class_mask(classes: str) -> int:
    """Exact class names, comma separated (`"agent"`, `"call,originate"`), to a bit mask."""
    mask = 0
    for name in classes.split(","):
        name = name.strip()
        if name not in _CLASS_BITS:
            raise ValueError(f"unknown AMI event class {name!r}")
        mask |= _CLASS_BITS[name]
    return mask


def authority_to_str(mask: int) -> str:
    """`authority_to_str`: class names in table order; `all` matches any non-zero mask."""
    names = [name for name, bit in EVENT_CLASSES[:-1] if mask & bit]
    return ",".join(names) if names else "<none>"


def _instring(big: str, small: str) -> bool:
    # ast_instring() compares every token but the last with strncmp(token_len), so a token
    # only needs to be a prefix of the class name ("ag,call" selects agent and agi too).
    val = big
    while True:
        token, sep, rest = val.partition(",")
        if not sep:
            return small == val
        if small.startswith(token):
            return True
        if not rest:
            return False
        val = rest


def get_perm(text: str) -> int:
    """manager.conf read=/write= and Events class lists (`get_perm`, case-sensitive)."""
    mask = 0
    for name, bit in EVENT_CLASSES:
        if _instring(text, name):
            mask |= bit
    return mask


def strings_to_mask(text: str) -> int:
    """`strings_to_mask`: -1 (invalid) for an empty value, else the mask to set."""
    if not text:
        return -1
    if all("0" <= ch <= "9" for ch in text):
        # atoi() -> strtol() clamps, then the value is truncated to a C int
        value = min(int(text), 2**63 - 1) & 0xFFFFFFFF
        return value - 2**32 if value >= 2**31 else value
    if ast_false(text):
        return 0
    if ast_true(text):
        mask = 0
        for _, bit in EVENT_CLASSES:
            mask |= bit
        return mask
    return get_perm(text)


# ---------------------------------------------------------------------------------------------
# Event filters (manager.c manager_add_filter / filter_cmp_fn / should_send_event)

FilterMethod = Literal["regex", "exact", "starts_with", "ends_with", "contains", "none"]
_METHODS: tuple[FilterMethod, ...] = (
    "regex",
    "exact",
    "starts_with",
    "ends_with",
    "contains",
    "none",
)

_POSIX_CLASSES = {
    "[:alpha:]": "a-zA-Z",
    "[:digit:]": "0-9",
    "[:alnum:]": "a-zA-Z0-9",
    "[:upper:]": "A-Z",
    "[:lower:]": "a-z",
    "[:space:]": " \\t\\n\\r\\f\\v",
    "[:blank:]": " \\t",
    "[:xdigit:]": "0-9A-Fa-f",
    "[:punct:]": "!-/:-@\\[-`{-~",
    "[:cntrl:]": "\\x00-\\x1f\\x7f",
    "[:print:]": "\\x20-\\x7e",
    "[:graph:]": "\\x21-\\x7e",
}


_BLANKS = "".join(map(chr, range(1, 33)))  # ast_skip_blanks skips every byte below 33


class FilterError(ValueError):
    """A filter Asterisk would refuse; `reply` is the exact Message of the Filter action."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


_COMPILE_FAIL = "Filter did not compile.  Check the syntax of the filter given."
_FORMAT_ERROR = "Filter was formatted incorrectly.  Check the syntax of the filter given."


def compile_posix_regex(pattern: str) -> re.Pattern[str]:
    """regcomp(REG_EXTENDED) approximated with `re`: POSIX bracket classes, `.` matches CR/LF."""
    for posix, py in _POSIX_CLASSES.items():
        pattern = pattern.replace(posix, py)
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise FilterError(_COMPILE_FAIL) from exc


@dataclass(frozen=True, slots=True)
class EventFilter:
    """One include or exclude filter of a session."""

    exclude: bool
    method: FilterMethod
    pattern: str = ""
    event_name: str | None = None
    header: str | None = None  # with its trailing colon, e.g. "Channel:"
    regex: re.Pattern[str] | None = None

    def _match_data(self, data: str) -> bool:
        if self.method == "regex":
            return self.regex is not None and self.regex.search(data) is not None
        if self.method == "starts_with":
            return data.startswith(self.pattern)
        if self.method == "ends_with":
            return data.endswith(self.pattern)
        if self.method == "contains":
            return self.pattern in data
        if self.method == "exact":
            return data == self.pattern
        return True

    def matches(self, event_name: str, text: str) -> bool:
        if self.event_name is not None and event_name != self.event_name:
            return False
        if self.header is None:
            return self._match_data(text)
        for raw in text.split("\n"):
            line = raw[:-1] if raw.endswith("\r") else raw
            if line.startswith(self.header):
                value = line[len(self.header) :].lstrip(_BLANKS)
                if value and self._match_data(value):
                    return True
        return False


def parse_filter(criteria: str, pattern: str) -> EventFilter:
    """`manager_add_filter`: criteria is `eventfilter` or `eventfilter(<options>)`."""
    exclude = False
    if pattern.startswith("!"):
        exclude = True
        pattern = pattern[1:]
    method: FilterMethod = "regex"
    event_name: str | None = None
    header: str | None = None
    start = criteria.find("(")
    if start < 0 and not pattern:
        raise FilterError(_FORMAT_ERROR)
    if start >= 0:
        method = "none"
        options = criteria[start + 1 :].strip()
        if not options or not options.endswith(")"):
            raise FilterError(_FORMAT_ERROR)
        found = False
        for option in (tok for tok in re.split(r"[ ,)]", options) if tok):
            paren = option.find("(")
            arg = option[paren + 1 :].strip() if paren >= 0 else ""
            if option.startswith("action"):
                if arg == "include":
                    exclude = False
                elif arg == "exclude":
                    exclude = True
                else:
                    raise FilterError(_FORMAT_ERROR)
            elif option.startswith("name"):
                if not arg:
                    raise FilterError(_FORMAT_ERROR)
                event_name = arg
            elif option.startswith("header"):
                if not arg:
                    raise FilterError(_FORMAT_ERROR)
                header = arg if arg.endswith(":") else arg + ":"
            elif option.startswith("method"):
                if arg not in _METHODS:
                    raise FilterError(_FORMAT_ERROR)
                method = _METHODS[_METHODS.index(arg)]
            else:
                raise FilterError(_FORMAT_ERROR)
            found = True
        if not found:
            raise FilterError(_FORMAT_ERROR)
        if (not pattern) != (method == "none"):
            raise FilterError(_FORMAT_ERROR)
        if event_name is None and header is None and method == "none":
            raise FilterError(_FORMAT_ERROR)
    regex = compile_posix_regex(pattern) if pattern and method == "regex" else None
    return EventFilter(exclude, method, pattern, event_name, header, regex)


def should_send(filters: Sequence[EventFilter], event_name: str, text: str) -> bool:
    """No filters: everything. Includes only: any must match. Excludes: none may match."""
    includes = [f for f in filters if not f.exclude]
    excludes = [f for f in filters if f.exclude]
    if includes and not any(f.matches(event_name, text) for f in includes):
        return False
    return not any(f.matches(event_name, text) for f in excludes)


# ---------------------------------------------------------------------------------------------
# Public configuration and handler contracts


@dataclass(frozen=True, slots=True)
class AmiUser:
    """A manager.conf user. `read`/`write` are class lists as in manager.conf (`"all"`,
    `"system,call,agent"`). `event_filters`: a string is a legacy `eventfilter=` pattern, a pair
    is `(criteria, pattern)` such as `("eventfilter(name(Newexten),method(none))", "")`.
    `write_timeout` (seconds) and `allow_multiple_login` default to the server's settings."""

    secret: str
    read: str = "all"
    write: str = "all"
    event_filters: tuple[str | tuple[str, str], ...] = ()
    write_timeout: float | None = None
    allow_multiple_login: bool | None = None


@dataclass(frozen=True, slots=True)
class ActionReply:
    """What an action handler returns; the server writes it in Asterisk's layout:

    `Response`, `ActionID` (if the action had one), `EventList` (list actions), `Message` (if not
    None), then `headers` (action specific: `Ping`, `Events`, `Variable`/`Value`, `Output`...),
    then the empty line; then each message of `followups` verbatim (list items, the `<X>Complete`
    event, an inline FullyBooted), all as one contiguous write. `close` ends the session after
    the write; `send=False` writes nothing at all (brokeneventsaction)."""

    response: str = "Success"
    message: str | None = None
    headers: tuple[Header, ...] = ()
    event_list: str | None = None
    followups: tuple[tuple[Header, ...], ...] = ()
    close: bool = False
    send: bool = True

    @classmethod
    def success(cls, message: str | None = None, headers: Iterable[Header] = ()) -> ActionReply:
        return cls("Success", message, tuple(headers))

    @classmethod
    def error(cls, message: str) -> ActionReply:
        return cls("Error", message)

    @classmethod
    def event_list_reply(
        cls,
        *,
        action_id: str,
        message: str,
        items: Iterable[Sequence[Header]],
        complete_event: str,
        complete_headers: Iterable[Header] = (),
    ) -> ActionReply:
        """A list action: `EventList: start` response, the items (full header lists the handler
        built, `Event:` first, ActionID where that item type puts it, no Privilege), then
        `<complete_event>` / ActionID / `EventList: Complete` / `ListItems: <n>` [+ extra]."""
        item_list = tuple(tuple(item) for item in items)
        complete = (
            ("Event", complete_event),
            *action_id_header(action_id),
            ("EventList", "Complete"),
            ("ListItems", str(len(item_list))),
            *complete_headers,
        )
        return cls(
            "Success",
            message,
            event_list="start",
            followups=(*item_list, complete),
        )


CliStatus = Literal["success", "showusage", "failure"]


@dataclass(frozen=True, slots=True)
class CliResult:
    """Result of a CLI command handler: its text output (lines separated by `\\n`) and the
    handler's outcome. `showusage` appends the command's usage text, `failure` appends
    "Command '<cmd>' failed."; both make the AMI Command response an `Error`."""

    output: str = ""
    status: CliStatus = "success"


ActionHandler = Callable[["AmiSession", AmiMessage], Awaitable[ActionReply]]
CliHandler = Callable[[Sequence[str]], Awaitable[CliResult]]


@dataclass(frozen=True, slots=True)
class _Action:
    name: str
    handler: ActionHandler
    authority: int
    synopsis: str


@dataclass(frozen=True, slots=True)
class _CliCommand:
    words: tuple[str, ...]
    handler: CliHandler
    usage: str


@dataclass(frozen=True, slots=True)
class _Event:
    name: str
    mask: int
    text: str
    data: bytes


_CLOSE = object()  # queued after the Shutdown event: the session ends when it reaches it


def _random_challenge() -> int:
    return random.SystemRandom().randrange(2**31)


# ---------------------------------------------------------------------------------------------
# Session


class AmiSession(asyncio.Protocol):
    """One TCP connection. Read-only for action handlers (`username`, `authenticated`, ...)."""

    def __init__(self, server: AmiServer, session_id: int) -> None:
        self._server = server
        self._id = session_id
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._framer = RequestFramer()
        self._events: deque[_Event | object] = deque()
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._reading_paused = False
        self._eof = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._peer: tuple[str, int] = ("", 0)
        self._auth_deadline = self._loop.time() + server.auth_timeout
        # session state (mansession_session)
        self._authenticated = False
        self._username: str | None = None
        self._read_mask = 0
        self._write_mask = 0
        self._send_events = -1  # all classes until Events:/Action Events says otherwise
        self._filters: list[EventFilter] = []
        self._challenge = ""
        self._write_timeout = server.write_timeout

    # -- public, read-only ---------------------------------------------------------------
    @property
    def id(self) -> int:
        return self._id

    @property
    def server(self) -> AmiServer:
        return self._server

    @property
    def peer(self) -> tuple[str, int]:
        return self._peer

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def username(self) -> str | None:
        return self._username

    @property
    def read_mask(self) -> int:
        return self._read_mask

    @property
    def write_mask(self) -> int:
        return self._write_mask

    @property
    def event_mask(self) -> int:
        return self._send_events

    @property
    def closed(self) -> bool:
        return self._closed

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = (str(peer[0]), int(peer[1]))
        # Writes "block" as soon as the kernel does not take everything, like Asterisk's
        # blocking write with writetimeout; nothing piles up in an asyncio buffer.
        self._transport.set_write_buffer_limits(high=0, low=0)
        if not self._server._admit(self):
            # authlimit reached: manager.c drops the connection before the banner
            self._closed = True
            transport.close()
            return
        self._task = self._loop.create_task(self._run(), name=f"ami-session-{self._id}")

    def data_received(self, data: bytes) -> None:
        self._framer.feed(data)
        if not self._framer.wants_input and self._transport is not None:
            self._transport.pause_reading()
            self._reading_paused = True
        self._wake.set()

    def eof_received(self) -> bool:
        # Lines already received are still processed (get_input scans its buffer first).
        self._eof = True
        self._wake.set()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._eof = True
        self._wake.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- internals -------------------------------------------------------------------------
    def _abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()
        self._wake.set()
        self._writable.set()

    async def _write(self, data: bytes) -> bool:
        if self._closed or self._transport is None or self._transport.is_closing():
            return False
        self._transport.write(data)
        if not self._writable.is_set():
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can drop a cancellation
                async with asyncio.timeout(self._write_timeout):
                    await self._writable.wait()
            except TimeoutError:
                log.warning(
                    "AMI session %d (%s): client not reading for %.3f s, disconnecting",
                    self._id,
                    self._username,
                    self._write_timeout,
                )
                self._abort()
                return False
        return not self._closed

    def _enqueue(self, event: _Event) -> None:
        if self._closed or not self._authenticated:
            return
        if (self._read_mask & event.mask) != event.mask:
            return
        self._events.append(event)
        self._pending_bytes += len(event.data)
        if self._pending_bytes > self._server.max_pending_event_bytes:
            log.warning(
                "AMI session %d (%s): %d bytes of events pending, disconnecting",
                self._id,
                self._username,
                self._pending_bytes,
            )
            self._abort()
            return
        self._wake.set()

    def _enqueue_close(self) -> None:
        self._events.append(_CLOSE)
        self._wake.set()

    def _wants(self, event: _Event) -> bool:
        # Read permission was checked by _enqueue; the event mask and filters may have changed
        # since (Action Events / Filter), so they are checked when the event is written.
        return (self._send_events & event.mask) == event.mask and should_send(
            self._filters, event.name, event.text
        )

    async def _flush_events(self) -> bool:
        """process_events(): write what this session wants; False when the session must end."""
        while self._events:
            batch: list[bytes] = []
            close = False
            while self._events:
                item = self._events.popleft()
                if not isinstance(item, _Event):
                    close = True
                    break
                self._pending_bytes -= len(item.data)
                if self._wants(item):
                    batch.append(item.data)
            if batch and not await self._write(b"".join(batch)):
                return False
            if close:
                return False
        return True

    async def _run(self) -> None:
        try:
            banner = f"Asterisk Call Manager/{self._server.version}\r\n"
            if not await self._write(to_wire(banner)):
                return
            while not self._closed:
                self._wake.clear()
                if not await self._flush_events():
                    return
                request = self._framer.next_request()
                if request is not None:
                    if not await self._process(request):
                        return
                    continue
                if self._reading_paused and self._framer.wants_input:
                    self._reading_paused = False
                    if self._transport is not None and not self._transport.is_closing():
                        self._transport.resume_reading()
                if self._eof:
                    return
                timeout: float | None = None
                if not self._authenticated:
                    timeout = self._auth_deadline - self._loop.time()
                    if timeout <= 0:
                        return  # authtimeout: dropped without a word
                try:
                    async with asyncio.timeout(timeout):  # not wait_for: see _write
                        await self._wake.wait()
                except TimeoutError:
                    continue
        except Exception:
            log.exception("AMI session %d crashed", self._id)
        finally:
            self._closed = True
            if self._transport is not None and not self._transport.is_closing():
                self._transport.close()
            self._server._forget(self)

    async def _process(self, request: RawRequest) -> bool:
        message = AmiMessage(request.headers)
        if request.kind == "too_many_lines":
            reply = ActionReply.error("Too many lines in message or allocation failure")
        elif request.kind == "line_too_long":
            reply = ActionReply.error("Failed to parse message: line too long")
        else:
            reply = await self._server._dispatch(self, message)
        if reply.send and not await self._write(render_reply(message, reply)):
            return False
        return not reply.close


def render_reply(action: AmiMessage, reply: ActionReply) -> bytes:
    """The bytes of a reply to `action` (astman_send_response_full + appended headers)."""
    lines: list[Header] = [("Response", reply.response), *action_id_header(action.get("ActionID"))]
    if reply.event_list is not None:
        lines.append(("EventList", reply.event_list))
    if reply.message is not None:
        lines.append(("Message", reply.message))
    lines.extend(reply.headers)
    return encode_message(lines) + b"".join(encode_message(m) for m in reply.followups)


# ---------------------------------------------------------------------------------------------
# CLI helpers (main/cli.c)

_CLI_BLACKLIST = (("module", "load"), ("module", "unload"), ("restart", "gracefully"))
_ANSI = re.compile(r"\x1b[^m]*m?")


def parse_cli_args(line: str) -> list[str]:
    """cli.c parse_args(): blanks separate words, `"` groups, backslash escapes a character."""
    words: list[str] = []
    cur: list[str] = []
    in_word = quoted = escaped = False
    for ch in line:
        if escaped:
            cur.append(ch)
            escaped = False
            in_word = True
        elif ch == "\\":
            escaped = True
            in_word = True
        elif ch == '"':
            quoted = not quoted
            in_word = True
        elif ch in " \t" and not quoted:
            if in_word:
                words.append("".join(cur))
                cur = []
                in_word = False
        else:
            cur.append(ch)
            in_word = True
    if in_word:
        words.append("".join(cur))
    return words


def _blacklisted(command: str) -> bool:
    words = [w.strip() for w in command.split(" ") if w.strip()]
    return any(
        len(words) >= len(bad) and all(w.lower() == b for w, b in zip(words, bad, strict=False))
        for bad in _CLI_BLACKLIST
    )


def _find_cli(
    entries: Iterable[_CliCommand], argv: Sequence[str], match_type: int
) -> _CliCommand | None:
    """cli.c find_cli(): 0 = the entry is argv or a prefix of it (longest wins); -1 also
    accepts a mismatch on the last word of both (used to build the 'core show help' hint)."""
    best: _CliCommand | None = None
    best_len = -1
    for entry in entries:
        n = 0
        while n < len(argv) and n < len(entry.words) and argv[n].lower() == entry.words[n].lower():
            n += 1
        rest_entry = len(entry.words) - n
        rest_argv = len(argv) - n
        if rest_entry == 0:
            if rest_argv == 0:
                return entry
            if match_type != 0:
                continue
        else:
            if rest_argv == 0:
                continue
            if match_type != -1 or rest_argv > 1 or rest_entry > 1:
                continue
        if n > best_len:
            best_len = n
            best = entry
    return best


# ---------------------------------------------------------------------------------------------
# Server


class AmiServer:
    """The AMI listener. Loop-bound: call every method from the event loop thread.

    Values that vary on real Asterisk are injectable so byte streams can be compared exactly:
    `clock_ns` (epoch nanoseconds: Ping/Timestamp/Uptime), `challenge_source` (Challenge),
    `boot_time_ns`/`reload_time_ns` (FullyBooted Uptime/LastReload), `auth_failure_delay` and
    `sleep` (the 1 s pause before "Authentication failed" / "Login Already In Use").
    """

    def __init__(
        self,
        *,
        users: Mapping[str, AmiUser],
        version: str = "9.0.0",
        clock_ns: Callable[[], int] = time.time_ns,
        challenge_source: Callable[[], int] = _random_challenge,
        boot_time_ns: int | None = None,
        reload_time_ns: int | None = None,
        fully_booted: bool = True,
        auth_failure_delay: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        auth_timeout: float = 30.0,
        auth_limit: int = 50,
        write_timeout: float = 0.1,
        allow_multiple_login: bool = True,
        timestamp_events: bool = False,
        debug: bool = False,
        system_name: str = "",
        disabled_events: Iterable[str] = (),
        broken_events_action: bool = False,
        max_pending_event_bytes: int = 64 * 1024 * 1024,
        shutdown_grace: float = 5.0,
    ) -> None:
        self._users = {name.lower(): user for name, user in users.items()}
        for user in self._users.values():
            for spec in user.event_filters:
                criteria, pattern = ("eventfilter", spec) if isinstance(spec, str) else spec
                parse_filter(criteria, pattern)  # refuse a bad manager.conf at start-up
        self.version = version
        self._clock_ns = clock_ns
        self._challenge_source = challenge_source
        self.boot_time_ns = clock_ns() if boot_time_ns is None else boot_time_ns
        self.reload_time_ns = self.boot_time_ns if reload_time_ns is None else reload_time_ns
        self._fully_booted = fully_booted
        self.auth_failure_delay = auth_failure_delay
        self._sleep = sleep
        self.auth_timeout = auth_timeout
        self.auth_limit = auth_limit
        self.write_timeout = write_timeout
        self.allow_multiple_login = allow_multiple_login
        self.timestamp_events = timestamp_events
        self.debug = debug
        self.system_name = system_name
        self.disabled_events = frozenset(disabled_events)
        self.broken_events_action = broken_events_action
        self.max_pending_event_bytes = max_pending_event_bytes
        self.shutdown_grace = shutdown_grace
        self._actions: dict[str, _Action] = {}
        self._cli: list[_CliCommand] = []
        self._sessions: dict[int, AmiSession] = {}
        self._next_session_id = 1
        self._debug_seq = 0
        self._shutting_down = False
        self._listener: asyncio.Server | None = None
        self._register_builtins()

    # -- registries ------------------------------------------------------------------------
    def register_action(
        self, name: str, handler: ActionHandler, *, privilege: str = "", synopsis: str = ""
    ) -> None:
        """Add an action. `privilege`: write classes (`"call,originate"`); the user needs any
        one of them (empty = every authenticated user). Names match case-insensitively."""
        key = name.lower()
        if key in self._actions:
            raise ValueError(f"AMI action {name!r} is already registered")
        mask = class_mask(privilege) if privilege else 0
        self._actions[key] = _Action(name, handler, mask, synopsis)

    def register_cli(self, command: str, handler: CliHandler, *, usage: str = "") -> None:
        """Add a CLI command for Action Command, e.g. `"core show channels"`. The handler gets
        the words after the command (`queue show support` -> `["support"]`)."""
        words = tuple(command.split())
        if not words:
            raise ValueError("empty CLI command")
        if any(
            tuple(w.lower() for w in c.words) == tuple(w.lower() for w in words) for c in self._cli
        ):
            raise ValueError(f"CLI command {command!r} is already registered")
        self._cli.append(_CliCommand(words, handler, usage))

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen; returns the bound (host, port)."""
        if self._listener is not None:
            raise RuntimeError("AMI server already started")
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(self._new_session, host, port)
        sockname = self._listener.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    def _new_session(self) -> AmiSession:
        session = AmiSession(self, self._next_session_id)
        self._next_session_id += 1
        return session

    def _admit(self, session: AmiSession) -> bool:
        unauthenticated = sum(
            1 for s in self._sessions.values() if not s.authenticated and not s.closed
        )
        if unauthenticated >= self.auth_limit:
            return False
        self._sessions[session.id] = session
        return True

    def _forget(self, session: AmiSession) -> None:
        self._sessions.pop(session.id, None)

    @property
    def sessions(self) -> tuple[AmiSession, ...]:
        """Open sessions (a dropped session leaves at once, even while its action runs)."""
        return tuple(s for s in self._sessions.values() if not s.closed)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    @property
    def fully_booted(self) -> bool:
        return self._fully_booted

    def begin_shutdown(self) -> None:
        """`core stop gracefully` phase: every action now gets "Asterisk is shutting down"."""
        self._shutting_down = True

    async def shutdown(self, restart: bool = False, cleanly: bool = True) -> None:
        """Asterisk stops: Event Shutdown (system class), then every AMI socket closes."""
        self._shutting_down = True
        if self._listener is not None:
            self._listener.close()
        self.publish(
            "Shutdown",
            "system",
            [
                ("Shutdown", "Cleanly" if cleanly else "Uncleanly"),
                ("Restart", "True" if restart else "False"),
            ],
        )
        sessions = list(self._sessions.values())
        for session in sessions:
            session._enqueue_close()
        await self._wait_sessions(sessions, self.shutdown_grace)
        await self._close_listener()

    async def close(self) -> None:
        """Stop at once, like a crash: listener and every connection closed, no Shutdown."""
        self._shutting_down = True
        if self._listener is not None:
            self._listener.close()
        sessions = list(self._sessions.values())
        for session in sessions:
            session._abort()
        await self._wait_sessions(sessions, 0)
        await self._close_listener()

    async def _wait_sessions(self, sessions: Sequence[AmiSession], grace: float) -> None:
        tasks = {s._task for s in sessions if s._task is not None and not s._task.done()}
        if not tasks:
            return
        pending = tasks
        if grace > 0:
            _, pending = await asyncio.wait(tasks, timeout=grace)
        for session in sessions:
            if session._task is not None and session._task in pending:
                session._abort()
                session._task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _close_listener(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener.close()
            await listener.wait_closed()

    def mark_fully_booted(self) -> None:
        """Boot completes: publish FullyBooted (boot-time field order) and answer later Logins
        with the inline FullyBooted."""
        self._fully_booted = True
        now = self._clock_ns()
        self.publish(
            "FullyBooted",
            "system",
            [
                ("Status", "Fully Booted"),
                ("Uptime", str((now - self.boot_time_ns) // 1_000_000_000)),
                ("LastReload", str((now - self.reload_time_ns) // 1_000_000_000)),
            ],
        )

    # -- events ----------------------------------------------------------------------------
    def publish(
        self,
        name: str,
        klass: str,
        fields: Sequence[Header],
        *,
        origin: tuple[str, int, str] = ("pbxsim", 0, "publish"),
    ) -> None:
        """Queue `Event: name` to every authenticated session that may read `klass` (one or
        more class names, comma separated); its mask and filters are checked when it is written.
        `fields` come after the Privilege (and optional Timestamp/debug/SystemName) lines, in
        order; escape user data with `wire.escape_c`. `origin` fills File/Line/Func (debug)."""
        if name in self.disabled_events:
            return
        mask = class_mask(klass)
        lines: list[Header] = [("Event", name), ("Privilege", authority_to_str(mask))]
        if self.timestamp_events:
            lines.append(("Timestamp", format_timeval(self._clock_ns())))
        if self.debug:
            lines.append(("SequenceNumber", str(self._debug_seq)))
            self._debug_seq += 1
            lines += [("File", origin[0]), ("Line", str(origin[1])), ("Func", origin[2])]
        if self.system_name:
            lines.append(("SystemName", self.system_name))
        lines.extend(fields)
        text = render_lines(lines) + "\r\n"
        event = _Event(name, mask, text, to_wire(text))
        for session in list(self._sessions.values()):
            session._enqueue(event)

    # -- dispatch --------------------------------------------------------------------------
    async def _dispatch(self, session: AmiSession, message: AmiMessage) -> ActionReply:
        action = next((v for k, v in message.headers if k.lower() == "action" and v), "")
        if not action:
            return ActionReply.error("Missing action in request")
        if self._shutting_down:
            return ActionReply.error("Asterisk is shutting down")
        key = action.lower()
        if not session.authenticated and key not in ("login", "logoff", "challenge"):
            return ActionReply.error("Permission denied")
        if not session.authenticated and key in ("login", "challenge"):
            username = message.get("Username")
            if username and self._in_use(username):
                user = self._users.get(username.lower())
                allowed = self.allow_multiple_login
                if user is not None and user.allow_multiple_login is not None:
                    allowed = user.allow_multiple_login
                if user is not None and not allowed:
                    await self._sleep(self.auth_failure_delay)
                    return ActionReply("Error", "Login Already In Use", close=True)
        entry = self._actions.get(key)
        if entry is None:
            return ActionReply.error(
                f"Invalid/unknown command: {action}. "
                "Use Action: ListCommands to show available commands."
            )
        if entry.authority and not session.write_mask & entry.authority:
            return ActionReply.error("Permission denied")
        try:
            return await entry.handler(session, message)
        except Exception:
            log.exception("AMI action %s failed", entry.name)
            return ActionReply.error("Internal Error. Action handler failed")

    def _in_use(self, username: str) -> bool:
        name = username.lower()
        return any(
            s.authenticated and not s.closed and (s.username or "").lower() == name
            for s in self._sessions.values()
        )

    # -- built-in actions ------------------------------------------------------------------
    def _register_builtins(self) -> None:
        self.register_action("Login", self._action_login, synopsis="Login Manager.")
        self.register_action("Logoff", self._action_logoff, synopsis="Logoff Manager.")
        self.register_action(
            "Challenge", self._action_challenge, synopsis="Generate Challenge for MD5 Auth."
        )
        self.register_action("Ping", self._action_ping, synopsis="Keepalive command.")
        self.register_action("Events", self._action_events, synopsis="Control Event Flow.")
        self.register_action(
            "Filter",
            self._action_filter,
            privilege="system",
            synopsis="Dynamically add filters for the current manager session.",
        )
        self.register_action(
            "ListCommands", self._action_listcommands, synopsis="List available manager commands."
        )
        self.register_action(
            "Command",
            self._action_command,
            privilege="command",
            synopsis="Execute Asterisk CLI Command.",
        )
        # cli.c's "!" entry; it also shapes the 'core show help' hint of unknown commands.
        self.register_cli("!", self._cli_bang)

    async def _cli_bang(self, args: Sequence[str]) -> CliResult:
        return CliResult("")

    def _authenticate(self, session: AmiSession, message: AmiMessage) -> AmiUser | None:
        username = message.get("Username")
        if not username:
            return None
        user = self._users.get(username.lower())
        if user is None:
            return None
        if message.get("AuthType").lower() == "md5":
            key = message.get("Key")
            if not key or not session._challenge:
                return None
            digest = hashlib.md5(
                to_wire(session._challenge + user.secret), usedforsecurity=False
            ).hexdigest()
            return user if digest == key else None
        return user if message.get("Secret") == user.secret else None

    async def _action_login(self, session: AmiSession, message: AmiMessage) -> ActionReply:
        if session._authenticated:
            return ActionReply.success("Already authenticated")
        user = self._authenticate(session, message)
        if user is None:
            await self._sleep(self.auth_failure_delay)
            return ActionReply("Error", "Authentication failed", close=True)
        session._username = message.get("Username")
        session._read_mask = get_perm(user.read)
        session._write_mask = get_perm(user.write)
        if user.write_timeout is not None:
            session._write_timeout = user.write_timeout
        session._filters = []
        for spec in user.event_filters:
            criteria, pattern = ("eventfilter", spec) if isinstance(spec, str) else spec
            session._filters.append(parse_filter(criteria, pattern))
        mask = strings_to_mask(message.get("Events"))
        if mask >= 0:
            session._send_events = mask
        session._authenticated = True
        followups: tuple[tuple[Header, ...], ...] = ()
        if session._send_events & SYSTEM and session._read_mask & SYSTEM and self._fully_booted:
            now = self._clock_ns()
            followups = (
                (
                    ("Event", "FullyBooted"),
                    ("Privilege", authority_to_str(SYSTEM)),
                    ("Uptime", str((now - self.boot_time_ns) // 1_000_000_000)),
                    ("LastReload", str((now - self.reload_time_ns) // 1_000_000_000)),
                    ("Status", "Fully Booted"),
                ),
            )
        return ActionReply("Success", "Authentication accepted", followups=followups)

    async def _action_logoff(self, session: AmiSession, message: AmiMessage) -> ActionReply:
        return ActionReply("Goodbye", "Thanks for all the fish.", close=True)

    async def _action_challenge(self, session: AmiSession, message: AmiMessage) -> ActionReply:
        if message.get("AuthType").lower() != "md5":
            return ActionReply.error("Must specify AuthType")
        if not session._challenge:
            # snprintf("%ld", ast_random()) into char[10]: at most 9 digits, kept per session
            session._challenge = str(self._challenge_source())[:9]
        return ActionReply.success(headers=[("Challenge", session._challenge)])

    async def _action_ping(self, session: AmiSession, message: AmiMessage) -> ActionReply:
        stamp = format_timeval(self._clock_ns())
        return ActionReply.success(headers=[("Ping", "Pong"), ("Timestamp", stamp)])

    async def _action_events(self, session: AmiSession, message: AmiMessage) -> ActionReply:
        mask = strings_to_mask(message.get("EventMask"))
        if mask >= 0:
            session._send_events = mask
        if self.broken_events_action and (mask < 0 or mask == INT_MAX):
            return ActionReply(send=False)
        if mask > 0:
            return ActionReply.success(headers=[("Events", "On")])
        if mask == 0:
            return ActionReply.success(headers=[("Events", "Off")])
        return ActionReply.error("Invalid event mask")

    async def _action_filter(self, session: AmiSession, message: AmiMessage) -> ActionReply:
        if message.get("Operation").lower() != "add":
            return ActionReply.error("Unknown operation")
        criteria = message.get("MatchCriteria")
        try:
            new = parse_filter(
                f"eventfilter({criteria})" if criteria else "eventfilter", message.get("Filter")
            )
        except FilterError as exc:
            return ActionReply.error(exc.reply)
        session._filters.append(new)
        return ActionReply.success("Success")

    async def _action_listcommands(self, session: AmiSession, message: AmiMessage) -> ActionReply:
        entries = sorted(self._actions.values(), key=lambda a: a.name.lower())
        headers = [
            (a.name, f"{a.synopsis} (Priv: {authority_to_str(a.authority)})")
            for a in entries
            if not a.authority or session.write_mask & a.authority
        ]
        return ActionReply.success(headers=headers)

    async def _action_command(self, session: AmiSession, message: AmiMessage) -> ActionReply:
        command = message.get("Command")
        if not command:
            return ActionReply.error("No command provided")
        if _blacklisted(command):
            return ActionReply.error("Command blacklisted")
        output, ok = await self._run_cli(command)
        text = _ANSI.sub("", output)
        if text.endswith("\n"):
            text = text[:-1]
        return ActionReply(
            "Success" if ok else "Error",
            "Command output follows",
            tuple(("Output", line) for line in text.split("\n")),
        )

    async def _run_cli(self, command: str) -> tuple[str, bool]:
        """ast_cli_command(): the text written to the CLI fd, and whether it succeeded."""
        argv = parse_cli_args(command)
        if not argv:
            return "", False
        entry = _find_cli(self._cli, argv, 0)
        if entry is None:
            best: list[str] = []
            for word in argv:
                best.append(word)
                if _find_cli(self._cli, best, -1) is None:
                    break
            hint = " ".join(best)
            return (
                f"No such command '{command}' (type 'core show help {hint}' "
                "for other possible commands)\n",
                False,
            )
        result = await entry.handler(argv[len(entry.words) :])
        if result.status == "showusage":
            usage = entry.usage or "Invalid usage, but no usage information available.\n"
            return result.output + usage, False
        if result.status == "failure":
            return result.output + f"Command '{command}' failed.\n", False
        return result.output, True


__all__ = [
    "EVENT_CLASSES",
    "ActionHandler",
    "ActionReply",
    "AmiServer",
    "AmiSession",
    "AmiUser",
    "CliHandler",
    "CliResult",
    "EventFilter",
    "FilterError",
    "authority_to_str",
    "class_mask",
    "get_perm",
    "parse_cli_args",
    "parse_filter",
    "render_reply",
    "should_send",
    "strings_to_mask",
]
