"""Fakes and the AgiServer + IvrRunner set-up shared by the IVR integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from callcenter.asterisk.agi import AgiServer
from callcenter.calls.model import CallbackRequest, IvrStep
from callcenter.ivr.model import CustomerInfo, CustomerLookup, IvrRecorder
from callcenter.ivr.runner import IvrRunner
from callcenter.ivr.service import FlowRegistry

ROOT = Path(__file__).resolve().parents[2]
OPEN_NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # Wednesday 10:00 in Shanghai


class Customers:
    def __init__(self, mode: str = "ok", customer: CustomerInfo | None = None) -> None:
        self.mode = mode
        self.customer = customer
        self.calls: list[str] = []

    async def lookup(self, number: str) -> CustomerInfo | None:
        self.calls.append(number)
        if self.mode == "raise":
            raise RuntimeError("database is down")
        if self.mode == "hang":
            await asyncio.Event().wait()
        return self.customer


@dataclass
class Recorder:
    fail: bool = False
    steps: list[IvrStep] = field(default_factory=list)
    callbacks: list[CallbackRequest] = field(default_factory=list)

    async def record_steps(self, steps: Sequence[IvrStep]) -> None:
        if self.fail:
            raise RuntimeError("disk full")
        self.steps.extend(steps)

    async def record_callback(self, req: CallbackRequest) -> None:
        if self.fail:
            raise RuntimeError("disk full")
        self.callbacks.append(req)


@asynccontextmanager
async def hotline(
    *,
    customers: CustomerLookup | None = None,
    recorder: IvrRecorder | None = None,
    now: datetime = OPEN_NOW,
    lookup_timeout: float = 0.05,
    shutdown_grace: float | None = None,
) -> AsyncIterator[tuple[AgiServer, IvrRunner]]:
    flows = FlowRegistry(directory=ROOT / "ivr_flows")
    assert flows.refresh() == []
    runner = IvrRunner(
        flows=flows,
        customers=customers or Customers(),
        recorder=recorder or Recorder(),
        calendar=None,
        clock=lambda: now,
        lookup_timeout=lookup_timeout,
        default_queue="general",
        operator_queue="operator",
        shutdown_grace=shutdown_grace,
    )
    server = AgiServer(router=runner, operator_queue="operator", port=0)
    await server.start()
    try:
        yield server, runner
    finally:
        await server.close()
