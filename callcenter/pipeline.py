"""EventPipeline: AMI messages -> typed events -> CallTracker + AgentStateTracker -> effects ->
notifiers (bus) and the call log (database).

One consumer task applies every event in arrival order (the trackers' contract); the AMI client
only enqueues. The consumer works through what is queued in batches of at most `_SLICE`
seconds and publishes at the end of each batch: call effects in order, except that a call's
`call.updated` is skipped when a later update or its end follows in the same batch, then the
latest state of each agent and queue. Under a light load a batch is one event; under a burst,
subscribers get the latest state instead of every intermediate one. Writes
to the call log happen on a second task, so a slow database never delays event handling; the
writer gathers the records of up to `save_delay` seconds into one transaction. Both queues are
bounded: a full inbox makes the AMI client stop reading (back-pressure), a full writer queue
drops the record with an error log. Everything fails open: an error is logged and the next item
goes on. After each channel list of a resync, a third task (`sweep`) closes the calls the call
log still has open that are neither live nor followed (left by an earlier run or an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from callcenter.agents.service import AgentEffect, AgentStateTracker
from callcenter.asterisk.ami import ResyncSnapshot
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
from callcenter.db.availability import is_database_down

log = logging.getLogger(__name__)
T = TypeVar("T")

# Besides start and end, these moments are written to the call log too, so that other
# processes reading the database see a call's progress (the live view is in memory).
SAVED_CHANGES = frozenset({"queued", "answered", "transfer"})


class CallLog(Protocol):
    async def save_calls(self, records: Sequence[CallRecord]) -> None: ...


class OpenCallSweeper(Protocol):
    async def close_open_calls(
        self, *, started_before: datetime, ended_at: datetime, keep: Callable[[str], bool]
    ) -> int:
        """Close the open calls started before `started_before` whose uniqueid `keep` refuses
        (ended_at, end_reason "ended_while_disconnected"); returns how many."""


class CallPublisher(Protocol):
    async def publish(self, effects: Iterable[CallEffect]) -> None: ...


class AgentPublisher(Protocol):
    async def publish(self, effects: Iterable[AgentEffect]) -> None: ...


@dataclass(frozen=True, slots=True)
class _Resync:
    snapshot: ResyncSource


@dataclass(frozen=True, slots=True)
class _Sweep:
    channels: Sequence[AmiMessage]  # the channel list
    at: datetime  # when it was applied


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
    sweeps: int = 0  # channel lists swept (or tried)
    swept: int = 0  # open calls in the call log closed after a channel list
    sweep_failures: int = 0


# The consumer yields to the event loop after this much work, so reads and pings go on.
_SLICE = 0.005


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
        save_batch: int = 1000,
        save_delay: float = 0.1,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
        sweeper: OpenCallSweeper | None = None,
        sweep_margin: float = 5.0,
        sweep_timeout: float = 30.0,
    ) -> None:
        """`save_batch`/`save_delay`: the writer waits up to `save_delay` seconds for up to
        `save_batch` records and writes them in one transaction (a call saved several times in
        that window is written once); `drain()` cuts the wait short. A batch that fails because
        the database is down is kept and retried, `retry_min` doubling up to `retry_max` seconds
        apart, so records finished while the database is down reach it later.
        `sweeper`: after each channel list, `sweep()` closes the open calls of the call log
        started over `sweep_margin` seconds before the list was applied that are neither live
        in it nor followed, within `sweep_timeout` seconds."""
        if max_pending < 1 or save_batch < 1:
            raise ValueError("max_pending and save_batch must be at least 1")
        self._calls = calls
        self._agents = agents
        self._call_publisher = call_publisher
        self._agent_publisher = agent_publisher
        self._call_log = call_log
        self._clock = clock
        self._max_pending = max_pending
        self._save_timeout = save_timeout
        self._save_batch = save_batch
        self._save_delay = save_delay
        # Plain deques and futures instead of asyncio.Queue: one put/get pair per AMI event
        # was a large share of the pipeline's CPU.
        self._inbox: deque[_Item] = deque()
        self._inbox_busy = 0  # queued or being handled
        self._inbox_wakeup: asyncio.Future[None] | None = None
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._saves: deque[CallRecord] = deque()
        self._saves_busy = 0  # queued or being written
        self._writing: list[CallRecord] = []  # the batch being written
        self._saves_wakeup: asyncio.Future[None] | None = None
        self._flush_now = False
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._retry_delay = 0.0  # > 0 while the call log is failing
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._now = clock()  # one reading per 32 items: the trackers' `now`
        self._call_fx: list[CallEffect] = []  # this batch's call effects, in order
        self._agent_fx: list[AgentEffect] = []  # this batch's resync/tick agent effects
        self._sweeper = sweeper
        self._sweep_margin = timedelta(seconds=sweep_margin)
        self._sweep_timeout = sweep_timeout
        self._sweep_next: _Sweep | None = None  # the latest channel list not swept yet
        self._sweeping = False
        self._sweep_wakeup: asyncio.Future[None] | None = None
        self._sweep_waiters: list[asyncio.Future[None]] = []
        self.stats = PipelineStats()

    # -- producers -------------------------------------------------------------------------------

    async def feed(self, message: AmiMessage) -> None:
        """Queue one AMI message (the AMI client's on_message). Waits while the inbox is full,
        which makes the AMI client stop reading: back-pressure instead of loss."""
        if len(self._inbox) >= self._max_pending:
            await self._wait_for_space()
        self._push(message)

    async def feed_many(self, messages: list[AmiMessage]) -> None:
        """Queue the messages of one AMI read (the AMI client's on_messages); like `feed`, but
        one call per read. The inbox may go past `max_pending` by one read."""
        if len(self._inbox) >= self._max_pending:
            await self._wait_for_space()
        self._inbox.extend(messages)
        self._inbox_busy += len(messages)
        _resolve(self._inbox_wakeup)

    async def resync(self, snapshot: ResyncSource) -> None:
        """Queue a resync snapshot (the AMI client's on_resync, after each login). The AMI
        client's snapshots come in two stages, each applied where it sits in the stream: the
        channel list, then the queue status (see ResyncSnapshot); any other is applied whole."""
        if len(self._inbox) >= self._max_pending:
            await self._wait_for_space()
        self._push(_Resync(snapshot))

    def tick(self, *, expire: bool = False) -> None:
        """Queue a timer tick: wrap-ups end; with `expire`, ghost calls are ended. A tick that
        does not fit is skipped (the next one does the same work)."""
        if len(self._inbox) < self._max_pending:
            self._push(_Tick(expire))

    def _push(self, item: _Item) -> None:
        self._inbox.append(item)
        self._inbox_busy += 1
        _resolve(self._inbox_wakeup)

    async def _wait_for_space(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self._inbox) >= self._max_pending:
            waiter = loop.create_future()
            self._space_waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._space_waiters.remove(waiter)

    def _release_space(self) -> None:
        waiters = self._space_waiters
        free = self._max_pending - len(self._inbox)
        for waiter in waiters:
            if free <= 0:
                break
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    # -- consumers --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Apply queued items in order until cancelled; publish once per batch of work (at
        most `_SLICE` seconds): see the module docstring."""
        inbox = self._inbox
        popleft = inbox.popleft
        loop = asyncio.get_running_loop()
        clock = time.perf_counter
        while True:
            if not inbox:
                self._wake_idle()
                self._inbox_wakeup = loop.create_future()
                try:
                    await self._inbox_wakeup
                finally:
                    self._inbox_wakeup = None
            deadline = clock() + _SLICE
            done = 0
            self._now = self._clock()
            while inbox:
                item = popleft()
                try:
                    self._apply(item)
                except Exception:
                    self.stats.errors += 1
                    log.exception("event pipeline: failed to handle %s", _describe(item))
                finally:
                    self._inbox_busy -= 1
                if self._space_waiters:
                    self._release_space()
                done += 1
                if not done & 31:
                    self._now = self._clock()
                    if clock() > deadline:
                        await self._publish()
                        await asyncio.sleep(0)
                        deadline = clock() + _SLICE
            await self._publish()

    async def _publish(self) -> None:
        """Publish what the batch produced: call effects in order (a call's `call.updated` is
        skipped when a later one or its end follows in the same batch), then agent/queue state."""
        effects = self._call_fx
        if effects:
            self._call_fx = []
            try:
                await self._call_publisher.publish(_latest_updates(effects))
            except Exception:
                self.stats.errors += 1
                log.exception("event pipeline: failed to publish call effects")
        await self._publish_agents()

    async def _publish_agents(self) -> None:
        effects, self._agent_fx = self._agent_fx, []
        try:
            effects += self._agents.flush(self._now)
        except Exception:
            self._failed("agent tracker", None)
        if effects:
            try:
                await self._agent_publisher.publish(effects)
            except Exception:
                self.stats.errors += 1
                log.exception("event pipeline: failed to publish agent state")

    async def write(self) -> None:
        """Persist call records in order until cancelled. Records that arrive within
        `save_delay` of each other go out as one batch (one transaction, the latest record of
        each call), so a burst costs one round trip."""
        saves = self._saves
        loop = asyncio.get_running_loop()
        while True:
            if not saves or (
                self._save_delay > 0 and len(saves) < self._save_batch and not self._flush_now
            ):
                self._wake_idle()
                wakeup = self._saves_wakeup = loop.create_future()
                timer = None
                if saves:  # linger: let more records join this batch
                    timer = loop.call_later(self._save_delay, _resolve, wakeup)
                try:
                    await wakeup
                finally:
                    self._saves_wakeup = None
                    if timer is not None:
                        timer.cancel()
                if not saves:
                    continue
                if self._save_delay > 0 and timer is None and not self._flush_now:
                    continue  # the first record of a batch: start lingering
            n = min(len(saves), self._save_batch)
            batch = self._writing = [saves.popleft() for _ in range(n)]
            if not saves:
                self._flush_now = False
            try:
                async with asyncio.timeout(self._save_timeout):
                    await self._call_log.save_calls(batch)
            except Exception as exc:
                self.stats.save_failures += n
                kept = await self._save_failed(batch, exc)
                if kept:
                    saves.extendleft(reversed(kept))  # first in line, in their order
                    self._writing = []
                    n -= len(kept)
                    self._saves_busy -= n
                    await self._back_off()
                    continue
            else:
                self.stats.saved += n
                if self._retry_delay:
                    log.warning("call log: the database is back; saving the records kept")
                self._retry_delay = 0.0
            # (not in a `finally`: a batch whose write is cancelled stays for take_unsaved())
            self._writing = []
            self._saves_busy -= n

    async def _save_failed(self, batch: list[CallRecord], exc: Exception) -> list[CallRecord]:
        """After a failed batch: the records to try again. While the database is down (or
        does not answer in time) all are kept; otherwise the batch is saved record by record and
        a record that still fails is dropped (logged): retrying it could never succeed."""
        if is_database_down(exc):
            if not self._retry_delay:
                log.error(
                    "call log: could not save %d call(s) (%r); keeping them and retrying",
                    len(batch),
                    exc,
                )
            return batch
        for i, record in enumerate(batch):  # one by one, to find the refused ones
            try:
                async with asyncio.timeout(self._save_timeout):
                    await self._call_log.save_calls([record])
            except Exception as one:
                if is_database_down(one):
                    log.error("call log: could not save calls (%r); keeping them", one)
                    return batch[i:]
                self.stats.saves_dropped += 1
                log.error("call log: call %s refused, not saved: %r", record.uniqueid, one)
            else:
                self.stats.saved += 1
        return []

    async def _back_off(self) -> None:
        self._retry_delay = min(max(self._retry_delay * 2, self._retry_min), self._retry_max)
        await asyncio.sleep(self._retry_delay)

    async def sweep(self) -> None:
        """Until cancelled: after each channel list, close the calls the call log has open
        that the list shows are gone (see `OpenCallSweeper`). Its own task, so a slow or
        unreachable database never holds the event consumer; a list that comes while one is
        being swept replaces any other still waiting (the latest list says it all)."""
        loop = asyncio.get_running_loop()
        while True:
            job = self._sweep_next
            if job is None:
                self._wake_swept()
                self._sweep_wakeup = loop.create_future()
                try:
                    await self._sweep_wakeup
                finally:
                    self._sweep_wakeup = None
                continue
            self._sweep_next = None
            self._sweeping = True
            try:
                await self._sweep_once(job)
            finally:
                self._sweeping = False
                self.stats.sweeps += 1
                self._wake_swept()

    async def sweep_idle(self) -> None:
        """Wait until the channel lists applied so far are swept (`sweep()` must be running)."""
        loop = asyncio.get_running_loop()
        while self._sweep_next is not None or self._sweeping:
            waiter = loop.create_future()
            self._sweep_waiters.append(waiter)
            await waiter

    async def wait_sweeps(self, count: int) -> None:
        """Wait until `count` channel lists in all have been swept (or tried)."""
        loop = asyncio.get_running_loop()
        while self.stats.sweeps < count:
            waiter = loop.create_future()
            self._sweep_waiters.append(waiter)
            await waiter

    async def _sweep_once(self, job: _Sweep) -> None:
        sweeper = self._sweeper
        if sweeper is None:
            return
        live: set[str] = set()
        for channel in job.channels:
            live.add(channel.get("Uniqueid"))
            live.add(channel.get("Linkedid"))
        live.discard("")
        calls = self._calls

        def keep(uniqueid: str) -> bool:  # asked when the open rows are in: the tracker now
            return uniqueid in live or calls.get(uniqueid) is not None

        try:
            async with asyncio.timeout(self._sweep_timeout):
                closed = await sweeper.close_open_calls(
                    started_before=job.at - self._sweep_margin, ended_at=job.at, keep=keep
                )
        except Exception as exc:
            self.stats.sweep_failures += 1
            if is_database_down(exc):
                log.warning(
                    "call log: open calls not checked against the channel list, database "
                    "unavailable or not answering (%r); the next channel list does it",
                    exc,
                )
            else:
                log.exception("call log: closing the calls gone from the channel list failed")
            return
        self.stats.swept += closed
        if closed:
            log.info(
                "call log: %d call(s) left open (ended while we were stopped or disconnected) "
                "closed: not in Asterisk's channel list",
                closed,
            )

    def _wake_swept(self) -> None:
        if self._sweep_waiters:
            waiters, self._sweep_waiters = self._sweep_waiters, []
            for waiter in waiters:
                _resolve(waiter)

    def _queue_sweep(self, channels: Sequence[AmiMessage], now: datetime) -> None:
        if self._sweeper is not None:
            self._sweep_next = _Sweep(channels, now)
            _resolve(self._sweep_wakeup)

    async def ticker(self, interval: float = 1.0, expire_every: int = 60) -> None:
        """Queue a tick every `interval` seconds (and an expiry pass every `expire_every`)."""
        n = 0
        while True:
            await asyncio.sleep(interval)
            n += 1
            self.tick(expire=n % expire_every == 0)

    async def drain(self) -> None:
        """Wait until everything queued so far is applied and persisted."""
        loop = asyncio.get_running_loop()
        while self._inbox_busy or self._saves_busy:
            if self._saves_busy:
                self._flush_now = True
                _resolve(self._saves_wakeup)
            waiter = loop.create_future()
            self._idle_waiters.append(waiter)
            await waiter

    @property
    def pending(self) -> int:
        return len(self._inbox) + len(self._saves)

    def take_unsaved(self) -> list[CallRecord]:
        """Once `write()` has stopped: the call records it had not saved (the batch it was
        writing, then those queued), oldest first, for the call log to keep. Empties the queue."""
        records = [*self._writing, *self._saves]
        self._writing = []
        self._saves.clear()
        self._saves_busy = 0
        return records

    # -- internals --------------------------------------------------------------------------------

    def _wake_idle(self) -> None:
        """Called when a consumer is about to wait: let drain() look again."""
        if self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                _resolve(waiter)

    def _apply(self, item: _Item) -> None:
        """Run one item through the trackers, queue the records to save and the call effects
        to publish (agent effects are published by the batch: see `_publish_agents`)."""
        now = self._now
        call_fx: Sequence[CallEffect]
        if type(item) is AmiMessage:
            event = decode_event(item)
            if event is None:
                self.stats.ignored += 1
                return
            self.stats.events += 1
            try:
                call_fx = self._calls.apply(event, now)
            except Exception:
                call_fx = self._failed("call tracker", item)
            try:
                self._agents.update(event, now)
            except Exception:
                self._failed("agent tracker", item)
        elif isinstance(item, _Resync):
            snap = item.snapshot
            stage = snap.stage if isinstance(snap, ResyncSnapshot) else None
            calls = self._calls
            if stage == "channels":  # only the channel list: the queue status comes later
                call_fx = self._guard(
                    "call tracker", item, lambda: calls.reconcile_channels(snap.channels, now)
                )
                self._queue_sweep(snap.channels, now)
            else:
                if stage == "queues":  # its channel list was applied at its own stage
                    call_fx = self._guard(
                        "call tracker",
                        item,
                        lambda: calls.reconcile_queue_entries(snap.queue_status, now),
                    )
                else:
                    call_fx = self._guard("call tracker", item, lambda: calls.reconcile(snap, now))
                    self._queue_sweep(snap.channels, now)
                self._agent_fx += self._guard(
                    "agent tracker", item, lambda: self._agents.reconcile(snap, now)
                )
        else:
            assert isinstance(item, _Tick)
            expire = item.expire
            call_fx = self._guard(
                "call tracker", item, lambda: self._calls.expire(now) if expire else []
            )
            self._agent_fx += self._guard("agent tracker", item, lambda: self._agents.tick(now))
        if not call_fx:
            return
        self._call_fx += call_fx
        for effect in call_fx:
            kind = type(effect)
            if (
                kind is CallStarted
                or kind is CallEnded
                or (
                    kind is CallUpdated and effect.change in SAVED_CHANGES  # type: ignore[union-attr]
                )
            ):
                self._save(effect.record)

    def _failed(self, who: str, item: _Item | None) -> list[T]:
        """A tracker bug loses that step only, never the other tracker's."""
        self.stats.errors += 1
        log.exception("%s failed on %s", who, _describe(item))
        return []

    def _guard(self, who: str, item: _Item, step: Callable[[], Sequence[T]]) -> Sequence[T]:
        """Run one tracker step; a tracker bug loses that step only, never the other tracker's."""
        try:
            return step()
        except Exception:
            return self._failed(who, item)

    def _save(self, record: CallRecord) -> None:
        if len(self._saves) >= self._max_pending:
            self.stats.saves_dropped += 1
            log.error("call log writer full: call %s not saved", record.uniqueid)
            return
        self._saves.append(record)
        self._saves_busy += 1
        if len(self._saves) == 1 or len(self._saves) >= self._save_batch:
            _resolve(self._saves_wakeup)


def _latest_updates(effects: list[CallEffect]) -> list[CallEffect]:
    """`effects` without the `CallUpdated`s that a later update or end of the same call in
    the list makes stale (their record is older; the later message carries the whole call)."""
    later: set[str] = set()
    out: list[CallEffect] = []
    for effect in reversed(effects):
        kind = type(effect)
        if kind is CallUpdated or kind is CallEnded:
            uniqueid = effect.record.uniqueid
            if kind is CallUpdated and uniqueid in later:
                continue
            later.add(uniqueid)
        out.append(effect)
    out.reverse()
    return out


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _describe(item: _Item | None) -> str:
    if item is None:
        return "batch end"
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
