"""The Asterisk side of FastAGI: connect to an AGI server, send the environment, answer commands.

Asterisk is the TCP *client* (PROTOCOL.md §5). Lines end with a bare LF in both directions.
Replies follow res/res_agi.c (Asterisk 20); the simulated caller (`CallerModel`) decides which keys
are pressed during prompts and when the caller hangs up. Every command is reported on AMI as
AGIExecStart/AGIExecEnd (plus VarSet/DTMF events) through the `Pbx` event sink.

`run_agi_call()` runs one IVR session without the rest of the PBX (for benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time as _time
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, cast
from urllib.parse import quote

from callcenter.pbxsim.callers import CallerModel, IvrHangup, KeyPlan
from callcenter.pbxsim.pbx import (
    STATE_UP,
    Channel,
    Clock,
    EventSink,
    Ids,
    Pbx,
    RealClock,
    escape_ctl,
    null_sink,
)
from callcenter.pbxsim.wire import ast_false, ast_true

log = logging.getLogger(__name__)

AgiStatus = Literal["SUCCESS", "FAILURE", "HANGUP"]
SAMPLES_PER_SECOND = 8000
MAX_LINE = 8192

R_SUCCESS, R_SHOWUSAGE, R_FAILURE = 0, 1, 2

#: commands that still run after the caller hung up (res_agi.c `dead` flag in the commands table)
DEAD_ALLOWED = frozenset(
    {
        "exec",
        "get variable",
        "get full variable",
        "set variable",
        "verbose",
        "noop",
        "database get",
        "database put",
        "database del",
        "database deltree",
        "asyncagi break",
        "speech destroy",
        "speech unload grammar",
    }
)

COMMANDS: tuple[tuple[str, ...], ...] = tuple(
    tuple(c.split())
    for c in (
        "answer",
        "asyncagi break",
        "channel status",
        "control stream file",
        "database del",
        "database deltree",
        "database get",
        "database put",
        "exec",
        "get data",
        "get full variable",
        "get option",
        "get variable",
        "gosub",
        "hangup",
        "noop",
        "receive char",
        "record file",
        "say alpha",
        "say digits",
        "say number",
        "say phonetic",
        "send text",
        "set autohangup",
        "set callerid",
        "set context",
        "set extension",
        "set music",
        "set priority",
        "set variable",
        "speech destroy",
        "speech unload grammar",
        "stream file",
        "tdd mode",
        "verbose",
        "wait for digit",
    )
)

STREAM_FILE_USAGE = (
    " Send the given file, allowing playback to be interrupted by the given digits, if any.\n"
    "Returns '0' if playback completes without a digit being pressed, or the ASCII numerical\n"
    "value of the digit if one was pressed, or '-1' on error or if the channel was\n"
    "disconnected. If musiconhold is playing before calling stream file it will be\n"
    "automatically stopped and will not be restarted after completion.\n"
    "It sets the following channel variables upon completion:\n"
    "${PLAYBACKSTATUS}: The status of the playback attempt as a text string.\n"
    "    SUCCESS\n"
    "    FAILED\n"
)
#: usage text per command (res_agi.c renders it from the XML description; only STREAM FILE's
#: wording is taken from the transcripts, the others are short summaries in the same layout)
USAGE: dict[str, str] = {
    "stream file": STREAM_FILE_USAGE,
    "control stream file": " Send the given file, allowing playback to be controlled by the given\n"
    "digits, if any.\n",
    "get data": " Stream the given file, and receive DTMF data.\n"
    "Returns the digits received from the channel at the other end.\n",
    "get option": " Behaves similar to STREAM FILE but used with a timeout option.\n",
    "wait for digit": " Waits up to timeout milliseconds for channel to receive a DTMF digit.\n"
    "Returns -1 on channel failure, 0 if no digit is received in the timeout, or the\n"
    "numerical value of the ascii of the digit if one is received. Use -1 for the timeout\n"
    "value if you desire the call to block indefinitely.\n",
    "say digits": " Say a given digit string, returning early if any of the given DTMF digits\n"
    "are received on the channel.\n",
    "say number": " Say a given number, returning early if any of the given DTMF digits are\n"
    "received on the channel.\n",
    "say alpha": " Say a given character string, returning early if any of the given DTMF\n"
    "digits are received on the channel.\n",
    "say phonetic": " Say a given character string with phonetics, returning early if any of\n"
    "the given DTMF digits are received on the channel.\n",
    "exec": " Executes application with given options.\n"
    "Returns whatever the application returns, or -2 on failure to find application.\n",
    "set variable": " Sets a variable to the current channel.\n",
    "get variable": " Returns 0 if variablename is not set. Returns 1 if variablename is set\n"
    "and returns the variable in parentheses.\n",
    "get full variable": " Returns 0 if variablename is not set or channel does not exist.\n"
    "Returns 1 if variablename is set and returns the variable in parenthesis. Understands\n"
    "complex variable names and builtin variables, unlike GET VARIABLE.\n",
    "hangup": " Hangs up the specified channel. If no channel name is given, hangs up the\n"
    "current channel\n",
    "channel status": " Returns the status of the specified channel. If no channel name is\n"
    "given then returns the status of the current channel.\n",
    "verbose": " Sends message to the console via verbose message system. level is the\n"
    "verbose level (1-4). Always returns 1.\n",
    "set context": " Sets the context for continuation upon exiting the application.\n",
    "set extension": " Changes the extension for continuation upon exiting the application.\n",
    "set priority": " Changes the priority for continuation upon exiting the application.\n"
    "The priority must be a valid priority or label.\n",
    "set music": " Enables/Disables the music on hold generator. If class is not specified,\n"
    "then the default music on hold class will be used. This generator will be stopped\n"
    "automatically when playing a file.\n"
    "Always returns 0.\n",
    "set autohangup": " Cause the channel to automatically hangup at time seconds in the\n"
    "future. Of course it can be hungup before then as well. Setting to 0 will cause the\n"
    "autohangup feature to be disabled on this channel.\n",
    "set callerid": " Changes the callerid of the current channel.\n",
    "database get": " Retrieves an entry in the Asterisk database for a given family and key.\n"
    "Returns 0 if key is not set. Returns 1 if key is set and returns the variable in\n"
    "parenthesis.\n",
    "database put": " Adds or updates an entry in the Asterisk database for a given family,\n"
    "key, and value.\n"
    "Returns 1 if successful, 0 otherwise.\n",
    "database del": " Deletes an entry in the Asterisk database for a given family and key.\n"
    "Returns 1 if successful, 0 otherwise.\n",
    "database deltree": " Deletes a family or specific keytree within a family in the\n"
    "Asterisk database.\n"
    "Returns 1 if successful, 0 otherwise.\n",
    "record file": " Record to a file until a given dtmf digit in the sequence is received.\n"
    "Returns -1 on hangup or error. The format will specify what kind of file will be\n"
    "recorded. The timeout is the maximum record time in milliseconds, or -1 for no\n"
    "timeout. offset samples is optional, and, if provided, will seek to the offset\n"
    "without exceeding the end of the file. beep can take any value, and causes Asterisk\n"
    "to play a beep to the channel that is about to be recorded. silence is the number of\n"
    "seconds of silence allowed before the function returns despite the lack of dtmf\n"
    "digits or reaching timeout. silence value must be preceded by s= and is also\n"
    "optional.\n",
    "gosub": " Cause the channel to execute the specified dialplan subroutine, returning to\n"
    "the dialplan with execution of a Return().\n",
    "receive char": " Receives a character of text on a channel. Most channels do not support\n"
    "the reception of text.\n",
    "send text": " Sends the given text on a channel. Most channels do not support the\n"
    "transmission of text.\n",
    "tdd mode": " Enable/Disable TDD transmission/reception on a channel.\n",
}

REPLY_510 = "510 Invalid or unknown command\n"
REPLY_511 = "511 Command Not Permitted on a dead channel or intercept routine\n"
RESULT_TEXT = {
    200: "Success",
    510: "Invalid or unknown command",
    511: "Command Not Permitted on a dead channel or intercept routine",
    520: "Usage",
}


def parse_args(line: str) -> list[str]:
    """Split a command line like res_agi.c parse_args(): blanks, "quotes", backslash escapes."""
    if "\\" in line:
        return _parse_args_escaped(line)
    # Without backslashes the line is unquoted and quoted runs, split at the quotes.
    argv: list[str] = []
    whitespace = True
    quoted = False
    for n, seg in enumerate(line.split('"')):
        if n:  # a quote: opens a new (possibly empty) argument after a blank, else continues one
            if not quoted and whitespace:
                argv.append("")
                whitespace = False
            quoted = not quoted
        if quoted:
            if seg:
                argv[-1] += seg
            continue
        if "\t" in seg:
            seg = seg.replace("\t", " ")
        parts = seg.split(" ")
        first = parts[0]
        if first:
            if whitespace:
                argv.append(first)
            else:
                argv[-1] += first
            whitespace = False
        for part in parts[1:]:
            whitespace = True
            if part:
                argv.append(part)
                whitespace = False
    return argv


def _parse_args_escaped(line: str) -> list[str]:
    """parse_args() character by character (lines with backslash escapes)."""
    argv: list[str] = []
    cur: list[str] | None = None
    quoted = escaped = False
    whitespace = True
    for ch in line:
        if escaped:
            if whitespace:
                cur = []
                argv.append("")
                whitespace = False
            assert cur is not None
            cur.append(ch)
            argv[-1] = "".join(cur)
            escaped = False
            continue
        if ch in " \t" and not quoted:
            whitespace = True
            continue
        if ch == '"':
            if not quoted and whitespace:
                cur = []
                argv.append("")
                whitespace = False
            quoted = not quoted
            continue
        if ch == "\\":
            escaped = True
            continue
        if whitespace:
            cur = []
            argv.append("")
            whitespace = False
        assert cur is not None
        cur.append(ch)
        argv[-1] = "".join(cur)
    return argv


#: COMMANDS by first word, longest first, with their names (no command has more than 3 words)
_BY_FIRST_WORD: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    first: tuple(
        (c, " ".join(c))
        for c in sorted((c for c in COMMANDS if c[0] == first), key=len, reverse=True)
    )
    for first in {c[0] for c in COMMANDS}
}
assert max(len(c) for c in COMMANDS) <= 3
_HANDLER_NAMES = {" ".join(c): "cmd_" + "_".join(c) for c in COMMANDS}


def find_command(argv: Sequence[str]) -> str | None:
    """The longest command name the first words of `argv` spell (case-insensitive)."""
    if not argv:
        return None
    candidates = _BY_FIRST_WORD.get(argv[0].lower())
    if candidates is None:
        return None
    n = len(argv)
    for words, name in candidates:
        k = len(words)
        if k == 1:
            return name
        if n >= k and argv[1].lower() == words[1] and (k == 2 or argv[2].lower() == words[2]):
            return name
    return None


@dataclass(frozen=True, slots=True)
class AgiUrl:
    host: str
    port: int
    script: str | None
    request: str
    args: tuple[str, ...] = ()

    @classmethod
    def parse(cls, app_data: str) -> AgiUrl:
        """`agi://host[:port][/script][?query][,arg1,...]` as given to AGI()."""
        url, *args = app_data.split(",")
        m = re.fullmatch(r"agi://([^/:]+)(?::(\d+))?(?:/(.*))?", url)
        if m is None:
            raise ValueError(f"not a FastAGI URL: {url!r}")
        port = int(m.group(2)) if m.group(2) else 4573
        return cls(m.group(1), port, m.group(3) or None, url, tuple(args))


@dataclass(slots=True)
class Prompts:
    """Which sound files exist and how long they play (seconds)."""

    durations: dict[str, float] = field(default_factory=dict)
    default: float = 4.6
    missing: frozenset[str] = frozenset()
    missing_marker: str = "no-such"

    def duration(self, name: str) -> float | None:
        if name in self.missing or self.missing_marker in name or not name:
            return None
        return self.durations.get(name, self.default)


#: runs a dialplan application for EXEC; its result, or None if there is no such app
AppRunner = Callable[[Channel, str, str], Awaitable[int | None]]


@dataclass(slots=True)
class AgiCallResult:
    status: AgiStatus
    variables: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    connected: bool = False
    hung_up: bool = False
    connect_seconds: float = 0.0
    total_seconds: float = 0.0
    #: (context, exten, priority) set by SET CONTEXT/EXTENSION/PRIORITY, if any
    goto: tuple[str, str, int] | None = None


class _ServerGone(Exception):
    pass


class _Park:
    """What a callback-driven session awaits: yields itself to `AgiSession._step`, which resumes
    the session from the socket's callbacks (a line, EOF) or a timer instead of a future."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __await__(self) -> Generator[_Park, None, None]:
        yield self


