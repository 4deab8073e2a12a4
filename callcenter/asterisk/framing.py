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
* Cost: each byte is scanned for a terminator once (no re-scan of the pending partial frame),
  and a block of complete frames is decoded and split with C-level calls.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

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


class AmiFramer:
    """Incremental AMI frame parser for one TCP session. Not thread-safe; one per connection."""

    __slots__ = (
        "_buf",
        "_discarding",
        "_expect_banner",
        "_findall",
        "_on_error",
        "banners",
        "bytes_in",
        "decode_errors",
        "errors",
        "frames",
        "last_error",
        "max_frame_bytes",
        "max_lines",
        "version",
    )

    def __init__(
        self,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_lines: int = DEFAULT_MAX_LINES,
        on_error: Callable[[AmiFrameError], None] | None = None,
    ) -> None:
        if max_frame_bytes < 16:
            raise ValueError("max_frame_bytes must be at least 16")
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self.max_frame_bytes = max_frame_bytes
        self.max_lines = max_lines
        self._on_error = on_error
        self._findall = _HEADER.findall
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

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial frame (new TCP session): the next bytes may start with a banner."""
        self._buf.clear()
        self._discarding = False
        self._expect_banner = True

    def feed(self, data: bytes) -> list[AmiMessage]:
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
        crlf = buf.rfind(b"\r\n\r\n", scan_from)
        lf = buf.rfind(b"\n\n", scan_from)
        end = crlf + 4 if crlf >= 0 else 0
        if lf >= 0 and lf + 2 > end:
            end = lf + 2
        if end == 0:
            return self._check_partial()
        block = buf[:end]
        del buf[:end]
        out: list[AmiMessage] = []
        self._parse_block(block, out)
        if len(buf) > self.max_frame_bytes:
            self._start_discard()
        return out

    # -- internals ---------------------------------------------------------------------------

    def _parse_block(self, block: bytearray, out: list[AmiMessage]) -> None:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            text = block.decode("utf-8", "replace")
            self.decode_errors += 1
            log.warning("AMI: invalid UTF-8 in received data, replaced with U+FFFD")
        findall = self._findall
        max_lines = self.max_lines
        big = len(block) > self.max_frame_bytes
        quarter = self.max_frame_bytes // 4
        append = out.append
        n = 0
        for frame in text.split("\r\n\r\n"):
            if not frame:
                continue
            headers = findall(frame)
            if (
                len(headers) == frame.count("\n") + 1
                and len(headers) <= max_lines
                and not (big and len(frame) > quarter and self._too_big(frame))
            ):
                append(AmiMessage(tuple(headers)))
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
