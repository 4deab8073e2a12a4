"""Bounded waits that all share one delay, at a fraction of ``asyncio.timeout``'s cost.

Waits bounded by the same delay reach their deadlines in the order they started, so they wait
in a FIFO and one loop timer, armed for the oldest, serves them all: starting and ending a
bounded wait costs a deque append and a flag. ``asyncio.timeout`` costs, per wait, a timer
handle pushed into the loop's heap, cancelled and popped again (each heap step a Python
comparison on asyncio's loop) and three running-loop lookups (each a ``getpid()`` call).
The FastAGI runner bounds two waits on every call this way.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

_Cancelled = asyncio.CancelledError
_RESOLUTION = 0.001
_ACTIVE = 0
_EXPIRED = 1
_DONE = 2


class FixedTimeout:
    """``async with timeouts.bound(task):`` behaves as ``async with asyncio.timeout(delay):``
    run by ``task``: at the deadline the task is cancelled and the block raises
    ``TimeoutError``; a cancellation from elsewhere stays a ``CancelledError``."""

    __slots__ = ("_delay", "_loop", "_queue", "_timer")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Bounded] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def delay(self) -> float:
        """Fixed for good: the waits' order in the FIFO is their deadlines' order."""
        return self._delay

    def bound(self, task: asyncio.Task[object]) -> _Bounded:
        """The bounded block for ``task`` (the task running the ``async with``)."""
        return _Bounded(self, task)

    @property
    def pending(self) -> int:
        """Waits still queued (ended ones leave the queue when the timer passes them)."""
        return len(self._queue)

    def _push(self, entry: _Bounded) -> None:
        loop = entry.task.get_loop()
        if loop is not self._loop:
            self._switch_to(loop)
        entry.deadline = loop.time() + self._delay
        self._queue.append(entry)
        if self._timer is None:
            self._timer = loop.call_at(entry.deadline, self._expire)

    def _switch_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """First use, or a new loop once the old one has no wait left (sequential
        ``asyncio.run`` calls); one timer cannot serve two running loops."""
        old = self._loop
        if old is not None and not old.is_closed():
            if any(entry.state == _ACTIVE for entry in self._queue):
                raise RuntimeError("a FixedTimeout is used by one event loop at a time")
            if self._timer is not None:
                self._timer.cancel()
        self._loop = loop
        self._queue.clear()
        self._timer = None

    def _expire(self) -> None:
        loop = self._loop
        assert loop is not None
        # a timer may run up to the clock's resolution early (uvloop rounds to milliseconds)
        now = loop.time() + _RESOLUTION
        queue = self._queue
        while queue:
            entry = queue[0]
            if entry.state == _DONE:
                queue.popleft()
                continue
            if entry.deadline > now:
                break
            queue.popleft()
            entry.state = _EXPIRED
            entry.task.cancel()
        self._timer = loop.call_at(queue[0].deadline, self._expire) if queue else None


class _Bounded:
    __slots__ = ("_cancelling", "_owner", "deadline", "state", "task")

    def __init__(self, owner: FixedTimeout, task: asyncio.Task[object]) -> None:
        self._owner = owner
        self.task = task
        self.deadline = 0.0
        self.state = _ACTIVE
        self._cancelling = 0

    async def __aenter__(self) -> _Bounded:
        self._cancelling = self.task.cancelling()
        self._owner._push(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        expired = self.state == _EXPIRED
        self.state = _DONE
        # uncancel() first, always: the timeout's own request is withdrawn either way
        if expired and self.task.uncancel() <= self._cancelling and exc_type is _Cancelled:
            raise TimeoutError from exc
        return None