_PARK_IO = _Park("io")
_PARK_SLEEP = _Park("sleep")


class HangupEvent(asyncio.Event):
    """`Channel.hangup_requested` that also calls `listener` when set, so that a session run from
    callbacks learns of a hang-up without a watcher task."""

    def __init__(self) -> None:
        super().__init__()
        self.listener: Callable[[], object] | None = None

    def set(self) -> None:
        if self.is_set():
            return
        super().set()
        if self.listener is not None:
            self.listener()


class _LineProtocol(asyncio.BufferedProtocol):
    """The socket to the AGI server, read line by line like ``StreamReader.readline()`` with a
    ``MAX_LINE * 4`` limit (an over-long line is dropped and reported as ``b"\\x00"``), without
    a task per read: the session waits on one future that data, EOF or a hang-up resolves."""

    limit = MAX_LINE * 4

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.error = False
        self.lost = False
        self.closed: asyncio.Future[None] = loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._paused_writing = False
        self._read_buffer = memoryview(bytearray(4096))  # reads go here, then into buf
        #: called instead of resolving the waiter (a callback-driven session)
        self.on_wake: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read_buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        self.buf += data
        if len(self.buf) > 2 * self.limit and not self._paused_reading:
            self._paused_reading = True
            assert self.transport is not None
            self.transport.pause_reading()
        self.wake()

    def eof_received(self) -> bool:
        self.eof = True
        self.wake()
        return True  # keep writing: Asterisk still sends its last HANGUP

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.eof = True
        if exc is not None:
            self.error = True
        self.wake()
        if not self.closed.done():
            self.closed.set_result(None)
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def wake(self) -> None:
        if self.on_wake is not None:
            self.on_wake()
            return
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        """Resolved by the next data, EOF, loss or ``wake()``."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = self.loop.create_future()
        return waiter

    def poll_line(self) -> bytes | None:
        """A line (with its LF), the partial last line or b"" at EOF, b"\\x00" for an over-long
        line; None when more data is needed."""
        if self.error:
            return b""
        buf = self.buf
        i = buf.find(b"\n")
        if i >= 0:
            if i > self.limit:
                del buf[: i + 1]
                line = b"\x00"
            else:
                line = bytes(buf[: i + 1])
                del buf[: i + 1]
        elif len(buf) > self.limit:
            buf.clear()
            line = b"\x00"
        elif self.eof:
            line = bytes(buf)
            buf.clear()
        else:
            return None
        if self._paused_reading and len(buf) <= self.limit:
            self._paused_reading = False
            assert self.transport is not None
            self.transport.resume_reading()
        return line

    def write(self, data: bytes) -> bool:
        """False once the connection is gone; True when the data was queued."""
        if self.lost or self.transport is None:
            return False
        self.transport.write(data)
        return True

    @property
    def paused_writing(self) -> bool:
        return self._paused_writing

    async def drain(self) -> None:
        if self._paused_writing and not self.lost:
            if self._drain is None:
                self._drain = self.loop.create_future()
            await self._drain


class AgiSession:
    """One FastAGI connection for one channel."""

    def __init__(
        self,
        *,
        pbx: Pbx,
        channel: Channel,
        url: AgiUrl,
        caller: CallerModel | None = None,
        prompts: Prompts | None = None,
        apps: AppRunner | None = None,
        db: MutableMapping[tuple[str, str], str] | None = None,
        env_overrides: Mapping[str, str] | None = None,
        connect_timeout: float = 2.0,
        extension_exists: Callable[[str, str, int], bool] | None = None,
        exit_on_hangup: bool | None = None,
        sighup: bool = True,
        record_dirs: Sequence[str] = ("/var/spool/asterisk",),
        callback_driven: bool = False,
    ) -> None:
        """`callback_driven`: run the command loop from the socket's callbacks and timers instead
        of a task awaiting a future per line and per prompt (same bytes, same timing); only
        without `apps` (an app may need `asyncio.current_task()`), ignored otherwise."""
        self.pbx = pbx
        self.ch = channel
        self.url = url
        self.caller = caller
        self.prompts = prompts or Prompts()
        self.apps = apps
        self.db: MutableMapping[tuple[str, str], str] = db if db is not None else {}
        self.env_overrides = dict(env_overrides or {})
        self.connect_timeout = connect_timeout
        self.extension_exists = extension_exists
        if exit_on_hangup is None:
            exit_on_hangup = ast_true(channel.get_var("AGIEXITONHANGUP") or "")
        self.exit_on_hangup = exit_on_hangup
        self.sighup = sighup and not ast_false(channel.get_var("AGISIGHUP") or "")
        self.record_dirs = tuple(record_dirs)
        self.result = AgiCallResult(status="SUCCESS")
        self._proto: _LineProtocol | None = None
        #: the AMI events would go nowhere: skip building them (the benchmark's case)
        self._quiet = pbx.publish is null_sink
        self._sleep_waiter: asyncio.Future[None] | None = None
        self._input_index = 0
        self._command_index = 0
        self._failed = False
        self._dead = False
        self._notified = False
        self._pending_hangup: IvrHangup | None = caller.ivr_hangup if caller else None
        self._cmd_start = 0.0
        self._break = False
        self._driven = callback_driven and apps is None
        self._coro: Coroutine[Any, Any, None] | None = None
        self._parked: _Park | None = None
        self._done: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ plumbing
    def environment(self) -> str:
        """The `agi_*: value` block Asterisk sends first, ending with an empty line."""
        ch = self.ch
        lines: list[tuple[str, str]] = [("agi_network", "yes")]
        if self.url.script:
            lines.append(("agi_network_script", self.url.script))
        lines += [
            ("agi_request", self.url.request),
            ("agi_channel", ch.name),
            ("agi_language", ch.language),
            ("agi_type", ch.tech),
            ("agi_uniqueid", ch.uniqueid),
            ("agi_version", self.pbx.version),
            ("agi_callerid", ch.caller_num or "unknown"),
            ("agi_calleridname", ch.caller_name or "unknown"),
            ("agi_callingpres", "0"),
            ("agi_callingani2", "0"),
            ("agi_callington", "0"),
            ("agi_callingtns", "0"),
            ("agi_dnid", ch.dnid or "unknown"),
            ("agi_rdnis", "unknown"),
            ("agi_context", ch.context),
            ("agi_extension", ch.exten),
            ("agi_priority", str(ch.priority)),
            ("agi_enhanced", "0.0"),
            ("agi_accountcode", ch.accountcode),
            ("agi_threadid", str(next(self.pbx.ids.thread_ids))),
        ]
        lines += [(f"agi_arg_{i}", a) for i, a in enumerate(self.url.args, 1)]
        lines = [(k, self.env_overrides.get(k, v)) for k, v in lines]
        return "".join(f"{k}: {v}\n" for k, v in lines) + "\n"

    async def _send(self, text: str) -> None:
        proto = self._proto
        if proto is None:
            return
        if not proto.write(text.encode("utf-8", "replace")):
            raise _ServerGone
        if proto.paused_writing:
            await proto.drain()
        if proto.lost:
            raise _ServerGone

    def _set_var(self, name: str, value: str) -> None:
        if self._quiet:
            self.ch.store_var(name, value)
        else:
            self.pbx.set_var(self.ch, name, value)

    def _hangup_now(self) -> None:
        """The simulated caller hangs up (BYE)."""
        self._pending_hangup = None
        self.pbx.request_hangup(self.ch, 16)

    @property
    def _hung(self) -> bool:
        return self.ch.hangup_requested.is_set()

    async def _advance_to(self, rel: float) -> bool:
        """Let the command run until `rel` seconds after its start. False if the caller hung up."""
        if self._hung:
            return False
        ph = self._pending_hangup
        planned = ph.after if ph is not None and ph.command == self._command_index - 1 else None
        target = rel
        if planned is not None and planned <= rel:
            target = planned
        delay = self._cmd_start + target - self.pbx.clock.time()
        if delay > 0:
            await self._sleep_or_hangup(delay)
        if self._hung:
            return False
        if planned is not None and planned <= rel:
            self._hangup_now()
            return False
        return True

    async def _sleep_or_hangup(self, delay: float) -> None:
        clock = self.pbx.clock
        if self._driven and self._proto is not None and type(clock) is RealClock:
            # one timer; `_step` resumes here when it fires or the caller hangs up
            timer = self._proto.loop.call_later(max(0.0, delay) / clock.speed, self._on_timer)
            try:
                await _PARK_SLEEP
            finally:
                timer.cancel()
            return
        if self._proto is not None and type(clock) is RealClock:
            # One timer and one future, woken early by the session's hang-up watcher.
            loop = self._proto.loop
            waiter = self._sleep_waiter = loop.create_future()
            timer = loop.call_later(max(0.0, delay) / clock.speed, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._sleep_waiter = None
            return
        sleeper = asyncio.ensure_future(self.pbx.clock.sleep(delay))
        waiter = asyncio.ensure_future(self.ch.hangup_requested.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, waiter):
                if not t.done():
                    t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(sleeper, waiter, return_exceptions=True)

    def _elapsed(self) -> float:
        return max(0.0, self.pbx.clock.time() - self._cmd_start)

    def _next_keys(self, is_input: bool) -> list[tuple[float, str]]:
        if not is_input:
            return []
        plan: KeyPlan | None = self.caller.key_plan(self._input_index) if self.caller else None
        self._input_index += 1
        return plan.times() if plan else []

    def _dtmf(self, digit: str) -> None:
        if self._quiet:
            return
        self.pbx.dtmf(self.ch, digit, self.caller.dtmf_duration_ms if self.caller else 120)

    # ------------------------------------------------------------------ main loop
    async def run(self) -> AgiCallResult:
        t0 = _time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: _LineProtocol(loop), self.url.host, self.url.port
                )
        except (OSError, TimeoutError):
            self.result.status = "FAILURE"
            self._finish()
            return self.result
        self.result.connected = True
        self.result.connect_seconds = _time.monotonic() - t0
        self._proto = proto
        hangup_event = self.ch.hangup_requested
        watcher: asyncio.Task[None] | None = None
        if self._driven:
            proto.on_wake = self._on_io
        if self._driven and type(hangup_event) is HangupEvent:
            hangup_event.listener = lambda: loop.call_soon(self._wake_session)
        else:
            watcher = loop.create_task(self._watch_hangup(proto))
        try:
            await self._send(self.environment())
            if self._driven:
                await self._drive(self._loop(proto))
            else:
                await self._loop(proto)
        except _ServerGone:
            pass
        finally:
            if watcher is not None:
                watcher.cancel()
            if type(hangup_event) is HangupEvent:
                hangup_event.listener = None
            proto.on_wake = None
            transport = proto.transport
            assert transport is not None
            # Asterisk always writes a last HANGUP on its way out (EPIPE if the server closed)
            if self.sighup and not transport.is_closing() and proto.write(b"HANGUP\n"):
                await proto.drain()
            transport.close()
            await proto.closed
        self.result.total_seconds = _time.monotonic() - t0
        if self._dead or self._hung:
            self.result.status = "HANGUP"
            self.result.hung_up = True
        elif self._failed:
            self.result.status = "FAILURE"
        self._finish()
        return self.result

    def _finish(self) -> None:
        if not self.ch.gone:
            self._set_var("AGISTATUS", self.result.status)

    async def _notify_hangup(self) -> bool:
        """Write the asynchronous HANGUP line once. True if the AGI must stop (AGIEXITONHANGUP)."""
        self._dead = True
        if self._notified:
            return False
        self._notified = True
        if self.sighup:
            await self._send("HANGUP\n")
        if self.exit_on_hangup:
            if self.sighup:
                await self._send("HANGUP\n")
            self.sighup = False
            return True
        return False

    async def _watch_hangup(self, proto: _LineProtocol) -> None:
        """Wakes the session when the caller hangs up while it reads or plays (one task per
        session instead of one per wait)."""
        await self.ch.hangup_requested.wait()
        self._wake_session()

    def _wake_session(self) -> None:
        if self._driven:
            if self._parked is not None:
                self._step()
            return
        if self._proto is not None:
            self._proto.wake()
        if self._sleep_waiter is not None:
            _resolve(self._sleep_waiter)

    # ------------------------------------------------------------------ callback driver
    async def _drive(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` from callbacks: it parks on `_PARK_IO` (resumed by the socket) or
        `_PARK_SLEEP` (resumed by its timer or a hang-up); an asyncio future it awaits resumes
        it through a done callback, as a task would."""
        assert self._proto is not None
        self._coro = coro
        done = self._done = self._proto.loop.create_future()
        try:
            self._step()
            await done
        finally:
            if self._coro is not None:  # cancelled from outside
                self._coro = None
                self._parked = None
                coro.close()

    def _on_io(self) -> None:
        if self._parked is _PARK_IO:
            self._step()

    def _on_timer(self) -> None:
        if self._parked is _PARK_SLEEP:
            self._step()

    def _step(self, _: object = None) -> None:
        coro, done = self._coro, self._done
        if coro is None or done is None:
            return
        self._parked = None
        try:
            awaited = coro.send(None)
        except StopIteration:
            self._coro = None
            if not done.done():
                done.set_result(None)
            return
        except asyncio.CancelledError:
            self._coro = None
            done.cancel()
            return
        except BaseException as exc:
            self._coro = None
            if not done.done():
                done.set_exception(exc)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            return
        if awaited is _PARK_IO or awaited is _PARK_SLEEP:
            self._parked = awaited
        elif awaited is None:  # a bare yield (sleep(0))
            self._proto_loop().call_soon(self._step)
        elif getattr(awaited, "_asyncio_future_blocking", None):
            fut = cast(asyncio.Future[Any], awaited)
            fut._asyncio_future_blocking = False
            fut.add_done_callback(self._step)
        else:
            self._coro = None
            coro.close()
            if not done.done():
                done.set_exception(RuntimeError(f"AGI session awaited {awaited!r}"))

    def _proto_loop(self) -> asyncio.AbstractEventLoop:
        assert self._proto is not None
        return self._proto.loop

    async def _loop(self, proto: _LineProtocol) -> None:
        hangup_requested = self.ch.hangup_requested
        while True:
            # the next command line; a hang-up while idle is noticed first
            while True:
                if hangup_requested.is_set() and not self._notified and await self._notify_hangup():
                    return
                raw = proto.poll_line()
                if raw is not None:
                    break
                if self._driven:
                    await _PARK_IO
                else:
                    await proto.wait()
            if not raw:
                return
            if raw == b"\x00":  # over-long line: like Asterisk, the rest is garbage
                await self._send(REPLY_510)
                continue
            line = raw.decode("utf-8", "replace")
            if line.endswith("\n"):
                line = line[:-1]
            self._command_index += 1
            self.result.commands.append(line)
            await self._handle(line)
            if self._pending_hangup is not None and (
                self._pending_hangup.command == self._command_index - 1
            ):
                self._hangup_now()
            if self._hung and not self._notified and await self._notify_hangup():
                return

    async def _handle(self, line: str) -> None:
        argv = parse_args(line)
        quiet = self._quiet
        snap_cmd: list[tuple[str, str]] = []
        if not quiet:
            command_id = self.pbx.ids.command_id()
            snap_cmd = [("CommandId", command_id), ("Command", escape_ctl(line))]
            self.pbx.emit("AGIExecStart", "agi", [*self.ch.snapshot(), *snap_cmd])
        name = find_command(argv)
        self._cmd_start = self.pbx.clock.time()
        code: int
        result_text: str
        if name is None:
            reply, code, rc = REPLY_510, 510, R_SUCCESS
        elif self._dead and name not in DEAD_ALLOWED:
            reply, code, rc = REPLY_511, 511, R_SUCCESS
        else:
            handler = getattr(self, _HANDLER_NAMES[name])
            try:
                outcome = await handler(argv)
            except (ValueError, OverflowError, IndexError):
                log.warning("AGI %s: cannot handle %r", self.ch.name, line, exc_info=True)
                outcome = None
            if outcome is None:
                usage = USAGE.get(name)
                if usage is None:
                    reply = "520 Invalid command syntax.  Proper usage not available.\n"
                else:
                    reply = (
                        "520-Invalid command syntax.  Proper usage follows:\n"
                        f"{usage}\n520 End of proper usage.\n"
                    )
                code, rc = 520, R_SHOWUSAGE
            else:
                reply, rc = outcome
                code = 200
        await self._send(reply)
        self.result.replies.append(reply)
        if code == 200 and rc == R_FAILURE:
            if not self._hung:
                self._failed = True
            code_field, result_text = "-1", "Failure"
        elif code == 200 and rc not in (R_SUCCESS,):
            code_field, result_text = "200", "Unknown Result"
        else:
            code_field, result_text = str(code), RESULT_TEXT[code]
        if not quiet and not self.ch.gone:
            self.pbx.emit(
                "AGIExecEnd",
                "agi",
                [
                    *self.ch.snapshot(),
                    *snap_cmd,
                    ("ResultCode", code_field),
                    ("Result", result_text),
                ],
            )

    # ------------------------------------------------------------------ media helpers
    async def _play(
        self, duration: float, escape: str, keys: list[tuple[float, str]], offset: int = 0
    ) -> tuple[int, int]:
        """Play for `duration` s; returns (result, endpos)."""
        for t, d in keys:
            if t >= duration:
                break
            if not await self._advance_to(t):
                return -1, offset + int(self._elapsed() * SAMPLES_PER_SECOND)
            self._dtmf(d)
            if d in escape:
                return ord(d), offset + round(t * SAMPLES_PER_SECOND)
        if not await self._advance_to(duration):
            return -1, offset + int(self._elapsed() * SAMPLES_PER_SECOND)
        return 0, offset + round(duration * SAMPLES_PER_SECOND)

    async def _wait_digit(
        self, start: float, limit: float | None, keys: list[tuple[float, str]]
    ) -> int:
        """Wait from `start` up to `timeout` s for any key: ASCII code, 0 on timeout, -1 hangup."""
        for t, d in keys:
            if t < start:
                continue
            if limit is not None and t >= start + limit:
                break
            if not await self._advance_to(t):
                return -1
            self._dtmf(d)
            return ord(d)
        if limit is None:
            await self.ch.hangup_requested.wait()
            return -1
        if not await self._advance_to(start + limit):
            return -1
        return 0

    def _playback_status(self, ok: bool) -> None:
        self._set_var("PLAYBACKSTATUS", "SUCCESS" if ok else "FAILED")

    # ------------------------------------------------------------------ commands
    Outcome = tuple[str, int] | None

    async def cmd_answer(self, argv: list[str]) -> Outcome:
        if self.ch.state != STATE_UP:
            self.pbx.set_state(self.ch, STATE_UP)
        return "200 result=0\n", R_SUCCESS

    async def cmd_asyncagi_break(self, argv: list[str]) -> Outcome:
        self._break = True
        return "200 result=0\n", R_SUCCESS

    async def cmd_noop(self, argv: list[str]) -> Outcome:
        return "200 result=0\n", R_SUCCESS

    async def cmd_verbose(self, argv: list[str]) -> Outcome:
        if len(argv) < 2:
            return None
        return "200 result=1\n", R_SUCCESS

    async def cmd_channel_status(self, argv: list[str]) -> Outcome:
        if len(argv) > 3:
            return None
        ch: Channel | None = self.ch if len(argv) == 2 else self.pbx.find(argv[2])
        if ch is None:
            return "200 result=-1\n", R_SUCCESS
        return f"200 result={ch.state}\n", R_SUCCESS

    async def cmd_stream_file(self, argv: list[str]) -> Outcome:
        if len(argv) < 4 or len(argv) > 5:
            return None
        offset = 0
        if len(argv) == 5:
            if not argv[4].lstrip("-").isdigit():
                return None
            offset = int(argv[4])
        duration = self.prompts.duration(argv[2])
        escape = argv[3]
        keys = self._next_keys(bool(escape))
        if duration is None:
            return f"200 result=-1 endpos={offset}\n", R_FAILURE
        remaining = max(0.0, duration - offset / SAMPLES_PER_SECOND)
        res, endpos = await self._play(remaining, escape, keys, offset)
        if not self.ch.gone:
            self._playback_status(res >= 0)
        return f"200 result={res} endpos={endpos}\n", R_SUCCESS if res >= 0 else R_FAILURE

    async def cmd_control_stream_file(self, argv: list[str]) -> Outcome:
        if len(argv) < 4:
            return None
        duration = self.prompts.duration(argv[2])
        keys = self._next_keys(bool(argv[3]))
        if duration is None:
            return "200 result=0\n", R_SUCCESS
        res, endpos = await self._play(duration, argv[3], keys)
        return f"200 result={res} endpos={endpos}\n", R_SUCCESS if res >= 0 else R_FAILURE

    async def cmd_get_option(self, argv: list[str]) -> Outcome:
        if len(argv) < 4 or len(argv) > 5:
            return None
        escape = argv[3]
        timeout = int(argv[4]) / 1000 if len(argv) == 5 and argv[4].isdigit() else 5.0
        duration = self.prompts.duration(argv[2])
        keys = self._next_keys(True)
        if duration is None:
            return "200 result=-1 endpos=0\n", R_FAILURE
        res, endpos = await self._play(duration, escape, keys)
        if res == 0:
            res = await self._wait_digit(duration, timeout, keys)
            if res > 0 and chr(res) not in escape:
                res = 0
        return f"200 result={res} endpos={endpos}\n", R_SUCCESS if res >= 0 else R_FAILURE

    async def cmd_wait_for_digit(self, argv: list[str]) -> Outcome:
        if len(argv) != 4 or not argv[3].lstrip("-").isdigit():
            return None
        ms = int(argv[3])
        keys = self._next_keys(True)
        res = await self._wait_digit(0.0, None if ms < 0 else ms / 1000, keys)
        return f"200 result={res}\n", R_SUCCESS if res >= 0 else R_FAILURE

    async def cmd_get_data(self, argv: list[str]) -> Outcome:
        if len(argv) < 3:
            return None
        timeout = int(argv[3]) / 1000 if len(argv) >= 4 and argv[3].isdigit() else 0.0
        if timeout <= 0:
            timeout = 6.0
        maxd = int(argv[4]) if len(argv) >= 5 and argv[4].isdigit() else 1024
        duration = self.prompts.duration(argv[2]) or 0.0
        keys = self._next_keys(True)
        digits = ""
        # the first key stops the prompt; each key then has `timeout` for the next one
        deadline = duration + timeout
        for t, d in keys:
            if t > deadline:
                break
            if not await self._advance_to(t):
                return "200 result=-1\n", R_SUCCESS
            self._dtmf(d)
            if d == "#":
                return f"200 result={digits}\n", R_SUCCESS
            digits += d
            if len(digits) >= maxd:
                return f"200 result={digits}\n", R_SUCCESS
            deadline = t + timeout
        if not await self._advance_to(deadline):
            return "200 result=-1\n", R_SUCCESS
        return f"200 result={digits} (timeout)\n", R_SUCCESS

    async def _say(self, text: str, escape: str) -> Outcome:
        keys = self._next_keys(bool(escape))
        res, _ = await self._play(0.6 * max(1, len(text)), escape, keys)
        return f"200 result={res}\n", R_SUCCESS if res >= 0 else R_FAILURE

    async def cmd_say_digits(self, argv: list[str]) -> Outcome:
        if len(argv) != 4 or not argv[2].isdigit():
            return None
        return await self._say(argv[2], argv[3])

    async def cmd_say_number(self, argv: list[str]) -> Outcome:
        if len(argv) < 4 or len(argv) > 5 or not argv[2].lstrip("-").isdigit():
            return None
        return await self._say(argv[2], argv[3])

    async def cmd_say_alpha(self, argv: list[str]) -> Outcome:
        if len(argv) != 4:
            return None
        return await self._say(argv[2], argv[3])

    cmd_say_phonetic = cmd_say_alpha

    async def cmd_record_file(self, argv: list[str]) -> Outcome:
        if len(argv) < 6 or not argv[5].lstrip("-").isdigit():
            return None
        path, escape, ms = argv[2], argv[4], int(argv[5])
        keys = self._next_keys(True)
        writable = self.recording_writable(path)
        if not writable:
            return "200 result=-1 (writefile)\n", R_FAILURE
        limit = None if ms < 0 else ms / 1000
        for t, d in keys:
            if limit is not None and t >= limit:
                break
            if not await self._advance_to(t):
                pos = int(self._elapsed() * SAMPLES_PER_SECOND)
                return f"200 result=-1 (hangup) endpos={pos}\n", R_FAILURE
            self._dtmf(d)
            if d in escape:
                pos = round(t * SAMPLES_PER_SECOND)
                return f"200 result={ord(d)} (dtmf) endpos={pos}\n", R_SUCCESS
        if limit is None:
            await self.ch.hangup_requested.wait()
            pos = int(self._elapsed() * SAMPLES_PER_SECOND)
            return f"200 result=-1 (hangup) endpos={pos}\n", R_FAILURE
        if not await self._advance_to(limit):
            pos = int(self._elapsed() * SAMPLES_PER_SECOND)
            return f"200 result=-1 (hangup) endpos={pos}\n", R_FAILURE
        return f"200 result=0 (timeout) endpos={int(limit * SAMPLES_PER_SECOND)}\n", R_SUCCESS

    def recording_writable(self, path: str) -> bool:
        """RECORD FILE target check: relative names (sounds dir), existing directories, or a
        directory under one of `record_dirs` (Asterisk creates those)."""
        p = PurePosixPath(path)
        if not p.is_absolute():
            return True
        parent = p.parent.as_posix()
        if any(parent == d or parent.startswith(d.rstrip("/") + "/") for d in self.record_dirs):
            return True
        return Path(parent).is_dir()

    async def cmd_exec(self, argv: list[str]) -> Outcome:
        if len(argv) < 2:
            return None
        app, data = argv[1], argv[2] if len(argv) > 2 else ""
        if self.ch.get_var("AGIEXECFULL") in ("yes", "1", "true"):
            data = substitute(self.ch, data)
        res: int | None = None
        if self.apps is not None:
            res = await self.apps(self.ch, app, data)
        if res is None:
            res = await self._builtin_app(app, data)
        if res is None:
            res = -2
        return f"200 result={res}\n", R_SUCCESS if res == 0 else -1

    async def _builtin_app(self, app: str, data: str) -> int | None:
        name = app.lower()
        if name in ("noop", "verbose", "log", "set", "mixmonitor", "stopmixmonitor"):
            if name == "set" and "=" in data:
                k, v = data.split("=", 1)
                self.pbx.set_var(self.ch, k, v)
            return 0
        if name in ("playback", "background"):
            d = self.prompts.duration(data.split(",")[0])
            if d and not await self._advance_to(d):
                return -1
            self._playback_status(d is not None)
            return 0
        if name == "wait":
            try:
                secs = float(data or 0)
            except ValueError:
                secs = 0.0
            return 0 if await self._advance_to(secs) else -1
        if name == "answer":
            await self.cmd_answer([])
            return 0
        if name == "hangup":
            self.pbx.request_hangup(self.ch, 16)
            return -1
        return None

    async def cmd_set_variable(self, argv: list[str]) -> Outcome:
        if len(argv) != 4:
            return None
        self.result.variables[argv[2].lstrip("_")] = argv[3]
        if not self.ch.gone:
            self._set_var(argv[2], argv[3])
        else:
            self.ch.store_var(argv[2], argv[3])
        return "200 result=1\n", R_SUCCESS

    async def cmd_get_variable(self, argv: list[str]) -> Outcome:
        if len(argv) != 3:
            return None
        value = self.ch.get_var(argv[2])
        if value is None:
            return "200 result=0\n", R_SUCCESS
        return f"200 result=1 ({value})\n", R_SUCCESS

    async def cmd_get_full_variable(self, argv: list[str]) -> Outcome:
        if len(argv) not in (4, 5):
            return None
        ch = self.ch
        if len(argv) == 5:
            found = self.pbx.find(argv[4])
            if found is None:
                return "200 result=0\n", R_SUCCESS
            ch = found
        return f"200 result=1 ({substitute(ch, argv[3])})\n", R_SUCCESS

    async def cmd_hangup(self, argv: list[str]) -> Outcome:
        if len(argv) == 1:
            self.pbx.request_hangup(self.ch, 16, publish=False)
            return "200 result=1\n", R_SUCCESS
        if len(argv) == 2:
            target = self.pbx.find(argv[1])
            if target is None:
                return "200 result=-1\n", R_SUCCESS
            self.pbx.request_hangup(target, 16, publish=False)
            return "200 result=1\n", R_SUCCESS
        return None

    async def _set_loc(self, argv: list[str], what: str) -> Outcome:
        if len(argv) != 3:
            return None
        g = self.result.goto or (self.ch.context, self.ch.exten, self.ch.priority)
        if what == "context":
            self.ch.context = argv[2]
            g = (argv[2], g[1], g[2])
        elif what == "exten":
            self.ch.exten = argv[2]
            g = (g[0], argv[2], g[2])
        else:
            if not argv[2].isdigit():
                return None
            g = (g[0], g[1], int(argv[2]))
        self.result.goto = g
        return "200 result=0\n", R_SUCCESS

    async def cmd_set_context(self, argv: list[str]) -> Outcome:
        return await self._set_loc(argv, "context")

    async def cmd_set_extension(self, argv: list[str]) -> Outcome:
        return await self._set_loc(argv, "exten")

    async def cmd_set_priority(self, argv: list[str]) -> Outcome:
        return await self._set_loc(argv, "priority")

    async def cmd_set_music(self, argv: list[str]) -> Outcome:
        if len(argv) < 3:
            return None
        if argv[2].lower() == "on":
            self.pbx.moh_start(self.ch, argv[3] if len(argv) > 3 else "default")
        elif argv[2].lower() == "off":
            self.pbx.moh_stop(self.ch)
        return "200 result=0\n", R_SUCCESS

    async def cmd_set_autohangup(self, argv: list[str]) -> Outcome:
        if len(argv) != 3:
            return None
        try:
            secs = float(argv[2])
        except ValueError:
            return None
        if secs > 0:
            loop = asyncio.get_running_loop()

            async def later() -> None:
                await self.pbx.clock.sleep(secs)
                self.pbx.request_hangup(self.ch, 16, publish=False)

            task = loop.create_task(later())
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)
        return "200 result=0\n", R_SUCCESS

    async def cmd_set_callerid(self, argv: list[str]) -> Outcome:
        if len(argv) != 3:
            return None
        m = re.fullmatch(r'\s*"?([^"<]*)"?\s*<([^>]*)>\s*', argv[2])
        name, num = (m.group(1).strip(), m.group(2)) if m else ("", argv[2])
        self.pbx.set_callerid(self.ch, num, name)
        return "200 result=1\n", R_SUCCESS

    async def cmd_database_get(self, argv: list[str]) -> Outcome:
        if len(argv) != 4:
            return None
        value = self.db.get((argv[2], argv[3]))
        if value is None:
            return "200 result=0\n", R_SUCCESS
        return f"200 result=1 ({value})\n", R_SUCCESS

    async def cmd_database_put(self, argv: list[str]) -> Outcome:
        if len(argv) != 5:
            return None
        self.db[(argv[2], argv[3])] = argv[4]
        return "200 result=1\n", R_SUCCESS

    async def cmd_database_del(self, argv: list[str]) -> Outcome:
        if len(argv) != 4:
            return None
        existed = self.db.pop((argv[2], argv[3]), None) is not None
        return f"200 result={1 if existed else 0}\n", R_SUCCESS

    async def cmd_database_deltree(self, argv: list[str]) -> Outcome:
        if len(argv) not in (3, 4):
            return None
        prefix = argv[3] if len(argv) == 4 else ""
        keys = [k for k in self.db if k[0] == argv[2] and k[1].startswith(prefix)]
        for k in keys:
            del self.db[k]
        return f"200 result={1 if keys else 0}\n", R_SUCCESS

    async def cmd_gosub(self, argv: list[str]) -> Outcome:
        if len(argv) < 4:
            return None
        prio = int(argv[3]) if argv[3].isdigit() else 1
        exists = self.extension_exists(argv[1], argv[2], prio) if self.extension_exists else False
        if not exists:
            return "200 result=-1 Gosub label not found\n", R_FAILURE
        await self._send("100 result=0 Trying...\n")
        return "200 result=0 Gosub complete\n", R_SUCCESS

    async def cmd_receive_char(self, argv: list[str]) -> Outcome:
        if len(argv) != 3:
            return None
        return "200 result=0 (timeout)\n", R_SUCCESS

    async def cmd_send_text(self, argv: list[str]) -> Outcome:
        if len(argv) != 3:
            return None
        return "200 result=0\n", R_SUCCESS

    async def cmd_tdd_mode(self, argv: list[str]) -> Outcome:
        if len(argv) != 3:
            return None
        return "200 result=0\n", R_SUCCESS

    async def cmd_speech_destroy(self, argv: list[str]) -> Outcome:
        return "200 result=0\n", R_SUCCESS

    cmd_speech_unload_grammar = cmd_speech_destroy


