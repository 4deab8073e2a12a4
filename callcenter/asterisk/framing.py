"""Byte-level AMI framer: TCP chunks in, whole `AmiMessage`s out.

Contract (PROTOCOL.md §1.1-1.3):

* Frames are found on BYTES: a frame ends at an empty line (``\\r\\n\\r\\n``; a bare-LF stream,
  ``\\n\\n``, is accepted too). Each block of complete frames is decoded as UTF-8 only once it is
  whole, so a multi-byte character split across TCP reads survives (panoramisk 1.4 decodes every
  read on its own and drops such bytes). Invalid UTF-8 becomes U+FFFD and is counted.
* Headers split on the first ``:``; one following space is removed, further spaces are kept
  (``Output:    Members:`` keeps its indentation). ``Key:value`` and ``Key: `` are accepted.
  Repeated headers are kept, in wire order.
* The greeting banner ``Asterisk Call Manager/<version>`` is one line with no empty line after
  it; it is consumed and its version exposed as `AmiFramer.version`.
* Bounded memory: a frame over ``max_frame_bytes`` or with more than ``max_lines`` lines, or a
  line without a colon, is skipped, counted in `AmiFramer.errors` and logged; parsing resumes at
  the next empty line. A never-ending line never holds more than ``max_frame_bytes`` in memory.
* Optional event filter (`events=`): an event frame whose name is not wanted and that carries
  no ``ActionID`` (i.e. is not part of a reply) never becomes a message; it is counted in
  `AmiFramer.skipped`. Asterisk sends every event class a user may read unless
  manager.conf filters it; most of them (Dial*, Bridge*, Cdr, DTMF*...) are noise to us.
  Likewise `variables=`: a ``VarSet`` event of a variable it refuses is dropped (Asterisk
  reports every variable any channel sets: BRIDGEPEER, PLAYBACKSTATUS, AGISTATUS...).
* Cost: each byte is scanned for a terminator once (no re-scan of the pending partial frame:
  panoramisk's O(n²) bug 16); a block of complete frames is decoded and split with C-level calls.
  Header lines are looked up whole in a bounded cache of parsed (name, value) pairs, since
  most repeat verbatim; only new lines are split in Python. When most lines are new, blocks go
  through one regex instead for a while. Repeated pairs are shared between messages.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Final

from callcenter.asterisk.errors import AmiFrameError
from callcenter.asterisk.message import AmiMessage

log = logging.getLogger(__name__)

BANNER_PREFIX = "Asterisk Call Manager/"
_BANNER_PREFIX_B = BANNER_PREFIX.encode("ascii")

DEFAULT_MAX_FRAME_BYTES = 64 * 1024
DEFAULT_MAX_LINES = 4096

# One header line: name up to the first colon, one optional space, value up to the line end.
# Possessive quantifiers: a long line without a colon must fail in linear time.
_HEADER = re.compile(r"^([^:\r\n]++):[ ]?([^\r\n]*+)\r?$", re.MULTILINE)


_LINE_CACHE_MAX = 4096  # distinct lines remembered (then forgotten all at once)
_LINE_CACHE_LINE = 160  # longer lines are parsed but not remembered: bounds the cache's memory
_WINDOW_LINES = 4096  # lines per look at the cache's miss rate
_REGEX_BYTES = 256 * 1024  # parsed by regex after a window where over a third of lines were new
_SEP: Final = ("", "")  # stands for the empty line between frames
# Headers whose lines never repeat (timestampevents=yes stamps every event): remembering them
# would only push the repeating lines out of the cache.
_UNIQUE_LINES = frozenset(("Timestamp",))


class _LineCache(dict[str, tuple[str, str]]):
    """Header line -> (name, value). Malformed lines are counted in `bad`, never stored."""

    bad = 0
    misses = 0

    def __missing__(self, line: str) -> tuple[str, str]:
        self.misses += 1
        if line[:11] == "Timestamp: " and "\r" not in line and "\n" not in line:
            return ("Timestamp", line[11:])  # new on every event: never remembered
        name, sep, value = line.partition(":")
        if not sep or not name or "\n" in line or "\r" in line:
            if not line:
                self[line] = _SEP
                return _SEP
            self.bad += 1
            return _SEP
        pair = (name, value[1:] if value[:1] == " " else value)
        if len(line) <= _LINE_CACHE_LINE and name not in _UNIQUE_LINES:
            self[line] = pair
        return pair


_VARSET = "Event: VarSet"
_VARIABLE_LINE = "\r\nVariable:"


class _EventDrop:
    """Which event frames the framer drops unparsed (see `AmiFramer(events=, variables=)`)."""

    __slots__ = ("keep_variable", "passed", "wanted")

    def __init__(
        self, wanted: frozenset[str] | None, keep_variable: Callable[[str], bool] | None
    ) -> None:
        """`wanted` None: every event name; `keep_variable` None: every VarSet."""
        self.wanted = None if wanted is None else frozenset(f"Event: {name}" for name in wanted)
        self.keep_variable = keep_variable
        # first lines of frames never dropped (without asking `drops`)
        self.passed = (self.wanted or frozenset()) - ({_VARSET} if keep_variable else set())

    def drops_frame(self, first: str, frame: str) -> bool:
        """Whether `frame` (CRLF lines, `first` its first line) is an event to drop; never a
        reply's event, and never a frame that holds LF framing (the careful path's)."""
        wanted = self.wanted
        if wanted is None or first in wanted:
            if first != _VARSET or self.keep_variable is None:
                return False
            i = frame.find(_VARIABLE_LINE)
            variable = ""
            if i >= 0:
                i += len(_VARIABLE_LINE)
                j = frame.find("\r\n", i)
                variable = frame[i:j] if j >= 0 else frame[i:]
                if variable[:1] == " ":
                    variable = variable[1:]
            if self.keep_variable(variable):
                return False
        elif first[:7] != "Event: ":
            return False
        return "\r\nActionID:" not in frame and "\n\n" not in frame and "\n" not in first

    def drops_message(self, msg: AmiMessage) -> bool:
        headers = msg.headers
        if not headers or headers[0][0] != "Event":
            return False
        first = f"Event: {headers[0][1]}"
        if self.wanted is None or first in self.wanted:
            if first != _VARSET or self.keep_variable is None:
                return False
            variable = next((value for name, value in headers if name == "Variable"), "")
            if self.keep_variable(variable):
                return False
        return not any(name == "ActionID" for name, _ in headers)


class AmiFramer:
    """Incremental AMI frame parser for one TCP session. Not thread-safe; one per connection."""

    __slots__ = (
        "_buf",
        "_discarding",
        "_drop",
        "_expect_banner",
        "_findall",
        "_lines",
        "_on_error",
        "_regex_bytes",
        "_window_lines",
        "banners",
        "bytes_in",
        "decode_errors",
        "errors",
        "frames",
        "last_error",
        "max_frame_bytes",
        "max_lines",
        "skipped",
        "version",
    )

    def __init__(
        self,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_lines: int = DEFAULT_MAX_LINES,
        on_error: Callable[[AmiFrameError], None] | None = None,
        events: Iterable[str] | None = None,
        variables: Callable[[str], bool] | None = None,
    ) -> None:
        """`events`: the event names to deliver (None: all); `variables`: which VarSet events
        to deliver, by variable name as sent (None: all). Replies and the events of a reply
        (those with an ActionID) are always delivered."""
        if max_frame_bytes < 16:
            raise ValueError("max_frame_bytes must be at least 16")
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self.max_frame_bytes = max_frame_bytes
        self.max_lines = max_lines
        self._on_error = on_error
        self._findall = _HEADER.findall
        self._lines = _LineCache()
        self._regex_bytes = 0
        self._window_lines = 0
        self._buf = bytearray()
        self._discarding = False
        self._expect_banner = True
        self.version: str | None = None
        self.frames = 0
        self.errors = 0
        self.decode_errors = 0
        self.banners = 0
        self.bytes_in = 0
        self.last_error = ""
        self.skipped = 0
        self._drop: _EventDrop | None = None
        if events is not None or variables is not None:
            wanted = None if events is None else frozenset(events)
            self._drop = _EventDrop(wanted, variables)

    @property
    def cached_lines(self) -> int:
        """Distinct header lines currently remembered (bounded)."""
        return len(self._lines)

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial frame (new TCP session): the next bytes may start with a banner."""
        self._buf.clear()
        self._discarding = False
        self._expect_banner = True

    def feed(self, data: bytes | bytearray | memoryview) -> list[AmiMessage]:
        """Take the next bytes of the stream; return the messages completed by them."""
        buf = self._buf
        self.bytes_in += len(data)
        scan_from = len(buf) - 3 if len(buf) > 3 else 0
        buf += data
        if self._discarding:
            if not self._skip_to_terminator(scan_from):
                return []
            scan_from = 0
        if self._expect_banner and not self._take_banner():
            return self._check_partial()
        end = buf.rfind(b"\r\n\r\n", scan_from) + 4
        if end == 3:
            # Bare-LF framing (lenient). Checked only without a CRLF end: a CRLF block that
            # holds LF frames too is split by the careful path.
            end = buf.rfind(b"\n\n", scan_from) + 2
            if end == 1:
                return self._check_partial()
        block = buf[:end]
        del buf[:end]
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            text = block.decode("utf-8", "replace")
            self.decode_errors += 1
            log.warning("AMI: invalid UTF-8 in received data, replaced with U+FFFD")
        out: list[AmiMessage] = []
        self._parse_block(text, end, out)
        if len(buf) > self.max_frame_bytes:
            self._start_discard()
        return out

    # -- internals ---------------------------------------------------------------------------

    def _parse_block(self, text: str, nbytes: int, out: list[AmiMessage]) -> None:
        if (
            nbytes > self.max_frame_bytes
            and max(map(len, text.split("\r\n\r\n"))) > self.max_frame_bytes // 4
        ):  # a char is at most 4 bytes
            self._parse_frames(text, True, out)
            return
        # Fast path: most header lines repeat verbatim (Privilege, states, the Uniqueid of a
        # call...), so whole lines are looked up in a bounded cache of parsed pairs; only new
        # lines are split in Python. The same pair objects are shared by many messages.
        if self._regex_bytes > 0:
            # recent traffic was mostly new lines: the regex path is cheaper for those
            self._regex_bytes -= nbytes
            self._parse_frames(text, False, out)
            return
        cache = self._lines
        if len(cache) > _LINE_CACHE_MAX:
            cache.clear()
        bad, skipped = cache.bad, self.skipped
        get = cache.__getitem__
        drop = self._drop
        passed = drop.passed if drop is not None else frozenset()
        max_lines = self.max_lines
        msgs: list[AmiMessage] = []
        append = msgs.append
        looked = n = 0
        careful = False
        # Frames are cut first, so that a dropped frame is never split into lines.
        for frame in text.split("\r\n\r\n"):
            while frame[:2] == "\r\n":  # stray empty lines between frames
                frame = frame[2:]
            if not frame:
                continue
            if drop is not None:
                nl = frame.find("\r\n")
                first = frame[:nl] if nl >= 0 else frame
                if first not in passed and drop.drops_frame(first, frame):
                    self.skipped += 1
                    continue
            lines = frame.split("\r\n")
            if len(lines) > max_lines:
                careful = True  # an oversized frame: the careful path, for the whole block
                break
            append(AmiMessage(tuple(map(get, lines))))
            looked += len(lines)
            n += 1
        self._window_lines += looked
        if self._window_lines >= _WINDOW_LINES:
            if cache.misses * 3 > self._window_lines:
                self._regex_bytes = _REGEX_BYTES
            self._window_lines = cache.misses = 0
        if cache.bad != bad or careful:
            self.skipped = skipped
            self._parse_frames(text, False, out)  # a malformed line or frame: careful path
            return
        out += msgs
        self.frames += n

    def _parse_frames(self, text: str, big: bool, out: list[AmiMessage]) -> None:
        if self._drop is None:
            self._parse_frames_all(text, big, out)
            return
        msgs: list[AmiMessage] = []
        self._parse_frames_all(text, big, msgs)
        kept = [m for m in msgs if not self._drop.drops_message(m)]
        self.skipped += len(msgs) - len(kept)
        self.frames -= len(msgs) - len(kept)
        out += kept

    def _parse_frames_all(self, text: str, big: bool, out: list[AmiMessage]) -> None:
        frames = text.split("\r\n\r\n")
        findall = self._findall
        parsed = [findall(f) for f in frames]
        # One match per well-formed line and never more than one per line, so equal totals
        # mean every frame is clean (CRLF lines, each "Name: value").
        lines = text.count("\n") - 2 * (len(frames) - 1) + len(frames) - frames.count("")
        if sum(map(len, parsed)) == lines and max(map(len, parsed)) <= self.max_lines and not big:
            msgs = [AmiMessage(tuple(h)) for h in parsed if h]
            out += msgs
            self.frames += len(msgs)
            return
        n = 0
        quarter = self.max_frame_bytes // 4
        for frame, headers in zip(frames, parsed, strict=True):
            if not frame:
                continue
            if (
                len(headers) == frame.count("\n") + 1
                and len(headers) <= self.max_lines
                and not (len(frame) > quarter and self._too_big(frame))
            ):
                out.append(AmiMessage(tuple(headers)))
                n += 1
            else:
                n += self._parse_slow(frame, out)
        self.frames += n

    def _too_big(self, frame: str) -> bool:
        return len(frame.encode("utf-8")) > self.max_frame_bytes

    def _parse_slow(self, frame: str, out: list[AmiMessage]) -> int:
        """Careful path: LF-only framing, stray empty lines, banners, malformed frames."""
        n = 0
        for part in frame.replace("\r\n", "\n").split("\n\n"):
            part = part.strip("\n")
            if not part:
                continue
            lines = part.split("\n")
            if lines[0].startswith(BANNER_PREFIX):
                self._set_version(lines[0][len(BANNER_PREFIX) :])
                del lines[0]
                if not lines:
                    continue
            if len(lines) > self.max_lines:
                self._error(f"frame has {len(lines)} lines (max {self.max_lines}); skipped")
                continue
            if self._too_big(part):
                self._error(f"frame larger than {self.max_frame_bytes} bytes; skipped")
                continue
            headers: list[tuple[str, str]] = []
            for line in lines:
                name, sep, value = line.partition(":")
                if not sep or not name:
                    self._error(f"line without 'Name:' in frame: {line[:60]!r}; frame skipped")
                    break
                headers.append((name, value[1:] if value[:1] == " " else value))
            else:
                out.append(AmiMessage(tuple(headers)))
                n += 1
        return n

    def _take_banner(self) -> bool:
        """At session start: consume the banner line if present. False = need more bytes."""
        buf = self._buf
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) < len(_BANNER_PREFIX_B) and _BANNER_PREFIX_B.startswith(buf):
                return False
            if buf.startswith(_BANNER_PREFIX_B):
                return False
            self._expect_banner = False
            return True
        self._expect_banner = False
        if buf.startswith(_BANNER_PREFIX_B):
            line = bytes(buf[len(_BANNER_PREFIX_B) : nl])
            del buf[: nl + 1]
            self._set_version(line.decode("utf-8", "replace"))
        return True

    def _set_version(self, raw: str) -> None:
        self.version = raw.strip()
        self.banners += 1

    def _check_partial(self) -> list[AmiMessage]:
        if len(self._buf) > self.max_frame_bytes:
            self._start_discard()
        return []

    def _start_discard(self) -> None:
        self._error(
            f"no end of frame within {self.max_frame_bytes} bytes; "
            "discarding until the next empty line"
        )
        del self._buf[:-3]
        self._discarding = True
        self._expect_banner = False

    def _skip_to_terminator(self, scan_from: int) -> bool:
        """Discard mode: drop bytes up to the first empty line. True once it was found."""
        buf = self._buf
        crlf = buf.find(b"\r\n\r\n", scan_from)
        lf = buf.find(b"\n\n", scan_from)
        ends = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
        if not ends:
            del buf[:-3]
            return False
        del buf[: min(ends)]
        self._discarding = False
        return True

    def _error(self, text: str) -> None:
        self.errors += 1
        self.last_error = text
        log.warning("AMI frame error #%d: %s", self.errors, text)
        if self._on_error is not None:
            self._on_error(AmiFrameError(text))
