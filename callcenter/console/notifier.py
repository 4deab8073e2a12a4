"""The console's runtime: the screen-pop subscriber on the bus and the agent state controller,
built from the app's parts and run for the app's lifetime (`console_runtime`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.bus.base import Bus, Payload
from callcenter.bus.keys import IVR_STEPS
from callcenter.calls.model import IvrStep
from callcenter.console.model import HistoryItem
from callcenter.console.service import (
    AgentStateController,
    CallHistory,
    PopEnricher,
    QueueControl,
    ScreenPopService,
    steps_stored_messages,
)
from callcenter.customers.repository import CustomerRepository
from callcenter.db.models import DispositionRow

log = logging.getLogger(__name__)


class CustomerTimeline(Protocol):
    """The archive's merged history (callcenter.customers.repository.CustomerHistory fits)."""

    async def timeline(
        self, customer_id: int, *, limit: int = 50, include_calls: bool = True
    ) -> Sequence[Any]: ...


def ticket_history(
    source: Callable[[], CustomerTimeline | None],
) -> Callable[[int, int], Awaitable[Sequence[HistoryItem]]]:
    """Bookings, complaints and callbacks of a customer as pop history lines (calls come from
    the call log by the caller's number)."""

    async def history(customer_id: int, limit: int) -> Sequence[HistoryItem]:
        timeline = source()
        if timeline is None:
            return ()
        entries = await timeline.timeline(customer_id, limit=limit, include_calls=False)
        return [
            HistoryItem(
                kind=str(e.kind),
                at=e.at.isoformat() if e.at is not None else None,
                summary=str(e.summary) + (f" [{e.status}]" if e.status else ""),
                ref=str(e.ref) if e.ref is not None else None,
            )
            for e in entries
        ]

    return history


class StepsRecorder(Protocol):
    """The IVR recorder (callcenter.db.availability.DeferredIvrRecorder fits): `on_written` is
    called with the steps of each successful write."""

    on_written: Callable[[Sequence[IvrStep]], None] | None


class StepsAnnouncer:
    """Announces IVR steps written to the call log on the bus (`IVR_STEPS`, one message per
    call: its uniqueid and digits), for the screen-pops of every process. `written` (the
    recorder's `on_written`) only queues: a task of its own publishes, so the write path never
    waits for the bus, and a bus error is logged and ignored. At most `limit` messages wait
    (beyond that the oldest is dropped: its pops keep the IVR path's digits)."""

    def __init__(self, *, bus: Bus, limit: int = 10_000, close_timeout: float = 2.0) -> None:
        self._bus = bus
        self._limit = limit
        self._close_timeout = close_timeout
        self._queue: deque[Payload] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self.published = 0
        self.dropped = 0

    def written(self, steps: Sequence[IvrStep]) -> None:
        if self._closed:
            return
        for message in steps_stored_messages(steps):
            if len(self._queue) >= self._limit:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("IVR steps announcements: the bus lags, %d dropped", self.dropped)
            self._queue.append(message)
        if self._queue and (self._sender is None or self._sender.done()):
            self._sender = asyncio.get_running_loop().create_task(
                self._send(), name="ivr-steps-announcer"
            )

    async def _send(self) -> None:
        while self._queue:
            message = self._queue.popleft()
            try:
                await self._bus.publish(IVR_STEPS, message)
            except Exception as exc:  # the pops of that call keep the IVR path's digits
                log.warning("IVR steps of %s not announced: %r", message.get("uniqueid"), exc)
            else:
                self.published += 1
            # the in-process bus never yields: its subscribers (the screen-pops, `agents`
            # messages too) read along rather than lose the oldest of a burst to a full buffer
            await asyncio.sleep(0)

    async def idle(self) -> None:
        """Wait until everything queued has been published (tests)."""
        while self._sender is not None and not self._sender.done():
            await asyncio.wait([self._sender])

    async def close(self) -> None:
        """Stop announcing; what is queued gets `close_timeout` seconds to go out."""
        self._closed = True
        sender = self._sender
        if sender is None:
            return
        await asyncio.wait([sender], timeout=self._close_timeout)
        if not sender.done():
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender


SCREEN_POPS = web.AppKey("screen_pops", ScreenPopService)
AGENT_CONTROL = web.AppKey("agent_control", AgentStateController)


@contextlib.asynccontextmanager
async def console_runtime(
    app: web.Application,
    *,
    bus: Bus,
    sessions: async_sessionmaker[AsyncSession],
    calls: CallHistory,
    ami: Callable[[], QueueControl | None],
    clock: Callable[[], datetime],
    default_queues: Sequence[str],
    history: Callable[[], CustomerTimeline | None] = lambda: None,
    lookup_timeout: float = 0.3,
    recorder: StepsRecorder | None = None,
) -> AsyncIterator[ScreenPopService]:
    """Start the screen-pop subscriber (returns once it is subscribed: no pop published from
    then on is missed) and put SCREEN_POPS / AGENT_CONTROL into `app`. The IVR steps
    `recorder` writes are announced on the bus meanwhile (`StepsAnnouncer`)."""

    async def has_disposition(uniqueid: str, user_id: int) -> bool:
        async with sessions() as session:
            found = await session.scalar(
                select(DispositionRow.id)
                .where(DispositionRow.call_uniqueid == uniqueid, DispositionRow.user_id == user_id)
                .limit(1)
            )
            return found is not None

    control = AgentStateController(
        ami=ami, has_disposition=has_disposition, default_queues=default_queues
    )
    service = ScreenPopService(
        bus=bus,
        enricher=PopEnricher(
            customers=CustomerRepository(session_factory=sessions),
            calls=calls,
            tickets=ticket_history(history),
            timeout=lookup_timeout,
        ),
        clock=clock,
        on_pop=control.on_pop,
    )
    app[SCREEN_POPS] = service
    app[AGENT_CONTROL] = control
    announcer = StepsAnnouncer(bus=bus)
    if recorder is not None:
        recorder.on_written = announcer.written
    task = asyncio.create_task(service.run(), name="screen-pops")
    try:
        async with asyncio.timeout(10):
            await service.wait_subscribed()
    except TimeoutError:
        log.warning("screen-pops: bus subscription not ready yet; it keeps retrying")
    try:
        yield service
    finally:
        if recorder is not None and recorder.on_written == announcer.written:
            recorder.on_written = None
        await announcer.close()
        await service.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
