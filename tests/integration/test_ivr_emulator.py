"""hotline.yaml against the emulator's FastAGI client (callcenter.pbxsim) as a real peer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from callcenter.asterisk.agi import AgiServer
from callcenter.calls.model import CallbackRequest, IvrStep
from callcenter.ivr.model import CustomerInfo
from callcenter.ivr.runner import IvrRunner
from callcenter.ivr.service import FlowRegistry
from callcenter.pbxsim.agi_client import run_agi_call
from callcenter.pbxsim.callers import CallerModel, IvrHangup, KeyPlan
from callcenter.pbxsim.pbx import RealClock

ROOT = Path(__file__).resolve().parents[2]
OPEN_NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


class Customers:
    async def lookup(self, number: str) -> CustomerInfo | None:
        if number == "13900000001":
            return CustomerInfo(customer_id="K1", name="大客户", is_key_customer=True)
        return None


class Recorder:
    def __init__(self) -> None:
        self.steps: list[IvrStep] = []
        self.callbacks: list[CallbackRequest] = []

    async def record_step(self, step: IvrStep) -> None:
        self.steps.append(step)

    async def record_callback(self, req: CallbackRequest) -> None:
        self.callbacks.append(req)


@pytest.mark.parametrize(
    ("number", "keys", "queue", "prio"),
    [
        ("13800000000", ["1", "2"], "complaints", "0"),
        ("13900000001", ["2", "3"], "general", "10"),
        ("13800000000", ["1", "4", "2"], "technical", "0"),
        ("13800000000", ["1", "0"], "operator", "0"),
    ],
)
async def test_emulated_calls_reach_their_queue(
    number: str, keys: list[str], queue: str, prio: str
) -> None:
    flows = FlowRegistry(directory=ROOT / "ivr_flows")
    flows.refresh()
    recorder = Recorder()
    runner = IvrRunner(
        flows=flows,
        customers=Customers(),
        recorder=recorder,
        calendar=None,
        clock=lambda: OPEN_NOW,
        lookup_timeout=0.5,
        default_queue="general",
        operator_queue="operator",
    )
    async with AgiServer(router=runner, operator_queue="operator", port=0) as server:
        caller = CallerModel(number=number, keys=tuple(KeyPlan(k, delay=0.5) for k in keys))
        result = await run_agi_call(
            host="127.0.0.1",
            port=server.port,
            caller=caller,
            clock=RealClock(speed=100_000.0),
        )
    assert result.status == "SUCCESS"
    assert result.variables["IVR_QUEUE"] == queue
    assert result.variables["QUEUE_PRIO"] == prio
    assert recorder.steps[-1].result == queue  # queue nodes and the operator key alike


async def test_emulated_caller_hangs_up_in_the_menu() -> None:
    flows = FlowRegistry(directory=ROOT / "ivr_flows")
    flows.refresh()
    recorder = Recorder()
    runner = IvrRunner(
        flows=flows,
        customers=Customers(),
        recorder=recorder,
        calendar=None,
        clock=lambda: OPEN_NOW,
        lookup_timeout=0.5,
        default_queue="general",
        operator_queue="operator",
    )
    async with AgiServer(router=runner, operator_queue="operator", port=0) as server:
        caller = CallerModel(
            number="13800000000",
            keys=(KeyPlan("1", delay=0.5),),
            ivr_hangup=IvrHangup(command=3, after=0.5),
        )
        result = await run_agi_call(
            host="127.0.0.1", port=server.port, caller=caller, clock=RealClock(speed=100_000.0)
        )
    assert result.status == "HANGUP"
    assert "IVR_QUEUE" not in result.variables
    assert recorder.steps[-1].result == "hangup"
