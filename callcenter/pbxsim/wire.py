"""AMI wire helpers for the emulator: message encoding, C-escaping, and the request framer.

Output follows Asterisk 20 (main/manager.c): every line is `Name: value` + CRLF, a message ends
with one empty line, and an empty value keeps its space (`AccountCode: `).

`RequestFramer` reproduces `get_input()` + `do_message()` byte for byte: CRLF or bare LF ends a
line, the input buffer holds 1024 bytes (a line that fills it is "too long"), a message holds at
most 128 lines, and a NUL byte ends a line's text (C strings).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Header = tuple[str, str]

# manager.c: inbuf[1025], maxlen = sizeof(inbuf) - 1
INPUT_BUFFER_SIZE = 1024
# manager.h: AST_MAX_MANHEADERS
MAX_HEADER_LINES = 128

_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "?": "\\?",
}


def escape_c(value: str) -> str:
    """`ast_escape_c`: what Asterisk applies to user-supplied values (caller names, VarSet values).

    Escapes \\a \\b \\f \\n \\r \\t \\v, backslash, both quotes and `?`; the text then holds no
    raw line break. Asterisk stops at a NUL byte (C string), and so does this.
    """
    value = value.split("\0", 1)[0]
    if not any(ch in _ESCAPES for ch in value):
        return value
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def to_wire(text: str) -> bytes:
    """UTF-8, with undecodable input bytes (kept as surrogates) written back unchanged."""
    return text.encode("utf-8", "surrogateescape")


def from_wire(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def render_lines(headers: Iterable[Header]) -> str:
    """`Name: value\\r\\n` per header, without the terminating empty line.

    A value holding a line feed would break the framing for every reader, so it is refused: escape
    user data with `escape_c` first, as Asterisk does.
    """
    parts: list[str] = []
    for name, value in headers:
        if "\n" in name or "\n" in value or "\r" in name:
            raise ValueError(f"AMI header {name!r} holds a line break; escape it with escape_c()")
        parts.append(f"{name}: {value}\r\n")
    return "".join(parts)


def encode_message(headers: Iterable[Header]) -> bytes:
    """One complete AMI message: the header lines, then the empty line."""
    return to_wire(render_lines(headers) + "\r\n")


def action_id_header(action_id: str) -> tuple[Header, ...]:
    """`(("ActionID", id),)` or `()`: Asterisk writes the line only for a non-empty ActionID."""
    return (("ActionID", action_id),) if action_id else ()


def format_timeval(ns: int) -> str:
    """`%ld.%06lu` of a struct timeval, from nanoseconds since the epoch (Ping, Timestamp)."""
    sec, rest = divmod(ns, 1_000_000_000)
    return f"{sec}.{rest // 1000:06d}"


_TRUE = frozenset({"yes", "true", "y", "t", "1", "on"})
_FALSE = frozenset({"no", "false", "n", "f", "0", "off"})


def ast_true(value: str) -> bool:
    """`ast_true`: yes/true/y/t/1/on, any case (header values, channel variables)."""
    return value.lower() in _TRUE


def ast_false(value: str) -> bool:
    """`ast_false`: no/false/n/f/0/off, any case; an empty value is neither true nor false."""
    return value.lower() in _FALSE


def parse_header_line(line: str) -> Header | None:
    """Split `Name: value` the way `astman_get_header` reads it, or None when there is no colon.

    The value starts after the colon with every byte below 33 skipped (`ast_skip_blanks`);
    trailing blanks are kept.
    """
    name, sep, value = line.partition(":")
    if not sep:
        return None
    i = 0
    while i < len(value) and ord(value[i]) < 33:
        i += 1
    return name, value[i:]


RequestKind = Literal["ok", "too_many_lines", "line_too_long"]


@dataclass(frozen=True, slots=True)
class RawRequest:
    """One message as cut by the framer. `headers` holds the lines that have a colon."""

    kind: RequestKind
    headers: tuple[Header, ...]


class RequestFramer:
    """Cuts client bytes into AMI requests exactly as manager.c does. Pure: no I/O.

    Memory: the pending bytes are what the caller fed and not yet consumed; the session stops
    reading from the socket while `wants_input` is False, so this stays around one read.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._lines: list[Header] = []
        self._line_count = 0
        self._hdr_loss = False
        # manager.c keeps this flag on the session: it survives a "too many lines" reply.
        self._line_too_long = False

    @property
    def wants_input(self) -> bool:
        return len(self._buf) < INPUT_BUFFER_SIZE

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def _next_line(self) -> bytes | None:
        while True:
            nl = self._buf.find(b"\n", 0, INPUT_BUFFER_SIZE)
            if nl >= 0:
                end = nl - 1 if nl > 0 and self._buf[nl - 1] == 0x0D else nl
                line = bytes(self._buf[:end])
                del self._buf[: nl + 1]
                return line.split(b"\0", 1)[0]
            if len(self._buf) < INPUT_BUFFER_SIZE:
                return None
            # Buffer full without a line end: discard it but keep its last byte, which may be
            # the CR of a CRLF (so a 1023-byte line + CRLF also counts as too long).
            del self._buf[: INPUT_BUFFER_SIZE - 1]
            self._line_too_long = True

    def next_request(self) -> RawRequest | None:
        """The next complete request, or None until more bytes are fed."""
        while True:
            line = self._next_line()
            if line is None:
                return None
            if line:
                if self._line_count < MAX_HEADER_LINES:
                    self._line_count += 1
                    header = parse_header_line(from_wire(line))
                    if header is not None:
                        self._lines.append(header)
                else:
                    self._hdr_loss = True
                continue
            headers = tuple(self._lines)
            hdr_loss = self._hdr_loss
            self._lines = []
            self._line_count = 0
            self._hdr_loss = False
            if hdr_loss:
                return RawRequest("too_many_lines", headers)
            if self._line_too_long:
                self._line_too_long = False
                return RawRequest("line_too_long", headers)
            return RawRequest("ok", headers)
