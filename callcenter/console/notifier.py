"""The console's runtime: the screen-pop subscriber on the bus and the agent state controller,
built from the app's parts and run for the app's lifetime (`console_runtime`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.bus.base import Bus
from callcenter.console.model import HistoryItem
from callcenter.console.service import (
    AgentStateController,
    CallHistory,
    PopEnricher,
    QueueControl,
    ScreenPopService,
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
) -> AsyncIterator[ScreenPopService]:
    """Start the screen-pop subscriber (returns once it is subscribed: no pop published from
    then on is missed) and put SCREEN_POPS / AGENT_CONTROL into `app`."""

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
    task = asyncio.create_task(service.run(), name="screen-pops")
    try:
        async with asyncio.timeout(10):
            await service.wait_subscribed()
    except TimeoutError:
        log.warning("screen-pops: bus subscription not ready yet; it keeps retrying")
    try:
        yield service
    finally:
        await service.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
