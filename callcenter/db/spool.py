"""A JSON-lines file that mirrors the writes held while the database is down.

`HeldWrites` keeps what it holds in memory; with a `Spool` the same items are also appended to
a file, so that a server stopped (or killed) during an outage writes them at its next start
instead of losing them. The file is an append-only log: the latest line of a key wins when it
is read back, the file is rewritten with only the held items once it has grown to several times
their number, and it is removed when everything held has been written. Writes go through a
thread so that the event loop (and the callers it routes) never waits on the disk; each append
is flushed and fsync'ed. The thread is one per spool and takes the operations in the order they
are asked: one whose caller stopped waiting still finishes before the next one starts. A torn
last line (a crash mid-write) or any unreadable line is logged and skipped; the other lines are
kept.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson

__all__ = ["Spool"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Spool(Generic[T]):
    """Items of one kind (call records, IVR steps) on disk, as JSON lines.

    `decode` builds an item back from the JSON object that orjson wrote for it (dataclasses are
    written field by field, datetimes in ISO 8601)."""

    def __init__(self, path: Path, *, decode: Callable[[Mapping[str, Any]], T]) -> None:
        self.path = path
        self._decode = decode
        # one worker: appends, rewrites and removal run one at a time, in the order asked
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self.lines = 0  # lines in the file (to know when to compact it)

    def load(self) -> list[T]:
        """The items in the file, in file order (the caller keeps the latest of each key)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:  # fails open: the server starts, this file is not read
            log.error("spool %s: cannot be read (%s); its items are not written", self.path, exc)
            return []
        items: list[T] = []
        bad = 0
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(self._decode(orjson.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                bad += 1
                log.error("spool %s: line %d unreadable, skipped: %s", self.path, number, exc)
        self.lines = len(items) + bad
        return items

    async def append(self, items: Sequence[T]) -> None:
        if not items:
            return
        lines = self._encode(items)
        await self._run(self._write, b"".join(lines), len(lines))

    async def rewrite(self, items: Sequence[T]) -> None:
        """Replace the file by exactly `items` (atomically: a crash leaves the old or the new)."""
        lines = self._encode(items)
        await self._run(self._replace, b"".join(lines), len(lines))

    def _encode(self, items: Sequence[T]) -> list[bytes]:
        """One JSON line per item; an item that cannot be written as JSON (an integer beyond
        64 bits from the wire, say) is left out with an error, not the whole write."""
        lines: list[bytes] = []
        for item in items:
            try:
                lines.append(orjson.dumps(item) + b"\n")
            except TypeError as exc:
                log.error("spool %s: an item cannot be written, left out: %s", self.path, exc)
        return lines

    async def remove(self) -> None:
        await self._run(self._unlink)

    async def _run(self, operation: Callable[..., None], *args: object) -> None:
        # queued on the worker now, in call order; a cancelled caller does not stop it
        await asyncio.get_running_loop().run_in_executor(self._disk, operation, *args)

    # on the worker thread (`lines` changes only there, once the disk has done it)

    def _write(self, data: bytes, count: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.lines += count

    def _replace(self, data: bytes, count: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.lines = count

    def _unlink(self) -> None:
        self.path.unlink(missing_ok=True)
        self.lines = 0
