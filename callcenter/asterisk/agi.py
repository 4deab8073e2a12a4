"""Our own FastAGI server (Asterisk is the TCP client) on non-blocking sockets.

Contract (see PROTOCOL.md §5 and §8 "Server, FastAGI"):

* ``read_environment`` (a stream) / ``parse_environment_block`` (bytes) read the ``agi_*`` block
  up to the empty line, bounded in size and line count, decoding with replacement; EOF before
  the empty line raises ``AgiConnectionLost``.
* ``format_command`` quotes arguments; every command line ends with a bare ``\\n``.
* ``ReplyAssembler`` turns reply lines into ``AgiReply`` objects: ``100`` lines are skipped,
  multi-line ``520-`` blocks are consumed up to the ``520 `` line, and an unsolicited ``HANGUP``
  line is reported separately (it is a notification, never a reply).
* ``AgiConnection`` sends one command at a time. After a hangup only dead-allowed commands are
  written; anything else raises ``AgiHangup`` without touching the socket. ``submit()`` is the
  callback form of ``command()`` (same bytes, same replies and errors): the reply is handed to
  a callback from the socket's read callback, so a session driven that way (``IvrRunner``)
  writes its next command without a future or a task step per command. Commands are never
  pipelined: the next one goes out only after the previous reply.
* ``AgiServer`` routes on ``agi_network_script`` without its query string and always closes
  the socket when the handler returns. Unknown scripts go to the operator queue. No asyncio
  server or transports: the listening and accepted sockets are non-blocking sockets on the
  loop's reader/writer callbacks (``_AgiSocket``), parsing what they read in place (sans I/O);
  on Linux the accepted sockets wait for input in the server's own epoll set, which is the one
  descriptor of theirs on the loop (``_EpollReaders``); a session task starts once the
  environment is complete (see bench/README.md, FastAGI).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import re
import select
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, TypeAlias, cast
from urllib.parse import parse_qs

log = logging.getLogger(__name__)

MAX_HEADER_LINES = 128
MAX_HEADER_BYTES = 32768
MAX_520_LINES = 512
READ_SIZE = 65536
WRITE_HIGH_WATER = 65536  # unsent bytes above which drain() waits
WRITE_LOW_WATER = 16384
ACCEPT_RETRY_DELAY = 1.0  # seconds without accepting after running out of descriptors
READY_BATCH = 512  # ready sockets served per callback of the server's epoll set
# A session waits on Asterisk's reply for as long as a prompt plays, so a peer host that
# vanishes without a FIN or RST (power loss, a cut network) is found by TCP keepalive: probes
# after 60 s idle, 3 unanswered 10 s apart, then the socket errors and the session ends.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 60, 10, 3
# Linux gives an accepted socket the listener's TCP_NODELAY and keepalive settings.
_OPTIONS_INHERITED = sys.platform.startswith("linux")
_ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# Commands Asterisk still runs on a dead channel (res_agi.c commands table, dead=1).
DEAD_ALLOWED = frozenset(
    {
        "EXEC",
        "GET VARIABLE",
        "GET FULL VARIABLE",
        "SET VARIABLE",
        "VERBOSE",
        "NOOP",
        "DATABASE GET",
        "DATABASE PUT",
        "DATABASE DEL",
        "DATABASE DELTREE",
        "ASYNCAGI BREAK",
        "SPEECH DESTROY",
        "SPEECH UNLOAD GRAMMAR",
    }
)


# ---------------------------------------------------------------------------------------------
# errors


class AgiError(Exception):
    """Base class of every FastAGI error."""


class AgiProtocolError(AgiError):
    """The peer sent something that is not FastAGI (oversized header, garbage reply line)."""


class AgiHangup(AgiError):
    """The channel hung up: a ``HANGUP`` notification, a ``511`` reply, or the socket closed."""


class AgiConnectionLost(AgiHangup):
    """The TCP connection ended (EOF or reset) before the expected line arrived."""


class AgiCommandError(AgiError):
    """Asterisk refused a command: 510 (unknown command) or 520 (bad syntax)."""

    def __init__(self, code: int, reply: AgiReply, command: str) -> None:
        super().__init__(f"{code} for {command!r}: {reply.text.splitlines()[0]}")
        self.code = code
        self.reply = reply
        self.command = command


# ---------------------------------------------------------------------------------------------
# environment


@dataclass(frozen=True, slots=True)
class AgiEnvironment:
    """The ``agi_*`` variables Asterisk sends first, keyed without the ``agi_`` prefix."""

    values: Mapping[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    @property
    def network_script(self) -> str | None:
        """The raw script path, query string included, or None when the URL had no path."""
        return self.values.get("network_script")

    @property
    def script_name(self) -> str | None:
        """The script path without its query string and slashes; None when absent or empty."""
        raw = self.network_script
        if raw is None:
            return None
        name = raw.split("?", 1)[0].strip("/")
        return name or None

    @property
    def query(self) -> Mapping[str, str]:
        raw = self.network_script or ""
        if "?" not in raw:
            return {}
        return {k: v[-1] for k, v in parse_qs(raw.split("?", 1)[1]).items()}

    @property
    def uniqueid(self) -> str:
        return self.get("uniqueid")

    @property
    def channel(self) -> str:
        return self.get("channel")

    @property
    def language(self) -> str:
        return self.get("language")

    def known(self, name: str) -> str | None:
        """The stripped value, or None when Asterisk reports it as ``unknown`` or empty."""
        value = self.get(name).strip()
        return None if value in ("", "unknown") else value

    @property
    def callerid(self) -> str | None:
        return self.known("callerid")

    @property
    def calleridname(self) -> str | None:
        return self.known("calleridname")

    @property
    def dnid(self) -> str | None:
        return self.known("dnid")

    @property
    def args(self) -> tuple[str, ...]:
        out: list[str] = []
        n = 1
        while f"arg_{n}" in self.values:
            out.append(self.values[f"arg_{n}"])
            n += 1
        return tuple(out)


def parse_environment_lines(lines: list[str]) -> AgiEnvironment:
    """Build the environment from ``name: value`` lines (without the empty terminator)."""
    values: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            log.debug("agi: ignoring environment line without colon: %r", line)
            continue
        name = name.strip()
        if name.startswith("agi_"):
            name = name[4:]
        # Asterisk writes "name: value"; an empty value is "name: " (one space kept).
        values[name] = value[1:] if value.startswith(" ") else value
    return AgiEnvironment(MappingProxyType(values))


async def read_environment(
    reader: asyncio.StreamReader,
    *,
    max_lines: int = MAX_HEADER_LINES,
    max_bytes: int = MAX_HEADER_BYTES,
) -> AgiEnvironment:
    """Read the environment block up to its empty line from a stream.

    Raises ``AgiConnectionLost`` on EOF before the empty line and ``AgiProtocolError`` when the
    block exceeds ``max_lines`` lines or ``max_bytes`` bytes (or the reader's buffer limit).
    """
    try:
        raw = await reader.readuntil(b"\n\n")
    except asyncio.IncompleteReadError as exc:
        n = exc.partial.count(b"\n")
        raise AgiConnectionLost(f"EOF inside the AGI environment after {n} lines") from exc
    except asyncio.LimitOverrunError as exc:
        raise AgiProtocolError(f"AGI environment larger than {exc.consumed} bytes") from exc
    except (ConnectionError, OSError) as exc:
        raise AgiConnectionLost(str(exc)) from exc
    return parse_environment_block(raw, max_lines=max_lines, max_bytes=max_bytes)


_ENV_LINE = re.compile(r"^agi_([^:\s]+): (.*)$", re.MULTILINE)


def parse_environment_block(
    raw: bytes | bytearray,
    *,
    max_lines: int = MAX_HEADER_LINES,
    max_bytes: int = MAX_HEADER_BYTES,
) -> AgiEnvironment:
    """Parse a complete environment block (ending with its empty line, ``\\n\\n``)."""
    if len(raw) > max_bytes:
        raise AgiProtocolError(f"AGI environment larger than {max_bytes} bytes")
    text = raw[:-2].decode("utf-8", errors="replace")
    n = text.count("\n") + 1
    if n > max_lines:
        raise AgiProtocolError(f"AGI environment longer than {max_lines} lines")
    # Fast path: every line is the usual "agi_name: value" (parse_environment_lines' result).
    pairs = _ENV_LINE.findall(text)
    if len(pairs) == n:
        return AgiEnvironment(MappingProxyType(dict(pairs)))
    return parse_environment_lines(text.split("\n"))


# ---------------------------------------------------------------------------------------------
# commands


_NEEDS_QUOTES = re.compile(r'[\s"\\]')


def quote_arg(arg: str) -> str:
    """Quote one AGI argument: ``""`` when empty, quotes/backslashes escaped when needed."""
    if arg and _NEEDS_QUOTES.search(arg) is None:
        return arg
    if "\n" in arg or "\r" in arg:
        raise ValueError(f"AGI argument contains a line break: {arg!r}")
    if arg == "":
        return '""'
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(verb: str, *args: str) -> str:
    """One command line, ``\\n``-terminated. ``verb`` is the command words (``STREAM FILE``)."""
    if "\n" in verb or "\r" in verb:
        raise ValueError(f"AGI command contains a line break: {verb!r}")
    if not args:
        return verb + "\n"
    return verb + " " + " ".join([quote_arg(a) for a in args]) + "\n"


# ---------------------------------------------------------------------------------------------
# replies

_REPLY_RE = re.compile(r"^(?P<code>\d{3})(?P<sep>[ -])(?P<rest>.*)$", re.DOTALL)
_TAIL_RE = re.compile(r"^\((?P<data>.*)\)(?P<tail>(?: [A-Za-z_]+=\S*)*)(?: (?P<note>.*))?$")
_KV_RE = re.compile(r"([A-Za-z_]+)=(\S*)")
_NO_EXTRAS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AgiReply:
    """A parsed reply. ``result`` is the raw text after ``result=`` (may be empty)."""

    code: int
    result: str = ""
    data: str | None = None  # the parenthesised part: "timeout", "dtmf", "hangup", a value
    extras: Mapping[str, str] = field(default_factory=lambda: _NO_EXTRAS)  # endpos=... etc.
    note: str = ""  # trailing text such as "Gosub complete"
    text: str = ""  # the raw reply line(s)

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def result_int(self) -> int | None:
        try:
            return int(self.result)
        except ValueError:
            return None

    @property
    def endpos(self) -> int | None:
        value = self.extras.get("endpos")
        return int(value) if value is not None and value.lstrip("-").isdigit() else None

    @property
    def timed_out(self) -> bool:
        return self.data == "timeout"

    @property
    def digit(self) -> str | None:
        """The DTMF digit of a STREAM FILE / WAIT FOR DIGIT style ASCII result, if any."""
        n = self.result_int
        if n is None or n <= 0 or n > 127:
            return None
        return chr(n)


def parse_reply_line(line: str) -> AgiReply:
    """Parse one single-line reply (``200 ...``, ``510 ...``, ``511 ...``, ``520 ...``)."""
    if line.startswith("200 result="):
        # Fast path for the common "200 result=N" and "200 result=N endpos=M" replies.
        body = line[11:]
        result, sep, tail = body.partition(" ")
        if not sep:
            return AgiReply(code=200, result=result, extras=_NO_EXTRAS, text=line)
        if tail.startswith("endpos=") and " " not in tail:
            return AgiReply(
                code=200, result=result, extras=MappingProxyType({"endpos": tail[7:]}), text=line
            )
    m = _REPLY_RE.match(line)
    if m is None:
        raise AgiProtocolError(f"not an AGI reply: {line[:120]!r}")
    code = int(m["code"])
    rest = m["rest"]
    if code not in (100, 200):
        return AgiReply(code=code, note=rest, text=line)
    if not rest.startswith("result="):
        raise AgiProtocolError(f"AGI reply without result=: {line[:120]!r}")
    body = rest[len("result=") :]
    result, _, tail = body.partition(" ")
    data: str | None = None
    extras: dict[str, str] = {}
    note = ""
    if tail.startswith("("):
        tm = _TAIL_RE.match(tail)
        if tm is not None:
            data = tm["data"]
            extras = dict(_KV_RE.findall(tm["tail"] or ""))
            note = tm["note"] or ""
        else:
            note = tail
    else:
        words = tail.split(" ") if tail else []
        while words and _KV_RE.fullmatch(words[0]):
            k, v = words.pop(0).split("=", 1)
            extras[k] = v
        note = " ".join(words)
    return AgiReply(
        code=code, result=result, data=data, extras=MappingProxyType(extras), note=note, text=line
    )


def is_hangup_line(line: str) -> bool:
    """The unsolicited notification ``HANGUP``, tolerating trailing junk (replies start with a
    three-digit code, so no reply can be mistaken for it)."""
    return line.startswith("HANGUP")


class ReplyAssembler:
    """Line-by-line reply state machine (sans I/O).

    ``feed(line)`` returns an ``AgiReply`` when one is complete, ``HANGUP`` for the out-of-band
    notification, or None when more lines are needed (100 lines, inside a 520 block).
    """

    HANGUP = "HANGUP"

    def __init__(self, *, cache: ReplyCache | None = None) -> None:
        self._block: list[str] | None = None
        self._cache = cache

    @property
    def in_block(self) -> bool:
        return self._block is not None

    def feed(self, line: str) -> AgiReply | str | None:
        cache = self._cache
        if cache is not None and self._block is None:
            # Only parsed replies are cached: never HANGUP, 100 or 520- lines.
            hit = cache.get(line)
            if hit is not None:
                return hit
        if self._block is not None:
            self._block.append(line)
            if line.startswith("520 "):
                text = "\n".join(self._block)
                self._block = None
                return AgiReply(code=520, note=line[4:], text=text)
            if len(self._block) > MAX_520_LINES:
                raise AgiProtocolError(f"520 usage block longer than {MAX_520_LINES} lines")
            return None
        if is_hangup_line(line):
            return self.HANGUP
        if line.startswith("520-"):
            self._block = [line]
            return None
        if line.startswith("100 ") or line.startswith("100-"):
            return None
        reply = parse_reply_line(line)
        if cache is not None:
            cache.put(line, reply)
        return reply


class ReplyCache:
    """Parsed replies by line text, shared by the connections of one server. Replies are
    immutable and most lines repeat verbatim (``200 result=1``, ``200 result=0 endpos=...``);
    bounded to ``size`` entries (emptied when full). ``raw`` holds the same replies by the
    line's bytes as they came, ``\n`` included."""

    def __init__(self, size: int = 4096, max_line: int = 200) -> None:
        self._size = size
        self._max_line = max_line
        self._replies: dict[str, AgiReply] = {}
        self.raw: dict[bytes, AgiReply] = {}

    def get(self, line: str) -> AgiReply | None:
        return self._replies.get(line)

    def put(self, line: str, reply: AgiReply) -> None:
        if len(line) > self._max_line:
            return
        if len(self._replies) >= self._size:
            self._replies.clear()
            self.raw.clear()
        self._replies[line] = reply
        self.raw[line.encode("utf-8") + b"\n"] = reply


class CommandCache:
    """Encoded command lines by verb and arguments, shared by the connections of one server
    (an IVR sends the same lines over and over); bounded to ``size`` entries (emptied when
    full). Values are ``(line, command name, bytes)``."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._lines: dict[tuple[str, tuple[str, ...]], tuple[str, str, bytes]] = {}

    def get(self, verb: str, args: tuple[str, ...]) -> tuple[str, str, bytes]:
        key = (verb, args)
        hit = self._lines.get(key)
        if hit is not None:
            return hit
        line = format_command(verb, *args)
        name = verb if verb in _COMMAND_NAMES else command_words(line)
        hit = (line, name, line.encode("utf-8"))
        if len(self._lines) >= self._size:
            self._lines.clear()
        self._lines[key] = hit
        return hit


# ---------------------------------------------------------------------------------------------
# connection


ReplyCallback: TypeAlias = Callable[[AgiReply | None, Exception | None], None]
"""Receives a command's final reply, or the error ``command()`` would raise (one is None)."""


class CommandTimingHook(Protocol):
    """Optional instrumentation: called for each command with perf_counter timestamps."""

    def __call__(
        self, *, command: str, previous_reply_at: float | None, sent_at: float, reply_at: float
    ) -> None: ...


@dataclass(slots=True)
class AgiStats:
    """Process-wide counters of one server."""

    sessions_total: int = 0
    sessions_active: int = 0
    sessions_failed: int = 0
    commands_total: int = 0
    hangups: int = 0
    unknown_routes: int = 0


def command_words(line: str) -> str:
    """The upper-cased command name of a line: ``SET VARIABLE`` for ``set variable x 1``."""
    words = line.split()
    for n in (3, 2, 1):
        candidate = " ".join(words[:n]).upper()
        if candidate in DEAD_ALLOWED:
            return candidate
    return " ".join(words[:2]).upper()


_COMMAND_NAMES = DEAD_ALLOWED | {
    "ANSWER",
    "STREAM FILE",
    "GET DATA",
    "WAIT FOR DIGIT",
    "SAY DIGITS",
    "HANGUP",
}


def _set_connection_options(sock: socket.socket) -> None:
    """TCP_NODELAY (as asyncio does: commands go out at once) and keepalive; where the platform
    lacks an option it is skipped."""
    options = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
    ):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, option, value in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


