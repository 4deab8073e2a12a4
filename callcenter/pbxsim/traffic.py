"""Simulated call traffic: a steady Poisson stream (`callcenter demo`), or N calls to completion."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from callcenter.pbxsim.callers import CallerFactory, CallerMix

if TYPE_CHECKING:
    from callcenter.pbxsim.emulator import CallSummary, Emulator

log = logging.getLogger(__name__)


@dataclass
class TrafficSummary:
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    agi_status: Counter[str] = field(default_factory=Counter)
    queues: Counter[str] = field(default_factory=Counter)
    agents: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    sim_seconds: float = 0.0

    def add(self, s: CallSummary) -> None:
        self.calls += 1
        self.outcomes[s.outcome] += 1
        self.agi_status[s.agi_status or "-"] += 1
        if s.ivr_queue:
            self.queues[s.ivr_queue] += 1
        if s.agent:
            self.agents[s.agent] += 1

    def __str__(self) -> str:
        return (
            f"{self.calls} calls in {self.sim_seconds:.0f} simulated s; "
            f"outcomes {dict(self.outcomes)}; AGISTATUS {dict(self.agi_status)}; "
            f"queues {dict(self.queues)}; agents {dict(self.agents)}; errors {self.errors}"
        )


async def run_calls(
    emulator: Emulator,
    n: int,
    *,
    seed: int = 0,
    mix: CallerMix | None = None,
    concurrency: int = 50,
    interval: float = 0.0,
) -> TrafficSummary:
    """Run `n` inbound calls to completion (at most `concurrency` at once) and summarise them."""
    factory = CallerFactory(seed=seed, mix=mix, did=emulator.config.dids[0])
    summary = TrafficSummary()
    sem = asyncio.Semaphore(max(1, concurrency))
    t0 = emulator.clock.time()

    async def one() -> None:
        async with sem:
            try:
                summary.add(await emulator.inbound_call(factory.next()))
            except Exception:
                log.exception("pbxsim: simulated call failed")
                summary.errors += 1

    tasks = []
    for _ in range(n):
        tasks.append(asyncio.ensure_future(one()))
        if interval > 0:
            await emulator.clock.sleep(interval)
    await asyncio.gather(*tasks)
    summary.sim_seconds = emulator.clock.time() - t0
    return summary


class TrafficGenerator:
    """Starts calls with exponential inter-arrival times (`rate_per_minute`, simulated)."""

    def __init__(
        self,
        emulator: Emulator,
        *,
        rate_per_minute: float = 2.0,
        seed: int = 0,
        mix: CallerMix | None = None,
        max_concurrent: int = 200,
    ) -> None:
        if rate_per_minute < 0:
            raise ValueError("rate_per_minute must be >= 0")
        self.emulator = emulator
        self.rate = rate_per_minute
        self.rng = random.Random(seed)
        self.factory = CallerFactory(seed=seed + 1, mix=mix, did=emulator.config.dids[0])
        self.max_concurrent = max_concurrent
        self.summary = TrafficSummary()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[CallSummary]] = set()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for t in list(self._running):
            t.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _loop(self) -> None:
        if self.rate <= 0:
            return
        while True:
            await self.emulator.clock.sleep(self.rng.expovariate(self.rate / 60.0))
            if len(self._running) >= self.max_concurrent:
                continue
            task = self.emulator.place_call(self.factory.next())
            self._running.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[CallSummary]) -> None:
        self._running.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("pbxsim: simulated call failed", exc_info=exc)
            self.summary.errors += 1
        else:
            self.summary.add(task.result())
