"""The screen-pop's IVR digits whatever the order of the ring and the IVR steps' write: the
runner stores a session's steps once it has ended, and the agent's phone may ring before.
The pop shows the menu keys the call's IVR path carries at once, and a `pop.update` with the
stored steps follows when they land (every pop of that call, the later ones at once)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from callcenter.bus.keys import IVR_STEPS
from callcenter.bus.memory import MemoryBus
from callcenter.calls.model import CallRecord, IvrStep
from callcenter.console.service import (
    PopEnricher,
    ScreenPopService,
    path_digits,
    steps_stored_messages,
)
from tests.unit.test_console_service import Customers, Sink, payload, settle

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PATH = ["lookup", "language", "hours", "main", "1", "order_number", "bookings_queue"]


def stored(uniqueid: str = "100.1") -> list[IvrStep]:
    """The steps the runner writes for the call once its IVR session has ended."""
    return [
        IvrStep(uniqueid, 1, NOW, "lookup", "lookup", input="13800138000", result="known"),
        IvrStep(uniqueid, 2, NOW, "language", "language", input="2", result="en"),
        IvrStep(uniqueid, 3, NOW, "main", "menu", input="1", result="bookings"),
        IvrStep(uniqueid, 4, NOW, "order_number", "collect", input="12345678", result="ok"),
        IvrStep(uniqueid, 5, NOW, "bookings_queue", "queue", result="bookings"),
    ]


class LateSteps:
    """A call log whose IVR steps are stored only once `landed` is set; `fail` makes reads of
    the steps fail (a database gone away)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.landed = asyncio.Event()
        self.fail = fail
        self.reads = 0

    async def list_calls(self, *, caller: str | None = None, limit: int = 50) -> list[CallRecord]:
        return []

    async def get_steps(self, uniqueid: str) -> list[IvrStep]:
        self.reads += 1
        if self.fail:
            raise ConnectionRefusedError("database down")
        return stored(uniqueid) if self.landed.is_set() else []


class UpdateSink(Sink):
    def __init__(self) -> None:
        super().__init__()
        self.updated = asyncio.Event()
        self._changed = asyncio.Condition()

    async def send_str(self, data: str, compress: int | None = None) -> None:
        await super().send_str(data, compress)
        if self.frames[-1]["type"] == "pop.update":
            self.updated.set()
        async with self._changed:
            self._changed.notify_all()

    async def until(self, done: Any) -> None:
        """Wait until `done(self)` holds (bounded: a failing test does not hang)."""
        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(lambda: done(self))


def updates(tab: Sink) -> int:
    return [f["type"] for f in tab.frames].count("pop.update")


def service_with(calls: Any, bus: MemoryBus | None = None, **kw: Any) -> ScreenPopService:
    return ScreenPopService(
        bus=bus or MemoryBus(),
        enricher=PopEnricher(customers=Customers(), calls=calls, timeout=1.0, **kw),
        clock=lambda: NOW,
    )


async def written(bus: MemoryBus, steps: list[IvrStep]) -> None:
    """What the IVR recorder announces once it has written `steps` to the call log."""
    for message in steps_stored_messages(steps):
        await bus.publish(IVR_STEPS, message)


async def following(service: ScreenPopService) -> asyncio.Task[None]:
    task = asyncio.create_task(service.run())
    async with asyncio.timeout(10):
        await service.wait_subscribed()
    return task


async def desk(
    calls: LateSteps | None = None,
) -> tuple[LateSteps, MemoryBus, ScreenPopService, asyncio.Task[None], UpdateSink]:
    """A screen-pop service following its bus, with one agent's tab (PJSIP/1001) attached."""
    calls = calls or LateSteps()
    bus = MemoryBus()
    service = service_with(calls, bus)
    task = await following(service)
    tab = UpdateSink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    return calls, bus, service, task, tab


async def settled(service: ScreenPopService) -> None:
    """Every pop's updates sent; bounded: on a failure the test fails instead of hanging."""
    async with asyncio.timeout(10):
        await settle(service)


