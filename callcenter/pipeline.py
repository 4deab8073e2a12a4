"""EventPipeline: AMI messages -> typed events -> CallTracker + AgentStateTracker -> effects ->
notifiers (bus) and the call log (database).

One consumer task applies every event in arrival order (the trackers' contract); the AMI client
only enqueues. Writes to the call log happen on a second task, so a slow database never delays
event handling. Both queues are bounded: a full inbox makes the AMI client stop reading
(back-pressure), a full writer queue drops the record with an error log. Everything fails
open: an error is logged and the next item goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from callcenter.agents.service import AgentEffect, AgentStateTracker
from callcenter.asterisk.events import ResyncSource, decode_event
from callcenter.asterisk.message import AmiMessage
from callcenter.calls.model import CallRecord
from callcenter.calls.service import (
    CallEffect,
    CallEnded,
    CallStarted,
    CallTracker,
    CallUpdated,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Besides start and end, these moments are written to the call log too, so that other
# processes reading the database see a call's progress (the live view is in memory).
SAVED_CHANGES = frozenset({"queued", "answered", "transfer"})


class CallLog(Protocol):
    async def save_call(self, record: CallRecord) -> None: ...


class CallPublisher(Protocol):
    async def publish(self, effects: Iterable[CallEffect]) -> None: ...


class AgentPublisher(Protocol):
    async def publish(self, effects: Iterable[AgentEffect]) -> None: ...


@dataclass(frozen=True, slots=True)
class _Resync:
    snapshot: ResyncSource


@dataclass(frozen=True, slots=True)
class _Tick:
    expire: bool


_Item = AmiMessage | _Resync | _Tick


@dataclass(slots=True)
class PipelineStats:
    events: int = 0  # messages that decoded to an event we track
    ignored: int = 0  # messages outside the event table
    errors: int = 0  # items whose handling raised
    saved: int = 0
    save_failures: int = 0
    saves_dropped: int = 0


class EventPipeline:
    def __init__(
        self,
        *,
        calls: CallTracker,
        agents: AgentStateTracker,
        call_publisher: CallPublisher,
        agent_publisher: AgentPublisher,
        call_log: CallLog,
        clock: Callable[[], datetime],
        max_pending: int = 50_000,
        save_timeout: float = 10.0,
    ) -> None:
        self._calls = calls
        self._agents = agents
        self._call_publisher = call_publisher
        self._agent_publisher = agent_publisher
        self._call_log = call_log
        self._clock = clock
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_pending)
        self._saves: asyncio.Queue[CallRecord] = asyncio.Queue(maxsize=max_pending)
        self._save_timeout = save_timeout
        self.stats = PipelineStats()

    # -- producers -------------------------------------------------------------------------------

    async def feed(self, message: AmiMessage) -> None:
        """Queue one AMI message (the AMI client's on_message). Waits while the inbox is full,
        which makes the AMI client stop reading: back-pressure instead of loss."""
        await self._inbox.put(message)

    async def resync(self, snapshot: ResyncSource) -> None:
        """Queue a resync snapshot (the AMI client's on_resync, after each login)."""
        await self._inbox.put(_Resync(snapshot))

    def tick(self, *, expire: bool = False) -> None:
        """Queue a timer tick: wrap-ups end; with `expire`, ghost calls are ended. A tick that
        does not fit is skipped (the next one does the same work)."""
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(_Tick(expire))

    # -- consumers --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Apply queued items in order until cancelled."""
        while True:
            item = await self._inbox.get()
            try:
                await self._handle(item)
            except Exception:
                self.stats.errors += 1
                log.exception("event pipeline: failed to handle %s", _describe(item))
            finally:
                self._inbox.task_done()

    async def write(self) -> None:
        """Persist call records in order until cancelled."""
        while True:
            record = await self._saves.get()
            try:
                async with asyncio.timeout(self._save_timeout):
                    await self._call_log.save_call(record)
                self.stats.saved += 1
            except Exception as exc:
                self.stats.save_failures += 1
                log.error("call log: could not save call %s: %r", record.uniqueid, exc)
            finally:
                self._saves.task_done()

    async def ticker(self, interval: float = 1.0, expire_every: int = 60) -> None:
        """Queue a tick every `interval` seconds (and an expiry pass every `expire_every`)."""
        n = 0
        while True:
            await asyncio.sleep(interval)
            n += 1
            self.tick(expire=n % expire_every == 0)

    async def drain(self) -> None:
        """Wait until everything queued so far is applied and persisted."""
        await self._inbox.join()
        await self._saves.join()

    @property
    def pending(self) -> int:
        return self._inbox.qsize() + self._saves.qsize()

    # -- internals --------------------------------------------------------------------------------

    async def _handle(self, item: _Item) -> None:
        now = self._clock()
        if isinstance(item, AmiMessage):
            event = decode_event(item)
            if event is None:
                self.stats.ignored += 1
                return
            self.stats.events += 1
            calls, agents = self._calls, self._agents
            call_fx = self._guard("call tracker", item, lambda: calls.apply(event, now))
            agent_fx = self._guard("agent tracker", item, lambda: agents.apply(event, now))
        elif isinstance(item, _Resync):
            snap = item.snapshot
            call_fx = self._guard("call tracker", item, lambda: self._calls.reconcile(snap, now))
            agent_fx = self._guard("agent tracker", item, lambda: self._agents.reconcile(snap, now))
        else:
            expire = item.expire
            call_fx = self._guard(
                "call tracker", item, lambda: self._calls.expire(now) if expire else []
            )
            agent_fx = self._guard("agent tracker", item, lambda: self._agents.tick(now))
        for effect in call_fx:
            if isinstance(effect, CallStarted | CallEnded) or (
                isinstance(effect, CallUpdated) and effect.change in SAVED_CHANGES
            ):
                self._save(effect.record)
        if call_fx:
            await self._call_publisher.publish(call_fx)
        if agent_fx:
            await self._agent_publisher.publish(agent_fx)

    def _guard(self, who: str, item: _Item, step: Callable[[], Sequence[T]]) -> Sequence[T]:
        """Run one tracker step; a tracker bug loses that step only, never the other tracker's."""
        try:
            return step()
        except Exception:
            self.stats.errors += 1
            log.exception("%s failed on %s", who, _describe(item))
            return []

    def _save(self, record: CallRecord) -> None:
        try:
            self._saves.put_nowait(record)
        except asyncio.QueueFull:
            self.stats.saves_dropped += 1
            log.error("call log writer full: call %s not saved", record.uniqueid)


def _describe(item: _Item) -> str:
    if isinstance(item, AmiMessage):
        return f"AMI {item.kind} {item.name!r}"
    return type(item).__name__.lstrip("_").lower()


async def cancel_and_wait(*tasks: asyncio.Task[None]) -> None:
    """Cancel background tasks and wait for them to finish."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
