"""The screen-pop's IVR digits whatever the order of the ring and the IVR steps' write: the
runner stores a session's steps once it has ended, and the agent's phone may ring before.
The pop shows the menu keys the call's IVR path carries at once, and a `pop.update` with the
stored steps follows when they land (every pop of that call, the later ones at once)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from callcenter.bus.memory import MemoryBus
from callcenter.calls.model import CallRecord, IvrStep
from callcenter.console.service import PopEnricher, ScreenPopService, path_digits
from tests.unit.test_console_service import Customers, Sink, payload, settle

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PATH = ["lookup", "language", "hours", "main", "1", "order_number", "bookings_queue"]


class LateSteps:
    """A call log whose IVR steps are stored only once `landed` is set."""

    def __init__(self) -> None:
        self.landed = asyncio.Event()
        self.polled = asyncio.Event()  # read again after the pop's lookup: nothing there yet
        self.reads = 0

    async def list_calls(self, *, caller: str | None = None, limit: int = 50) -> list[CallRecord]:
        return []

    async def get_steps(self, uniqueid: str) -> list[IvrStep]:
        self.reads += 1
        if not self.landed.is_set():
            if self.reads > 1:
                self.polled.set()
            return []
        return [
            IvrStep(uniqueid, 1, NOW, "lookup", "lookup", input="13800138000", result="known"),
            IvrStep(uniqueid, 2, NOW, "language", "language", input="2", result="en"),
            IvrStep(uniqueid, 3, NOW, "main", "menu", input="1", result="bookings"),
            IvrStep(uniqueid, 4, NOW, "order_number", "collect", input="12345678", result="ok"),
            IvrStep(uniqueid, 5, NOW, "bookings_queue", "queue", result="bookings"),
        ]


class UpdateSink(Sink):
    def __init__(self) -> None:
        super().__init__()
        self.updated = asyncio.Event()

    async def send_str(self, data: str, compress: int | None = None) -> None:
        await super().send_str(data, compress)
        if self.frames[-1]["type"] == "pop.update":
            self.updated.set()


def service_with(calls: Any, **kw: Any) -> ScreenPopService:
    return ScreenPopService(
        bus=MemoryBus(),
        enricher=PopEnricher(
            customers=Customers(),
            calls=calls,
            timeout=1.0,
            steps_poll=0.001,
            steps_poll_max=0.01,
            **kw,
        ),
        clock=lambda: NOW,
    )


def digits(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [(d["node"], d["input"]) for d in data["digits"]]


ALL = [("language", "2"), ("main", "1"), ("order_number", "12345678")]


async def test_steps_stored_after_the_ring_reach_the_pop_as_an_update() -> None:
    calls = LateSteps()
    service = service_with(calls)
    tab = UpdateSink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    ring = payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1")
    service.feed(ring)
    async with asyncio.timeout(10):  # the archive lookup is done, the steps are not stored
        await tab.updated.wait()
    first = tab.pops()[0]["pop"]
    assert first["customer"]["name"] == "张三" and first["pending"] is False
    # what the call's IVR path carries, at once: the menu key and what it chose
    assert digits(first) == [("main", "1")]
    assert (first["ivr_choice"], first["ivr_choice_label"]) == ("1", "order_number")
    assert first["digits_pending"] is True

    calls.landed.set()
    await settle(service)
    final = tab.pops()[0]["pop"]
    assert digits(final) == ALL
    assert final["digits_pending"] is False and final["customer"]["name"] == "张三"
    assert (final["ivr_choice"], final["ivr_choice_label"]) == ("1", "bookings")
    assert [f["type"] for f in tab.frames].count("pop") == 1  # updates of the one pop
    assert service.recent("PJSIP/1001")[0].data["digits_pending"] is False  # replays too

    reads = calls.reads
    service.feed(payload("agent.answered", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await settle(service)
    answered = tab.frames[-1]
    assert answered["type"] == "pop" and answered["pop"]["kind"] == "answered"
    assert digits(answered["pop"]) == ALL and answered["pop"]["digits_pending"] is False
    assert calls.reads == reads  # the call's stored steps are known: no more reads


async def test_pops_of_the_call_before_the_steps_land_are_each_updated() -> None:
    calls = LateSteps()
    service = service_with(calls)
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    service.feed(payload("agent.answered", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    async with asyncio.timeout(10):
        await calls.polled.wait()
    assert [p.data["digits_pending"] for p in service.recent("PJSIP/1001")] == [True, True]
    calls.landed.set()
    await settle(service)
    assert [(p["pop"]["kind"], digits(p["pop"])) for p in tab.pops()] == [
        ("ringing", ALL),
        ("answered", ALL),
    ]


async def test_steps_that_never_land_leave_the_path_digits_and_end_the_wait() -> None:
    calls = LateSteps()
    service = service_with(calls, steps_wait=0.01)
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await settle(service)  # returns: the wait for the steps is bounded
    data = tab.pops()[0]["pop"]
    assert digits(data) == [("main", "1")] and data["digits_pending"] is False


async def test_a_call_without_an_ivr_path_does_not_wait_for_steps() -> None:
    calls = LateSteps()
    service = service_with(calls, steps_wait=60.0)
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=[], ivr_choice=None))
    await settle(service)
    data = tab.pops()[0]["pop"]
    assert data["digits"] == [] and data["digits_pending"] is False
    assert calls.reads == 1


def test_path_digits_are_the_menu_keys_with_their_targets() -> None:
    assert path_digits(PATH) == path_digits(tuple(PATH))
    got = [(d.node, d.kind, d.input, d.result) for d in path_digits(PATH)]
    assert got == [("main", "menu", "1", "order_number")]
    operator = ["lookup", "language", "hours", "main", "0"]  # the operator key ends the IVR
    assert [(d.node, d.input, d.result) for d in path_digits(operator)] == [("main", "0", None)]
    back = ["main", "1", "bookings", "9", "main", "2", "complaints_queue"]
    assert [(d.node, d.input) for d in path_digits(back)] == [
        ("main", "1"),
        ("bookings", "9"),
        ("main", "2"),
    ]
    assert path_digits(["1", "main"]) == ()  # a key with no menu before it is not shown
    assert path_digits([]) == ()
