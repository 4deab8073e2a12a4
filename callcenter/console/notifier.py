"""The console's runtime: the screen-pop subscriber on the bus and the agent state controller,
built from the app's parts and run for the app's lifetime (`console_runtime`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcenter.bus.base import Bus
from callcenter.console.service import (
    AgentStateController,
    CallHistory,
    PopEnricher,
    QueueControl,
    ScreenPopService,
)
from callcenter.customers.repository import CustomerRepository

log = logging.getLogger(__name__)

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
    lookup_timeout: float = 0.3,
) -> AsyncIterator[ScreenPopService]:
    """Start the screen-pop subscriber (returns once it is subscribed: no pop published from
    then on is missed) and put SCREEN_POPS / AGENT_CONTROL into `app`."""

    async def has_disposition(uniqueid: str, user_id: int) -> bool:
        async with sessions() as session:
            found = await session.scalar(
                text(
                    "SELECT 1 FROM dispositions WHERE call_uniqueid = :u AND user_id = :id LIMIT 1"
                ),
                {"u": uniqueid, "id": user_id},
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