_BACKGROUND: set[asyncio.Task[None]] = set()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def uri_encode(text: str) -> str:
    """ast_uri_encode(ast_uri_http): keep letters, digits and -_.!~*'(), %XX everything else."""
    return quote(text, safe="-_.!~*'()", errors="replace")


class AsyncAgiSession(AgiSession):
    """AGI(agi:async): commands arrive through the AMI `AGI` action (ami_transcripts/09).

    The environment goes out URL-encoded in AsyncAGIStart; each command's reply in AsyncAGIExec
    (with the client's CommandID as `CommandId`); `ASYNCAGI BREAK` or a hang-up ends it.
    """

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("url", AgiUrl("", 0, None, "async"))
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._commands: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._out: list[str] = []

    def add_command(self, command: str, command_id: str = "") -> None:
        self._commands.put_nowait((command, command_id))

    async def _send(self, text: str) -> None:
        self._out.append(text)

    async def run(self) -> AgiCallResult:
        env = "".join(
            line + "\n"
            for line in self.environment().split("\n")[:-1]
            if not line.startswith("agi_network")
        )
        self.pbx.emit("AsyncAGIStart", "agi", [*self.ch.snapshot(), ("Env", uri_encode(env))])
        self.result.connected = True
        while not self._break:
            get = asyncio.ensure_future(self._commands.get())
            hang = asyncio.ensure_future(self.ch.hangup_requested.wait())
            await asyncio.wait({get, hang}, return_when=asyncio.FIRST_COMPLETED)
            hang.cancel()
            if not get.done():
                get.cancel()
                break
            line, command_id = get.result()
            self._out = []
            self._command_index += 1
            self.result.commands.append(line)
            await self._handle(line)
            reply = "".join(self._out)
            fields = [*self.ch.snapshot(), ("Result", uri_encode(reply))]
            if command_id:
                fields.append(("CommandId", command_id))
            self.pbx.emit("AsyncAGIExec", "agi", fields)
            if self._hung:
                break
        if not self.ch.gone:
            self.pbx.emit("AsyncAGIEnd", "agi", self.ch.snapshot())
        if self._hung:
            self.result.status = "HANGUP"
            self.result.hung_up = True
        elif self._failed:
            self.result.status = "FAILURE"
        self._finish()
        return self.result