async def stop(service: ScreenPopService, task: asyncio.Task[None]) -> None:
    await service.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def digits(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [(d["node"], d["input"]) for d in data["digits"]]


ALL = [("language", "2"), ("main", "1"), ("order_number", "12345678")]


async def test_steps_stored_after_the_ring_reach_the_pop_by_a_bus_message() -> None:
    calls, bus, service, task, tab = await desk()
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

    # written by the runner of this or another process: the message brings them (the call
    # log is not read again, a slow database gets no extra load)
    await written(bus, stored())
    await settled(service)
    final = tab.pops()[0]["pop"]
    assert digits(final) == ALL
    assert final["digits_pending"] is False and final["customer"]["name"] == "张三"
    assert final["complete"] is True
    assert (final["ivr_choice"], final["ivr_choice_label"]) == ("1", "bookings")
    assert [f["type"] for f in tab.frames].count("pop") == 1  # updates of the one pop
    assert service.recent("PJSIP/1001")[0].data["digits_pending"] is False  # replays too
    assert calls.reads == 1  # the lookup's read only

    service.feed(payload("agent.answered", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await settled(service)
    answered = tab.frames[-1]
    assert answered["type"] == "pop" and answered["pop"]["kind"] == "answered"
    assert digits(answered["pop"]) == ALL and answered["pop"]["digits_pending"] is False
    assert calls.reads == 1  # the call's stored steps are known: no more reads
    await stop(service, task)


async def test_pops_of_the_call_before_the_steps_land_are_each_updated() -> None:
    calls, bus, service, task, tab = await desk()
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    service.feed(payload("agent.answered", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await tab.until(lambda t: updates(t) == 2)  # both pops have the archive's part
    assert [p.data["digits_pending"] for p in service.recent("PJSIP/1001")] == [True, True]
    await written(bus, stored("100.9"))  # another call's steps: not these
    await written(bus, stored())
    await settled(service)
    assert [(p["pop"]["kind"], digits(p["pop"])) for p in tab.pops()] == [
        ("ringing", ALL),
        ("answered", ALL),
    ]
    assert calls.reads == 1
    await stop(service, task)


async def test_steps_written_while_the_lookup_reads_are_not_missed() -> None:
    (
        _calls,
        _bus,
        service,
        task,
        tab,
    ) = await desk()  # the lookup's read does not see them (it began before the commit)
    for message in steps_stored_messages(stored()):  # as `run()` hands it over
        service.steps_stored(message)
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await settled(service)
    data = tab.pops()[0]["pop"]
    assert digits(data) == ALL and data["digits_pending"] is False
    await stop(service, task)


async def test_steps_that_never_land_leave_the_path_digits_and_end_the_wait() -> None:
    calls = LateSteps()
    service = service_with(calls, steps_wait=0.01)
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await settled(service)  # returns: the wait for the steps is bounded
    data = tab.pops()[0]["pop"]
    assert digits(data) == [("main", "1")] and data["digits_pending"] is False
    assert calls.reads == 1  # waited for a message, not polled


async def test_after_a_wait_that_gave_up_a_later_pop_of_the_call_starts_afresh() -> None:
    # an outage longer than the wait: the steps are held, then written when the database is
    # back (announced, or seen by the next pop's lookup when written by another process)
    calls = LateSteps()
    bus = MemoryBus()
    service = service_with(calls, bus, steps_wait=0.01)
    task = await following(service)
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await settled(service)
    assert tab.pops()[0]["pop"]["digits_pending"] is False  # gave up: the path's digits
    for message in steps_stored_messages(stored()):  # as `run()` hands it over
        service.steps_stored(message)
    service.feed(payload("agent.answered", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await settled(service)
    answered = tab.pops()[-1]["pop"]
    assert answered["kind"] == "answered" and digits(answered) == ALL

    # no message this process saw (written elsewhere, say): the next pop reads once more
    reads = calls.reads
    other = payload("agent.ringing", "PJSIP/1001", "200.1", ivr_path=PATH, ivr_choice="1")
    service.feed(other)
    await settled(service)
    assert digits(tab.pops()[-1]["pop"]) == [("main", "1")]  # the read before the write
    assert calls.reads == reads + 1
    calls.landed.set()
    service.feed({**other, "type": "agent.answered"})
    await settled(service)
    assert digits(tab.pops()[-1]["pop"]) == ALL and calls.reads == reads + 2
    await stop(service, task)


async def test_an_evicted_wait_still_ends_the_pending_digits() -> None:
    calls = LateSteps()
    service = service_with(calls)  # waits of 60 s: the first is evicted, not timed out
    tab = UpdateSink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed(payload("agent.ringing", "PJSIP/1001", "1.0", ivr_path=PATH, ivr_choice="1"))
    await tab.until(lambda t: updates(t) == 1)
    for n in range(1, 1001):  # the overload the cap on waits is for
        service.feed(payload("agent.ringing", "PJSIP/2", f"1.{n}", ivr_path=PATH))
    await tab.until(lambda t: updates(t) == 2)
    data = tab.pops()[0]["pop"]
    assert data["digits_pending"] is False and digits(data) == [("main", "1")]
    await service.close()


async def test_stored_digits_make_a_pop_whose_step_read_failed_complete() -> None:
    calls, bus, service, task, tab = await desk(LateSteps(fail=True))
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await tab.until(lambda t: updates(t) == 1)
    first = tab.pops()[0]["pop"]
    assert first["complete"] is False and first["digits_pending"] is True
    await written(bus, stored())
    await settled(service)
    final = tab.pops()[0]["pop"]
    assert final["complete"] is True and digits(final) == ALL
    assert calls.reads == 1  # a failed read is not retried
    await stop(service, task)


async def test_a_pop_during_close_starts_no_wait() -> None:
    calls = LateSteps()
    service = service_with(calls)
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    await service.close()
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await settled(service)  # nothing waits 60 s for the steps
    await service.close()


async def test_a_call_without_an_ivr_path_does_not_wait_for_steps() -> None:
    calls = LateSteps()
    service = service_with(calls, steps_wait=60.0)
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=[], ivr_choice=None))
    await settled(service)
    data = tab.pops()[0]["pop"]
    assert data["digits"] == [] and data["digits_pending"] is False
    assert calls.reads == 1


def test_the_stored_steps_message_carries_the_keys_of_each_call() -> None:
    steps = [*stored("1.1"), *stored("1.2")[1:3]]
    messages = steps_stored_messages(steps)
    assert [m["uniqueid"] for m in messages] == ["1.1", "1.2"]
    assert messages[0]["digits"] == [
        {"seq": 2, "node": "language", "kind": "language", "input": "2", "result": "en"},
        {"seq": 3, "node": "main", "kind": "menu", "input": "1", "result": "bookings"},
        {"seq": 4, "node": "order_number", "kind": "collect", "input": "12345678", "result": "ok"},
    ]  # not the lookup's caller id, not the queue step
    assert [d["node"] for d in messages[1]["digits"]] == ["language", "main"]
    assert steps_stored_messages([]) == []


async def test_a_malformed_steps_message_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    service = service_with(LateSteps())
    tab = UpdateSink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await tab.until(lambda t: updates(t) == 1)  # waiting for the steps
    bad: list[dict[str, Any]] = [
        {},
        {"uniqueid": "100.1"},
        {"uniqueid": "", "digits": []},
        {"uniqueid": "100.1", "digits": [{"node": 1, "kind": "menu", "input": "1"}]},
        {"uniqueid": "100.1", "digits": "12"},
    ]
    for message in bad:
        service.steps_stored(message)
    assert caplog.text.count("malformed IVR steps message") == len(bad)
    service.feed(payload("agent.answered", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await tab.until(lambda t: len(t.pops()) == 2)
    assert [p["pop"]["digits_pending"] for p in tab.pops()] == [True, True]  # still waiting
    await service.close()


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


async def test_a_call_whose_steps_come_in_several_messages_shows_them_all() -> None:
    # held steps flushed in batches (or one by one after a refused item): one message per
    # write, each with a part of the call's digits, in the order they were written
    calls, bus, service, task, tab = await desk()
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await tab.until(lambda t: updates(t) == 1)  # the archive's part; the digits pending
    steps = stored()
    await written(bus, steps[:3])  # the end of one batch: language and main
    await settled(service)
    assert digits(tab.pops()[0]["pop"]) == ALL[:2]
    await written(bus, steps[3:])  # the next batch: the order number
    await settled(service)
    final = tab.pops()[0]["pop"]
    assert digits(final) == ALL and final["digits_pending"] is False
    assert service.recent("PJSIP/1001")[0].data["digits"] == final["digits"]  # replays too

    service.feed(payload("agent.answered", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await settled(service)
    assert digits(tab.frames[-1]["pop"]) == ALL  # a later pop: all of them at once
    assert calls.reads == 1
    await stop(service, task)


async def test_a_pop_shown_with_part_of_the_digits_gets_the_rest() -> None:
    _calls, bus, service, task, tab = await desk()
    steps = stored()
    for message in steps_stored_messages(steps[:1]):  # the lookup step only: no keys
        service.steps_stored(message)
    for message in steps_stored_messages(steps[1:2]):  # the language key
        service.steps_stored(message)
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await settled(service)
    assert digits(tab.pops()[0]["pop"]) == ALL[:1]
    await written(bus, steps[2:4])  # one by one after a refused item: the rest, later
    await settled(service)
    assert digits(tab.pops()[0]["pop"]) == ALL
    await stop(service, task)


async def test_steps_written_again_after_a_timeout_are_not_shown_twice() -> None:
    # a write that timed out may have gone through: its steps are written (and announced) again
    _calls, _bus, service, task, tab = await desk()
    steps = stored()
    for part in (steps[:3], steps, steps[2:]):
        for message in steps_stored_messages(part):
            service.steps_stored(message)
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=PATH, ivr_choice="1"))
    await settled(service)
    assert digits(tab.pops()[0]["pop"]) == ALL
    await stop(service, task)
