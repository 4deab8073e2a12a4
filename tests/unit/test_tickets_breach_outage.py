"""The breach checker keeps running through a database outage, with one warning per round."""

from __future__ import annotations

import asyncio
import logging

import pytest

from callcenter.bus.memory import MemoryBus
from callcenter.db.availability import DatabaseUnavailable
from callcenter.tickets.notifier import BreachChecker, TicketNotifier


class DownThenUp:
    def __init__(self) -> None:
        self.calls = 0
        self.recovered = asyncio.Event()

    async def record_breaches(self) -> list[object]:
        self.calls += 1
        if self.calls <= 2:
            raise DatabaseUnavailable("database is down")
        self.recovered.set()
        return []


async def test_an_outage_is_one_warning_per_round(caplog: pytest.LogCaptureFixture) -> None:
    source = DownThenUp()
    checker = BreachChecker(
        source=source,  # type: ignore[arg-type]
        notifier=TicketNotifier(bus=MemoryBus()),
        interval=0.001,
    )
    task = asyncio.create_task(checker.run())
    with caplog.at_level(logging.WARNING):
        async with asyncio.timeout(5):
            await source.recovered.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    outage = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(outage) == 2
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in outage)