_VAR_RE = re.compile(r"\$\{([^{}]+)\}")


def substitute(ch: Channel, text: str) -> str:
    """`${VAR}` / `${FUNC(arg)}` substitution (unset -> empty), like pbx_substitute_variables."""
    return _VAR_RE.sub(lambda m: ch.get_var(m.group(1)) or "", text)


async def run_agi_call(
    *,
    host: str,
    port: int,
    script: str | None = "hotline",
    caller: CallerModel,
    env_overrides: Mapping[str, str] | None = None,
    publish: EventSink | None = None,
    args: Sequence[str] = (),
    clock: Clock | None = None,
    ids: Ids | None = None,
    prompts: Prompts | None = None,
    apps: AppRunner | None = None,
    exit_on_hangup: bool = False,
    connect_timeout: float = 2.0,
    context: str = "from-trunk",
    priority: int = 3,
) -> AgiCallResult:
    """Run one IVR session against a FastAGI server, without the PBX/AMI server.

    A PJSIP/trunk channel for `caller` is created (answered, priority `priority`), the AGI runs to
    its end and the result tells the AGISTATUS, the variables the script set, the commands seen and
    timings. `publish` receives the AMI events (AGIExecStart/End, VarSet, DTMF...) if given.
    """
    pbx = Pbx(publish=publish or null_sink, clock=clock or RealClock(speed=1000.0), ids=ids)
    ch = pbx.new_channel(
        endpoint="trunk",
        context=context,
        exten=caller.did,
        state=STATE_UP,
        caller_num=caller.number,
        caller_name=caller.name,
        language=caller.language,
        accountcode=caller.accountcode,
        dnid=caller.did,
    )
    ch.priority = priority
    if apps is None:
        ch.hangup_requested = HangupEvent()  # nothing waits on it yet
    request = f"agi://{host}:{port}" + (f"/{script}" if script else "")
    url = AgiUrl(host, port, script, request, tuple(args))
    session = AgiSession(
        pbx=pbx,
        channel=ch,
        url=url,
        caller=caller,
        prompts=prompts,
        apps=apps,
        env_overrides=env_overrides,
        connect_timeout=connect_timeout,
        exit_on_hangup=exit_on_hangup,
        callback_driven=True,
    )
    result = await session.run()
    pbx.hangup(ch, 16)
    return result
