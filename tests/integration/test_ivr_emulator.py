"""hotline.yaml against the emulator's FastAGI client (callcenter.pbxsim) as a real peer."""

from __future__ import annotations

import pytest
from ivr_support import Recorder, hotline

from callcenter.ivr.model import CustomerInfo
from callcenter.pbxsim.agi_client import run_agi_call
from callcenter.pbxsim.callers import CallerModel, IvrHangup, KeyPlan
from callcenter.pbxsim.pbx import RealClock


class KeyCustomer:
    """13900000001 is a key customer; every other number is unknown."""

    async def lookup(self, number: str) -> CustomerInfo | None:
        if number == "13900000001":
            return CustomerInfo(customer_id="K1", name="大客户", is_key_customer=True)
        return None


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
    recorder = Recorder()
    ivr = hotline(customers=KeyCustomer(), recorder=recorder, lookup_timeout=0.5)
    async with ivr as (server, _):
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
    recorder = Recorder()
    ivr = hotline(customers=KeyCustomer(), recorder=recorder, lookup_timeout=0.5)
    async with ivr as (server, _):
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