class _LoopReaders:
    """Reader callbacks on the event loop itself, one per socket (where there is no epoll)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # uvloop needs every read callback to read until EAGAIN: see _read_until_eagain
        self.level_triggered = isinstance(loop, asyncio.SelectorEventLoop)

    def add(self, fd: int, callback: Callable[[], None]) -> None:
        self._loop.add_reader(fd, callback)

    def remove(self, fd: int) -> None:
        self._loop.remove_reader(fd)

    def closing(self, fd: int) -> None:
        """``fd`` is about to be closed."""
        self._loop.remove_reader(fd)

    def close(self) -> None:
        pass


class _EpollReaders:
    """The server's own epoll set (Linux): accepted sockets wait for input here and only the
    set's descriptor is on the event loop, so one loop callback serves every ready socket
    instead of one loop handle per socket and event (an epoll descriptor is itself pollable,
    on asyncio's loop and uvloop alike). Level-triggered like asyncio's selector: a callback
    that leaves input unread is called again, with the next batch."""

    level_triggered = True

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)

    def add(self, fd: int, callback: Callable[[], None]) -> None:
        self._epoll.register(fd, select.EPOLLIN)  # EPOLLHUP and EPOLLERR come anyway
        self._callbacks[fd] = callback

    def remove(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is not None and not self._epoll.closed:
            self._epoll.unregister(fd)

    def closing(self, fd: int) -> None:
        """``fd`` is about to be closed, which takes it out of the epoll set (the socket is its
        open file's only descriptor): no ``epoll_ctl`` call for it."""
        self._callbacks.pop(fd, None)

    def _ready(self) -> None:
        callbacks = self._callbacks
        for fd, _events in self._epoll.poll(0, READY_BATCH):
            callback = callbacks.get(fd)  # None: removed by an earlier callback of the batch
            if callback is not None:
                try:
                    callback()
                except Exception:
                    log.exception("agi: error in a read callback")

    def close(self) -> None:
        if not self._epoll.closed:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
        self._callbacks.clear()


_Readers: TypeAlias = _LoopReaders | _EpollReaders
#: the server's own epoll set where the platform has one (tests turn it off to cover the other)
OWN_EPOLL = hasattr(select, "epoll")


class _AgiSocket:
    """One accepted socket on reader/writer callbacks (no asyncio transport): its reader in the
    server's epoll set (``_EpollReaders``) or on the loop (``_LoopReaders``), its writer on the
    loop.

    Reads go into one buffer shared by the server's connections (``recv_into`` and the parsing
    of what it read run in the same callback, before any other connection's) and are parsed in
    place (sans I/O). Writes are ``send`` calls; only what a partial send leaves is buffered and
    flushed from a writer callback, and ``paused_writing`` is set while that buffer is above
    ``WRITE_HIGH_WATER`` (``drain()`` waits for it to fall below ``WRITE_LOW_WATER``).

    Reply lines are parsed only while a command waits for its reply, like a blocking readline:
    a ``HANGUP`` line that arrives while the script is busy is noticed with the next reply, in
    the order Asterisk wrote them. Unread input is bounded: reading stops (the reader callback
    is removed) above ``2 * MAX_HEADER_BYTES`` and resumes once the replies have been consumed;
    a line or an environment above ``MAX_HEADER_BYTES`` is an error. At EOF the socket stays
    open for writing (half-open): buffered replies are still parsed, commands still written.
    A reset or a failed send ends the connection (``lost``); ``close()`` flushes what is
    buffered first.
    """

    __slots__ = (
        "_assembler",
        "_buf",
        "_callback",
        "_closing",
        "_delivering",
        "_drain",
        "_ended",
        "_eof",
        "_fd",
        "_loop",
        "_out",
        "_paused_reading",
        "_reading",
        "_released",
        "_scanned",
        "_server",
        "_sock",
        "_waiter",
        "conn",
        "deadline",
        "lost",
        "paused_writing",
    )

    def __init__(
        self, server: AgiServer, sock: socket.socket, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._server = server
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self.conn: AgiConnection | None = None
        self.lost = False
        self.paused_writing = False
        self.deadline = 0.0
        self._buf = bytearray()
        self._scanned = 0
        self._assembler = ReplyAssembler(cache=server._reply_cache)
        self._waiter: asyncio.Future[AgiReply] | None = None
        self._callback: ReplyCallback | None = None
        self._delivering = False
        self._drain: asyncio.Future[None] | None = None
        self._eof = False
        self._ended = False
        self._closing = False
        self._reading = False
        self._paused_reading = False
        self._out: bytearray | None = None  # unsent output; a writer callback while not None
        self._released = False  # the session is over: let go of it once closed (``release``)

    @property
    def closing(self) -> bool:
        """``close()`` was called or the connection is lost."""
        return self._closing

    # loop callbacks ---------------------------------------------------------------------------

    def start_reading(self) -> None:
        readers = self._server._readers
        assert readers is not None  # the server is started
        ready = self._read_ready if readers.level_triggered else self._read_until_eagain
        readers.add(self._fd, ready)
        self._reading = True

    def _read_ready(self) -> None:
        """One read per callback: a level-triggered poller (the server's epoll set or asyncio's
        selector) calls again while the socket is readable."""
        try:
            view = self._server._read_buffer
            try:
                n = self._sock.recv_into(view)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ECONNRESET, ETIMEDOUT...
                self._lose(exc)
                return
            if not n:
                self._eof_received()
                return
            conn = self.conn
            callback = self._callback
            if conn is not None and callback is not None and not conn.closed:
                if not self._buf and self._assembler._block is None:
                    # The usual read: one whole reply line seen before (a line is written
                    # whole, and the next one only after our next command).
                    reply = self._server._reply_cache.raw.get(bytes(view[:n]))
                    if reply is not None:
                        self._deliver(callback, reply, None)
                        return
                self._buf += view[:n]  # a reply awaited by a callback: straight to the parser
                self._pump()
            else:
                self._received(view[:n])
        except Exception as exc:
            log.exception("agi: error in the read callback; closing the connection")
            self._lose(exc)

    def _read_until_eagain(self) -> None:
        """uvloop's own reader callbacks (no epoll set of the server's): its poll handle runs the
        reader once more on an error event (a reset with data queued) and then never again, so
        each callback reads until EAGAIN or the reset would go unseen (at most 16 reads;
        ``_received`` still pauses on too much input)."""
        try:
            view = self._server._read_buffer
            for _ in range(16):
                try:
                    n = self._sock.recv_into(view)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    self._lose(exc)
                    return
                if not n:
                    self._eof_received()
                    return
                self._received(view[:n])
                if not self._reading:
                    return
        except Exception as exc:
            log.exception("agi: error in the read callback; closing the connection")
            self._lose(exc)

    def _received(self, data: memoryview) -> None:
        conn = self.conn
        if conn is None:
            if not self._ended:
                self._buf += data
                self._read_header()
            return
        if conn.closed:
            return
        buf = self._buf
        buf += data
        if self._callback is not None or self._waiter is not None:
            self._pump()
        elif len(buf) > 2 * MAX_HEADER_BYTES and self._reading:
            self._paused_reading = True
            self._stop_reading()

    def _eof_received(self) -> None:
        self._eof = True
        self._stop_reading()
        if self.conn is None:
            n = self._buf.count(b"\n")
            self._end_before_session(
                AgiConnectionLost(f"EOF inside the AGI environment after {n} lines")
            )
        elif self._callback is not None or self._waiter is not None:
            self._pump()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            readers = self._server._readers
            if readers is not None:
                readers.remove(self._fd)

    def _resume_reading(self) -> None:
        self._paused_reading = False
        if not self._reading and not self._eof and not self._closing:
            self.start_reading()

    def write(self, data: bytes) -> None:
        """Send ``data`` now; what the socket does not take is buffered (in order) and sent
        from a writer callback. Ignored once closing; a send error ends the connection."""
        if self._closing:
            return
        out = self._out
        if out is not None:
            out += data
            if len(out) > WRITE_HIGH_WATER:
                self.paused_writing = True
            return
        try:
            n = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:  # EPIPE, ECONNRESET
            self._lose(exc)
            return
        if n < len(data):
            self._out = out = bytearray(memoryview(data)[n:])
            self._loop.add_writer(self._fd, self._write_ready)
            if len(out) > WRITE_HIGH_WATER:
                self.paused_writing = True

    def _write_ready(self) -> None:
        try:
            out = self._out
            if out is None:
                return
            try:
                n = self._sock.send(out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lose(exc)
                return
            del out[:n]
            if out:
                if self.paused_writing and len(out) <= WRITE_LOW_WATER:
                    self._resume_writing()
                return
            self._out = None
            self._loop.remove_writer(self._fd)
            if self.paused_writing:
                self._resume_writing()
            if self._closing:
                self._teardown(None)
        except Exception as exc:
            log.exception("agi: error in the write callback; closing the connection")
            self._lose(exc)

    def _resume_writing(self) -> None:
        self.paused_writing = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def drain(self) -> None:
        """Wait while the unsent output is above the high-water mark."""
        if self.lost:
            raise AgiConnectionLost("connection lost")
        if self.paused_writing:
            if self._drain is None or self._drain.done():  # done: a cancelled earlier wait
                self._drain = self._loop.create_future()
            await self._drain

    # closing ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop reading, send what is buffered, then close the socket. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._out is None:
            self._teardown(None)
        else:
            self._stop_reading()
            self._server._flushing.add(self)

    def abort(self) -> None:
        """Close now, dropping unsent output (server shutdown)."""
        if self.conn is None:
            self._end_before_session(AgiConnectionLost("server closing"))
        else:
            self._teardown(AgiConnectionLost("server closing"))

    def _lose(self, exc: Exception) -> None:
        log.debug("agi: connection lost: %r", exc)
        self._teardown(exc)

    def _teardown(self, exc: Exception | None) -> None:
        """Unregister the callbacks, close the socket and tell whoever waits."""
        if self.lost:
            return
        self.lost = True
        self._eof = True
        self._closing = True
        if self._reading:
            self._reading = False
            readers = self._server._readers
            if readers is not None:
                readers.closing(self._fd)
        if self._out is not None:
            self._out = None
            self._loop.remove_writer(self._fd)
        self._server._flushing.discard(self)
        with contextlib.suppress(OSError):
            self._sock.close()
        if self.conn is None:
            if not self._ended:
                self._ended = True
                self._server._ended_before_session(
                    self, AgiConnectionLost(str(exc) if exc else "connection closed")
                )
        elif self._callback is not None or self._waiter is not None:
            self._pump()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(AgiConnectionLost(str(exc) if exc else "connection closed"))
        if self._released:
            self._let_go()

    def release(self) -> None:
        """The session is over: once the socket is closed (now, or when what is buffered has
        gone out), it lets go of the connection, so the two are freed by reference counting
        rather than left to the cyclic collector."""
        self._released = True
        if self.lost:
            self._let_go()

    def _let_go(self) -> None:
        self.conn = None
        self._ended = True  # not a connection that ended before its session
        self._callback = None
        self._waiter = None

    # environment ------------------------------------------------------------------------------

    def _read_header(self) -> None:
        buf = self._buf
        i = buf.find(b"\n\n", self._scanned)
        if i < 0:
            if len(buf) > MAX_HEADER_BYTES:
                self._end_before_session(
                    AgiProtocolError(f"AGI environment larger than {MAX_HEADER_BYTES} bytes")
                )
            else:
                self._scanned = max(0, len(buf) - 1)
            return
        raw = bytes(buf[: i + 2])
        del buf[: i + 2]
        try:
            env = parse_environment_block(raw)
        except AgiProtocolError as exc:
            self._end_before_session(exc)
            return
        self.conn = self._server._start_session(self, env)

    def header_timed_out(self) -> None:
        if self.conn is None:
            self._end_before_session(TimeoutError())

    def _end_before_session(self, exc: Exception) -> None:
        if self._ended or self.conn is not None:
            return
        self._ended = True
        self._server._ended_before_session(self, exc)
        self._teardown(None)

    # replies ----------------------------------------------------------------------------------

    def expect_reply(self) -> asyncio.Future[AgiReply]:
        """A future for the next reply; already resolved when it is in the buffer."""
        waiter: asyncio.Future[AgiReply] = self._loop.create_future()
        self._waiter = waiter
        if self._buf or self._eof:
            self._pump()
        return waiter

    def on_reply(self, callback: ReplyCallback) -> None:
        """Call ``callback`` with the next reply (or error) as soon as it is parsed, from the
        read callback; when input is already buffered, at once, or from the next loop
        iteration when this runs inside a callback (replies sent ahead by a misbehaving peer
        would otherwise nest one callback per command)."""
        self._callback = callback
        if self._buf or self._eof:
            if self._delivering:
                self._loop.call_soon(self._pump)
            else:
                self._pump()

    def forget_reply(self) -> None:
        self._waiter = None
        self._callback = None

    def _fail(self, exc: Exception) -> None:
        self._settle(None, exc)

    def _settle(self, reply: AgiReply | None, exc: Exception | None) -> None:
        """Hand the reply (or the error) to the submitted callback or the awaiting command."""
        callback = self._callback
        if callback is not None:
            self._deliver(callback, reply, exc)
            return
        waiter = self._waiter
        self._waiter = None
        if waiter is not None:
            if exc is None:
                waiter.set_result(cast(AgiReply, reply))
            else:
                waiter.set_exception(exc)

    def _deliver(
        self, callback: ReplyCallback, reply: AgiReply | None, exc: Exception | None
    ) -> None:
        self._callback = None  # cleared first: the callback may ask for the next reply
        self._delivering = True
        try:
            callback(reply, exc)
        finally:
            self._delivering = False

    def _pump(self) -> None:
        conn = self.conn
        if conn is None:
            return
        if self._callback is None:
            waiter = self._waiter
            if waiter is None:
                return
            if waiter.done():  # the waiting command was cancelled
                self._waiter = None
                return
        buf = self._buf
        assembler = self._assembler
        cached = self._server._reply_cache._replies  # checked first: most replies repeat
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            if i > MAX_HEADER_BYTES:
                self._fail(AgiProtocolError(f"line longer than the limit ({i} bytes)"))
                return
            line = buf[:i].decode("utf-8", "replace")
            del buf[: i + 1]
            reply = cached.get(line) if assembler._block is None else None
            if reply is None:
                try:
                    item = assembler.feed(line)
                except AgiProtocolError as exc:
                    self._fail(exc)
                    return
                if item is None:
                    continue
                if isinstance(item, str):
                    # Unsolicited notification; the real reply is still to come.
                    conn._mark_dead("HANGUP line")
                    continue
                reply = item
            if self._paused_reading and len(buf) <= MAX_HEADER_BYTES:
                self._resume_reading()
            self._settle(reply, None)
            return
        if len(buf) > MAX_HEADER_BYTES:
            self._fail(AgiProtocolError(f"line longer than the limit ({len(buf)} bytes)"))
        elif self._eof:
            if buf:
                log.debug("agi: EOF after a partial line %r", bytes(buf[:80]))
            conn._mark_dead("EOF")
            conn.closed = True
            self._fail(AgiConnectionLost("EOF while waiting for a reply"))


class AgiConnection:
    """One FastAGI session: the environment plus a command/reply channel.

    Created by ``AgiServer`` for each accepted socket once its environment has been read.
    """

    __slots__ = (
        "_busy",
        "_commands",
        "_last_reply_at",
        "_pending",
        "_pending_command",
        "_protocol",
        "_reply_callback",
        "_sent_at",
        "_stats",
        "_timing",
        "closed",
        "commands_sent",
        "dead",
        "env",
    )

    def __init__(
        self,
        *,
        env: AgiEnvironment,
        protocol: _AgiSocket,
        stats: AgiStats | None = None,
        timing: CommandTimingHook | None = None,
        commands: CommandCache | None = None,
    ) -> None:
        self.env = env
        self._commands = commands if commands is not None else CommandCache(size=64)
        self._protocol = protocol
        self._stats = stats if stats is not None else AgiStats()
        self._timing = timing
        self._busy = False
        self._last_reply_at: float | None = None
        self._sent_at = 0.0
        # the command in flight: its callback, and (line, name, bytes) as the cache holds them
        self._pending: ReplyCallback | None = None
        self._pending_command: tuple[str, str, bytes] = ("", "", b"")
        self._reply_callback: ReplyCallback = self._on_reply
        self.dead = False
        self.closed = False
        self.commands_sent = 0

    def _mark_dead(self, why: str) -> None:
        if not self.dead:
            log.debug("agi %s: channel dead (%s)", self.env.uniqueid, why)
            self.dead = True
            self._stats.hangups += 1

    async def command(self, verb: str, *args: str) -> AgiReply:
        """Send one command and return its final reply.

        Raises ``AgiHangup`` when the channel is dead and the command is not dead-allowed
        (nothing is written), on a ``511`` reply, or when the connection ends;
        ``AgiCommandError`` on ``510``/``520``.
        """
        line = format_command(verb, *args)
        name = verb if verb in _COMMAND_NAMES else command_words(line)
        if self.closed:
            raise AgiConnectionLost("connection closed")
        if self.dead and name not in DEAD_ALLOWED:
            raise AgiHangup(f"channel hung up; {name} not allowed on a dead channel")
        if self._busy:
            raise RuntimeError("AgiConnection.command() called concurrently")
        proto = self._protocol
        timing = self._timing
        debug = log.isEnabledFor(logging.DEBUG)
        self._busy = True
        try:
            sent_at = time.perf_counter() if timing is not None or debug else 0.0
            if proto.lost:
                self._mark_dead("write failed")
                self.closed = True
                raise AgiConnectionLost("connection lost")
            proto.write(line.encode("utf-8"))
            if proto.paused_writing:
                try:
                    await proto.drain()
                except AgiConnectionLost:
                    self._mark_dead("write failed")
                    self.closed = True
                    raise
            self.commands_sent += 1
            self._stats.commands_total += 1
            try:
                reply = await proto.expect_reply()
            except (asyncio.CancelledError, AgiProtocolError):
                # Replies can no longer be matched to commands: nothing more may be sent.
                self.closed = True
                proto.forget_reply()
                raise
            if timing is not None or debug:
                self._log_timing(name, line, reply, sent_at)
        finally:
            self._busy = False
        if reply.code == 200 and name != "HANGUP":
            return reply
        return self._final(name, line, reply)

    def _final(self, name: str, line: str, reply: AgiReply) -> AgiReply:
        """The reply to return, or the error to raise, for a reply to ``line``."""
        code = reply.code
        if code == 200:
            if name == "HANGUP" and line == "HANGUP\n" and reply.result == "1":
                self._mark_dead("we hung up")
            return reply
        if code == 511:
            self._mark_dead("511")
            raise AgiHangup(f"{name}: 511 command not permitted on a dead channel")
        if code in (510, 520):
            raise AgiCommandError(code, reply, line.rstrip("\n"))
        raise AgiProtocolError(f"unexpected reply code {code} to {name}")

    def submit(self, on_reply: ReplyCallback, verb: str, *args: str) -> None:
        """Callback form of ``command()`` for sessions driven from the socket's read callback
        (no task step, no future per command).

        What ``command()`` raises before writing (dead channel and not dead-allowed, closed
        connection, a command already in flight) is raised here, with nothing written.
        Otherwise the command is written at once and ``on_reply(reply, None)`` or
        ``on_reply(None, error)`` is called from the read callback once the final reply is
        parsed, with exactly what ``command()`` would return or raise. ``on_reply`` must not
        raise. Writes do not wait for a paused socket: one command is in flight at a time,
        so the unsent data stays bounded.
        """
        command = self._commands.get(verb, args)
        _, name, data = command
        if self.closed:
            raise AgiConnectionLost("connection closed")
        if self.dead and name not in DEAD_ALLOWED:
            raise AgiHangup(f"channel hung up; {name} not allowed on a dead channel")
        if self._busy:
            raise RuntimeError("AgiConnection.submit() called while a command is in flight")
        proto = self._protocol
        if proto.lost:
            self._mark_dead("write failed")
            self.closed = True
            raise AgiConnectionLost("connection lost")
        # timed (hook or debug log) or not is decided here, once per command
        self._sent_at = (
            time.perf_counter()
            if self._timing is not None or log.isEnabledFor(logging.DEBUG)
            else 0.0
        )
        self._busy = True
        self._pending = on_reply
        self._pending_command = command
        proto.write(data)
        self.commands_sent += 1
        self._stats.commands_total += 1
        proto.on_reply(self._reply_callback)

    def _on_reply(self, reply: AgiReply | None, exc: Exception | None) -> None:
        on_reply = self._pending
        if on_reply is None:  # closed in the meantime
            return
        self._pending = None
        self._busy = False
        line, name, _ = self._pending_command
        if exc is not None:
            if isinstance(exc, AgiProtocolError):
                # Replies can no longer be matched to commands: nothing more may be sent.
                self.closed = True
            on_reply(None, exc)
            return
        assert reply is not None
        if self._sent_at:
            self._log_timing(name, line, reply, self._sent_at)
        if reply.code == 200 and name != "HANGUP":
            on_reply(reply, None)
            return
        try:
            final = self._final(name, line, reply)
        except AgiError as err:
            on_reply(None, err)
            return
        on_reply(final, None)

    def _log_timing(self, name: str, line: str, reply: AgiReply, sent_at: float) -> None:
        reply_at = time.perf_counter()
        timing = self._timing
        if timing is not None:
            timing(
                command=name,
                previous_reply_at=self._last_reply_at,
                sent_at=sent_at,
                reply_at=reply_at,
            )
        self._last_reply_at = reply_at
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "agi %s: %s -> %s (%.2f ms)",
                self.env.uniqueid,
                line.rstrip("\n"),
                reply.text.splitlines()[0] if reply.text else reply.code,
                (reply_at - sent_at) * 1000,
            )

    # convenience wrappers -------------------------------------------------------------------

    async def answer(self) -> AgiReply:
        return await self.command("ANSWER")

    async def stream_file(self, filename: str, escape_digits: str = "") -> AgiReply:
        return await self.command("STREAM FILE", filename, escape_digits)

    async def get_data(self, filename: str, timeout_ms: int, max_digits: int) -> AgiReply:
        return await self.command("GET DATA", filename, str(timeout_ms), str(max_digits))

    async def wait_for_digit(self, timeout_ms: int) -> AgiReply:
        return await self.command("WAIT FOR DIGIT", str(timeout_ms))

    async def say_digits(self, digits: str, escape_digits: str = "") -> AgiReply:
        return await self.command("SAY DIGITS", digits, escape_digits)

    async def set_variable(self, name: str, value: str) -> AgiReply:
        return await self.command("SET VARIABLE", name, value)

    async def get_variable(self, name: str) -> str | None:
        reply = await self.command("GET VARIABLE", name)
        return reply.data if reply.result == "1" else None

    async def hangup(self) -> AgiReply:
        return await self.command("HANGUP")

    async def exec(self, app: str, args: str = "") -> AgiReply:
        return await self.command("EXEC", app, args) if args else await self.command("EXEC", app)

    async def close(self) -> None:
        """Close the socket (how a FastAGI script ends). Idempotent, never raises."""
        self.drop()

    def drop(self) -> None:
        """``close()`` without awaiting: a command in flight gets no reply callback."""
        self._pending = None
        self.closed = True
        self._reply_callback = _no_reply  # (bound to this connection: a reference cycle)
        # The socket flushes what is buffered and then closes; nothing to wait for.
        try:
            self._protocol.close()
        except Exception:
            log.exception("agi %s: error while closing the socket", self.env.uniqueid)


def _no_reply(reply: AgiReply | None, exc: Exception | None) -> None:
    """The reply callback of a dropped connection (nothing is sent on it any more)."""


# ---------------------------------------------------------------------------------------------
# server

AgiHandler = Callable[[AgiConnection], Awaitable[None]]


class AgiRouter(Protocol):
    """Maps a script name (query string removed; None when the URL had no path) to a handler."""

    def resolve(self, script: str | None) -> AgiHandler | None: ...


class StaticRouter:
    """A fixed route table; ``default`` is used when the URL has no script path."""

    def __init__(self, routes: Mapping[str, AgiHandler], *, default: str | None = None) -> None:
        self._routes = dict(routes)
        self._default = default

    def resolve(self, script: str | None) -> AgiHandler | None:
        name = script if script is not None else self._default
        return None if name is None else self._routes.get(name)


class AgiServer:
    """FastAGI server: accept, read the environment, route, run the handler, always close.

    Listening and accepted sockets are non-blocking sockets on reader callbacks (``_AgiSocket``,
    no asyncio transports): the listeners' on the loop, the accepted sockets' in the server's
    own epoll set where there is one (Linux), else on the loop too. A session task is started
    only once the environment is complete (``header_timeout`` bounds the wait for it).
    """

    def __init__(
        self,
        *,
        router: AgiRouter,
        operator_queue: str,
        host: str = "127.0.0.1",
        port: int = 4573,
        header_timeout: float = 10.0,
        timing: CommandTimingHook | None = None,
        backlog: int = 1024,
    ) -> None:
        self._router = router
        self._backlog = backlog
        self._operator_queue = operator_queue
        self._host = host
        self._port = port
        self._header_timeout = header_timeout
        #: the timing hook given to sessions started from now on (None: no timing taken)
        self.timing = timing
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[socket.socket] = []
        self._accept_retry: asyncio.TimerHandle | None = None
        self._sessions: dict[_AgiSocket, asyncio.Task[None]] = {}
        # sockets still reading their environment, oldest (earliest deadline) first
        self._pending: dict[_AgiSocket, None] = {}
        self._header_timer: asyncio.TimerHandle | None = None
        self._flushing: set[_AgiSocket] = set()  # closed by us, unsent output still going out
        self._read_buffer = memoryview(bytearray(READ_SIZE))
        self._readers: _Readers | None = None
        self._reply_cache = ReplyCache()
        self._command_cache = CommandCache()
        self.stats = AgiStats()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if not self._listeners:
            raise RuntimeError("AgiServer is not started")
        return int(self._listeners[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and listen on every address ``host`` resolves to; accepting starts at once."""
        if self._listeners:
            raise RuntimeError("AgiServer already started")
        loop = asyncio.get_running_loop()
        listeners: list[socket.socket] = []
        try:
            for family, address in await self._addresses(loop):
                sock = socket.socket(family, socket.SOCK_STREAM)
                listeners.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # "::" alone must not also take the IPv4 port another listener binds.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"FastAGI server cannot bind {address[:2]}: {exc.strerror}"
                    ) from exc
                sock.listen(self._backlog)
                sock.setblocking(False)
                _set_connection_options(sock)
        except BaseException:
            for sock in listeners:
                sock.close()
            raise
        self._loop = loop
        self._listeners = listeners
        self._readers = _EpollReaders(loop) if OWN_EPOLL else _LoopReaders(loop)
        for sock in listeners:
            loop.add_reader(sock.fileno(), self._accept_ready, sock)
        log.info("FastAGI server listening on %s:%s", self._host, self.port)

    async def _addresses(
        self, loop: asyncio.AbstractEventLoop
    ) -> list[tuple[int, tuple[Any, ...]]]:
        host = self._host or None  # "" = every interface
        if host is not None:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                pass
            else:  # numeric: no resolver thread
                family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
                return [(family, (host, self._port))]
        infos = await loop.getaddrinfo(
            host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        out: list[tuple[int, tuple[Any, ...]]] = []
        for family, _type, _proto, _name, address in infos:
            if (family, address) not in out and family in (socket.AF_INET, socket.AF_INET6):
                out.append((family, address))
        if not out:
            raise OSError(f"FastAGI server: no address for {self._host!r}")
        return out

    async def close(self) -> None:
        """Stop accepting, abort the connections whose session has not started, cancel the
        running sessions (their sockets are closed) and abort what is still flushing."""
        loop = self._loop
        if loop is not None:
            for sock in self._listeners:
                loop.remove_reader(sock.fileno())
                sock.close()
        self._listeners = []
        if self._accept_retry is not None:
            self._accept_retry.cancel()
            self._accept_retry = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        for pending in list(self._pending):
            pending.abort()
        for task in list(self._sessions.values()):
            task.cancel()
        if self._sessions:
            await asyncio.gather(*self._sessions.values(), return_exceptions=True)
        # A task cancelled before its first step never ran its clean-up.
        for unstarted in list(self._sessions):
            del self._sessions[unstarted]
            self.stats.sessions_active -= 1
            unstarted.abort()
        for flushing in list(self._flushing):
            flushing.abort()
        if self._readers is not None:
            self._readers.close()
            self._readers = None

    async def __aenter__(self) -> AgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # accepting --------------------------------------------------------------------------------

    def _accept_ready(self, listener: socket.socket) -> None:
        """Accept what is queued (at most ``backlog`` per callback, so that the connections
        already accepted get their turn); a failure never leaves the callback."""
        loop = self._loop
        assert loop is not None
        deadline = loop.time() + self._header_timeout
        for _ in range(self._backlog):
            try:
                sock, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if listener.fileno() < 0:  # closed by close() meanwhile
                    return
                if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                    # Out of descriptors or memory: stop accepting for a while instead of
                    # spinning on a listener that stays readable.
                    log.error("agi: accept failed (%s); pausing accepts for 1 s", exc)
                    self._pause_accepting(loop)
                    return
                log.debug("agi: accept failed: %r", exc)  # ECONNABORTED and the like
                continue
            try:
                self._accepted(loop, sock, deadline)
            except Exception:
                log.exception("agi: could not set up an accepted connection")
                sock.close()

    def _pause_accepting(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._accept_retry is not None:  # another listener paused them already
            return
        for sock in self._listeners:
            loop.remove_reader(sock.fileno())
        self._accept_retry = loop.call_later(ACCEPT_RETRY_DELAY, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._accept_retry = None
        loop = self._loop
        assert loop is not None
        for sock in self._listeners:
            loop.add_reader(sock.fileno(), self._accept_ready, sock)

    def _accepted(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, deadline: float
    ) -> None:
        sock.setblocking(False)
        if not _OPTIONS_INHERITED:
            _set_connection_options(sock)
        conn = _AgiSocket(self, sock, loop)
        conn.deadline = deadline
        conn.start_reading()
        self.stats.sessions_total += 1
        self.stats.sessions_active += 1
        self._pending[conn] = None
        if self._header_timer is None:
            self._header_timer = loop.call_at(deadline, self._check_headers)

    def _check_headers(self) -> None:
        """The one header timer: drops the connections past their deadline (the oldest come
        first) and is set again for the next deadline."""
        self._header_timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        pending = self._pending
        while pending:
            oldest = next(iter(pending))
            if oldest.deadline > now:
                self._header_timer = loop.call_at(oldest.deadline, self._check_headers)
                return
            try:
                oldest.header_timed_out()
            except Exception:
                log.exception("agi: closing a connection after its header timeout failed")
            pending.pop(oldest, None)

    # called by _AgiSocket ---------------------------------------------------------------------

    def _ended_before_session(self, sock: _AgiSocket, exc: Exception) -> None:
        self._pending.pop(sock, None)
        self.stats.sessions_active -= 1
        if isinstance(exc, AgiProtocolError):
            self.stats.sessions_failed += 1
            log.warning("agi: protocol error: %s", exc)
        else:
            log.info("agi: connection ended before the session started: %s", exc or "timeout")

    def _start_session(self, sock: _AgiSocket, env: AgiEnvironment) -> AgiConnection:
        self._pending.pop(sock, None)
        conn = AgiConnection(
            env=env,
            protocol=sock,
            stats=self.stats,
            timing=self.timing,
            commands=self._command_cache,
        )
        self._sessions[sock] = sock._loop.create_task(self._run_session(conn))
        return conn

    async def _run_session(self, conn: AgiConnection) -> None:
        try:
            await self._dispatch(conn)
        except AgiConnectionLost as exc:
            log.info("agi %s: connection lost: %s", conn.env.uniqueid, exc)
        except AgiProtocolError as exc:
            self.stats.sessions_failed += 1
            log.warning("agi: protocol error: %s", exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.sessions_failed += 1
            log.exception("agi: session failed")
        finally:
            self.stats.sessions_active -= 1
            await conn.close()
            self._sessions.pop(conn._protocol, None)
            conn._protocol.release()

    async def _dispatch(self, conn: AgiConnection) -> None:
        script = conn.env.script_name
        handler = self._router.resolve(script)
        if handler is None:
            self.stats.unknown_routes += 1
            log.warning(
                "agi %s: unknown script %r; sending the caller to queue %s",
                conn.env.uniqueid,
                conn.env.network_script,
                self._operator_queue,
            )
            with contextlib.suppress(AgiError):
                await conn.set_variable("IVR_QUEUE", self._operator_queue)
            return
        try:
            await handler(conn)
        except AgiHangup as exc:
            log.info("agi %s: hangup: %s", conn.env.uniqueid, exc)
