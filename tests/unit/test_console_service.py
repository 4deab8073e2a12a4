"""Screen-pop routing (only the matching agent, every tab, missed pops on reconnect), the
enrichment's fail-open lookups, and the agent state controller's wrap-up rule."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callcenter.bus.memory import MemoryBus
from callcenter.calls.model import CallRecord, IvrStep
from callcenter.console.model import AgentStateIn
from callcenter.console.service import (
    AgentStateController,
    DispositionRequired,
    MemberView,
    PopBuffer,
    PopEnricher,
    ScreenPopService,
    build_pop_data,
)
from callcenter.customers.model import Customer, CustomerNumber

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Sink:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed = False
        self.close_code: int | None = None
        self.got_pop = asyncio.Event()

    async def send_str(self, data: str, compress: int | None = None) -> None:
        self.frames.append(json.loads(data))
        if self.frames[-1]["type"] == "pop":
            self.got_pop.set()

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed = True
        self.close_code = code
        return True

    def pops(self) -> list[dict[str, Any]]:
        """Pop frames in arrival order, each with its latest data (`pop.update` applied)."""
        by_seq: dict[int, dict[str, Any]] = {}
        for f in self.frames:
            if f["type"] == "pop":
                by_seq[f["seq"]] = dict(f)
            elif f["type"] == "pop.update":
                by_seq[f["seq"]]["pop"] = f["pop"]
        return list(by_seq.values())


class Customers:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.lookups = 0

    async def find_by_number(self, number: str) -> Customer | None:
        self.lookups += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("database down")
        if number.endswith("8000"):
            return Customer(
                id=7,
                name="张三",
                tier="key",
                company="ACME",
                numbers=(CustomerNumber("13800138000", "8613800138000"),),
            )
        return None


class Calls:
    async def list_calls(self, *, caller: str | None = None, limit: int = 50) -> list[CallRecord]:
        return [
            CallRecord(
                uniqueid="old.1",
                linkedid="old.1",
                channel="PJSIP/trunk-1",
                started_at=NOW - timedelta(days=2),
                caller_number=caller or "",
                queue="bookings",
                answered_at=NOW - timedelta(days=2),
                agent="王芳",
            ),
            CallRecord(
                uniqueid="100.1", linkedid="100.1", channel="c", started_at=NOW
            ),  # the current call: not history
        ]

    async def get_steps(self, uniqueid: str) -> list[IvrStep]:
        return [
            IvrStep(uniqueid, 2, NOW, "main", "menu", input="2", result="complaints_queue"),
            IvrStep(uniqueid, 1, NOW, "language", "language", input="1", result="zh"),
            IvrStep(uniqueid, 3, NOW, "welcome", "play"),
        ]


def payload(kind: str, interface: str, uniqueid: str = "100.1", **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "interface": interface,
        "member_name": "Alice",
        "queue": "complaints",
        "uniqueid": uniqueid,
        "linkedid": uniqueid,
        "caller_number": "13800138000",
        "caller_name": "ZHANG SAN",
        "dialed_number": "5551000",
        "ivr_path": ["lookup", "language", "main", "2"],
        "ivr_choice": "2",
        "hold_seconds": None,
        "ring_seconds": None,
        "talk_seconds": None,
        "reason": None,
        "call": {
            "started_at": (NOW - timedelta(seconds=40)).isoformat(),
            "queue_joined_at": (NOW - timedelta(seconds=12)).isoformat(),
            "variables": {"CALLCENTER_LANG": "zh"},
        },
        **extra,
    }


def make_service(customers: Any = None, **kw: Any) -> ScreenPopService:
    return ScreenPopService(
        bus=MemoryBus(),
        enricher=PopEnricher(
            customers=customers if customers is not None else Customers(),
            calls=Calls(),
            timeout=kw.pop("timeout", 1.0),
        ),
        clock=lambda: NOW,
        **kw,
    )


async def settle(service: ScreenPopService) -> None:
    await service.drain()
    for _ in range(5):  # let the lazy writer tasks flush their outboxes
        await asyncio.sleep(0)


async def test_pop_goes_only_to_the_matching_interface_and_every_tab() -> None:
    service = make_service()
    alice_tab1, alice_tab2, bob = Sink(), Sink(), Sink()
    service.attach(alice_tab1, interface="PJSIP/1001", user_id=1)
    service.attach(alice_tab2, interface="PJSIP/1001", user_id=1)
    service.attach(bob, interface="PJSIP/1002", user_id=2)

    service.feed(payload("agent.ringing", "PJSIP/1001"))
    await settle(service)

    # at once with what the PBX said, then the archive's part
    assert [f["type"] for f in alice_tab1.frames] == ["hello", "pop", "pop.update"]
    first = alice_tab1.frames[1]["pop"]
    assert first["pending"] is True and first["caller_number"] == "13800138000"
    assert first["customer"] is None
    assert alice_tab1.frames == alice_tab2.frames  # both tabs
    assert bob.pops() == []  # never another agent's pop
    pop = alice_tab1.pops()[0]
    assert pop["seq"] == 1
    data = pop["pop"]
    assert data["kind"] == "ringing" and data["caller_number"] == "13800138000"
    assert data["customer"]["id"] == 7 and data["customer"]["name"] == "张三"
    assert data["key_customer"] is True
    assert (data["ivr_choice"], data["ivr_choice_label"]) == ("2", "complaints_queue")
    assert [(d["node"], d["input"]) for d in data["digits"]] == [("language", "1"), ("main", "2")]
    assert data["waited_seconds"] == 12.0  # ringing: time in the queue so far
    assert [h["ref"] for h in data["history"]] == ["old.1"]
    assert data["complete"] is True and data["pending"] is False


async def test_the_answer_of_a_looked_up_call_pops_enriched_in_one_frame() -> None:
    service = make_service()
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed(payload("agent.ringing", "PJSIP/1001"))
    await settle(service)
    service.feed(payload("agent.answered", "PJSIP/1001", hold_seconds=3.0))
    await settle(service)
    answered = tab.frames[-1]
    assert answered["type"] == "pop" and answered["pop"]["kind"] == "answered"
    assert answered["pop"]["pending"] is False and answered["pop"]["customer"]["id"] == 7


async def test_unknown_payloads_and_interfaces_are_ignored() -> None:
    service = make_service()
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed({"type": "queue.stats"})
    service.feed({"type": "agent.ringing"})  # no interface
    service.feed({"type": "agent.ringing", "interface": 5})
    service.feed(payload("agent.ringing", "PJSIP/1003"))  # nobody connected: buffered only
    await settle(service)
    assert tab.pops() == []
    assert [p.seq for p in service.recent("PJSIP/1003")] == [1]


async def test_state_frames_follow_the_agent_only() -> None:
    service = make_service()
    alice, bob = Sink(), Sink()
    service.attach(alice, interface="PJSIP/1001", user_id=1)
    service.attach(bob, interface="PJSIP/1002", user_id=2)
    service.feed({"type": "agent.state", "agent": {"interface": "PJSIP/1002", "status": "paused"}})
    await settle(service)
    assert [f["type"] for f in alice.frames] == ["hello"]
    assert bob.frames[-1] == {
        "type": "state",
        "agent": {"interface": "PJSIP/1002", "status": "paused"},
    }


async def test_reconnect_gets_the_missed_pops_in_order() -> None:
    service = make_service()
    tab = Sink()
    conn = service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed(payload("agent.ringing", "PJSIP/1001", "1.1"))
    await settle(service)
    await service.detach(conn)  # the browser lost its connection
    service.feed(payload("agent.answered", "PJSIP/1001", "1.1", hold_seconds=14.5))
    service.feed(payload("agent.finished", "PJSIP/1001", "1.1", talk_seconds=60.0))
    service.feed(payload("agent.ringing", "PJSIP/1001", "2.1"))
    await settle(service)

    again = Sink()
    service.attach(again, interface="PJSIP/1001", user_id=1, last_seq=1, epoch=service.epoch)
    await settle(service)
    hello = again.frames[0]
    assert hello["type"] == "hello" and hello["seq"] == 4 and hello["replayed"] == 3
    assert hello["gap"] is False
    replayed = again.pops()
    assert [(p["seq"], p["pop"]["kind"]) for p in replayed] == [
        (2, "answered"),
        (3, "finished"),
        (4, "ringing"),
    ]
    assert all(p["replay"] and not p["pop"]["pending"] for p in replayed)  # enriched versions
    assert replayed[0]["pop"]["waited_seconds"] == 14.5  # answered: the hold time


async def test_a_new_tab_sees_the_latest_pop_and_another_epoch_replays_the_buffer() -> None:
    service = make_service(buffer_size=2)
    for uid in ("1.1", "2.1", "3.1"):
        service.feed(payload("agent.ringing", "PJSIP/1001", uid))
    await settle(service)
    assert [p.seq for p in service.recent("PJSIP/1001")] == [2, 3]  # bounded

    fresh = Sink()
    service.attach(fresh, interface="PJSIP/1001", user_id=1)
    stale = Sink()  # last saw seq 9 of a previous server run
    service.attach(stale, interface="PJSIP/1001", user_id=1, last_seq=9, epoch="old")
    behind = Sink()  # saw seq 0 of this run: seq 1 is gone from the buffer
    service.attach(behind, interface="PJSIP/1001", user_id=1, last_seq=0, epoch=service.epoch)
    await settle(service)
    assert [p["seq"] for p in fresh.pops()] == [3]
    assert [p["seq"] for p in stale.pops()] == [2, 3]
    assert [p["seq"] for p in behind.pops()] == [2, 3]
    assert behind.frames[0]["gap"] is True


async def test_a_slow_lookup_delays_neither_its_pop_nor_the_next_ones() -> None:
    class SlowFirst(Customers):
        async def find_by_number(self, number: str) -> Customer | None:
            if number == "slow":
                await asyncio.sleep(0.05)
            return None

    service = make_service(SlowFirst())
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed(payload("agent.ringing", "PJSIP/1001", "1.1", caller_number="slow"))
    service.feed(payload("agent.ringing", "PJSIP/1001", "2.1", caller_number="fast"))
    await settle(service)
    assert [(f["type"], f["seq"]) for f in tab.frames[1:]] == [
        ("pop", 1),
        ("pop", 2),
        ("pop.update", 2),  # the fast lookup
        ("pop.update", 1),  # the slow one
    ]
    assert [(p["seq"], p["pop"]["uniqueid"]) for p in tab.pops()] == [(1, "1.1"), (2, "2.1")]


@pytest.mark.parametrize("customers", [Customers(delay=1.0), Customers(fail=True)])
async def test_a_slow_or_failing_archive_still_pops_with_the_number(customers: Customers) -> None:
    service = make_service(customers, timeout=0.05)
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    service.feed(payload("agent.ringing", "PJSIP/1001"))
    await settle(service)
    data = tab.pops()[0]["pop"]
    assert data["customer"] is None and data["complete"] is False
    assert data["caller_number"] == "13800138000" and data["caller_name"] == "ZHANG SAN"


async def test_ring_and_answer_of_one_call_share_one_lookup() -> None:
    customers = Customers()
    service = make_service(customers)
    service.feed(payload("agent.ringing", "PJSIP/1001"))
    service.feed(payload("agent.answered", "PJSIP/1001", hold_seconds=3.0))
    await settle(service)
    assert customers.lookups == 1


async def test_a_tab_that_does_not_read_is_disconnected_not_buffered() -> None:
    class Stuck(Sink):
        async def send_str(self, data: str, compress: int | None = None) -> None:
            await asyncio.Event().wait()

    service = make_service(buffer_size=1, outbox_size=3)
    stuck, fine = Stuck(), Sink()
    service.attach(stuck, interface="PJSIP/1001", user_id=1)
    service.attach(fine, interface="PJSIP/1001", user_id=1)
    for i in range(6):
        service.feed(payload("agent.ringing", "PJSIP/1001", f"{i}.1"))
        await settle(service)
    assert stuck.close_code == 1013
    assert len(fine.pops()) == 6
    await service.close()


async def test_service_follows_the_bus_and_closes_tabs_on_shutdown() -> None:
    bus = MemoryBus()
    service = ScreenPopService(
        bus=bus,
        enricher=PopEnricher(customers=None, calls=None),
        clock=lambda: NOW,
    )
    task = asyncio.create_task(service.run())
    await service.wait_subscribed()
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    await bus.publish("agents", payload("agent.ringing", "PJSIP/1001"))
    await bus.publish("agents", payload("agent.ringing", "PJSIP/1002"))
    async with asyncio.timeout(5):
        await tab.got_pop.wait()
    await settle(service)
    assert [p["pop"]["interface"] for p in tab.pops()] == ["PJSIP/1001"]
    await service.close()
    assert tab.close_code == 1001
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_pop_data_without_a_call_record() -> None:
    from callcenter.console.model import Enrichment

    data = build_pop_data(
        {"type": "agent.no_answer", "interface": "PJSIP/1", "ring_seconds": 15.0},
        Enrichment(),
        NOW,
    )
    assert data["kind"] == "no_answer" and data["waited_seconds"] is None
    assert data["customer"] is None and data["ring_seconds"] == 15.0


def test_pop_buffer_since() -> None:
    buf = PopBuffer(size=3)
    for i in range(5):
        buf.add("ringing", "PJSIP/1", f"{i}", {})
    assert [p.seq for p in buf.pops] == [3, 4, 5]
    assert ([p.seq for p in buf.since(4)[0]], buf.since(4)[1]) == ([5], False)
    assert buf.since(1)[1] is True
    assert buf.since(5) == ([], False)


# ------------------------------------------------------------------------------ state control


class Ami:
    def __init__(self) -> None:
        self.actions: list[tuple[Any, ...]] = []

    async def queue_pause(
        self, interface: str, queue: str | None, paused: bool, reason: str | None = None
    ) -> None:
        self.actions.append(("pause", interface, queue, paused, reason))

    async def queue_add(
        self,
        interface: str,
        queue: str,
        *,
        member_name: str | None = None,
        penalty: int | None = None,
        paused: bool | None = None,
        state_interface: str | None = None,
    ) -> None:
        self.actions.append(("add", interface, queue, member_name, paused))

    async def queue_remove(self, interface: str, queue: str) -> None:
        self.actions.append(("remove", interface, queue))


async def test_wrap_up_cannot_end_before_the_disposition() -> None:
    ami = Ami()
    filed: set[tuple[str, int]] = set()

    async def has(uid: str, user: int) -> bool:
        return (uid, user) in filed

    control = AgentStateController(ami=lambda: ami, has_disposition=has, default_queues=["q"])
    service = make_service(on_pop=control.on_pop)
    service.feed(payload("agent.answered", "PJSIP/1002", "8.1", hold_seconds=2.0))
    service.attach(Sink(), interface="PJSIP/1001", user_id=1)  # agent 1 uses the console
    service.feed(payload("agent.answered", "PJSIP/1001", "9.1", hold_seconds=2.0))
    service.feed(payload("agent.finished", "PJSIP/1001", "9.1", talk_seconds=30.0))
    await settle(service)
    assert ami.actions == [("pause", "PJSIP/1001", None, True, "wrap-up")]
    assert control.pending("PJSIP/1001") == ["9.1"]
    assert control.pending("PJSIP/1002") == []  # not in the console: nothing to enforce

    member = MemberView(queues=("q",), name="Alice")
    with pytest.raises(DispositionRequired) as err:
        await control.set_state(
            interface="PJSIP/1001", user_id=1, state="available", reason=None, member=member
        )
    assert err.value.uniqueids == ["9.1"]
    # staying in wrap-up is fine
    await control.set_state(
        interface="PJSIP/1001", user_id=1, state="wrap_up", reason=None, member=member
    )
    filed.add(("9.1", 1))
    await control.set_state(
        interface="PJSIP/1001", user_id=1, state="available", reason=None, member=member
    )
    assert ami.actions[-1] == ("pause", "PJSIP/1001", None, False, None)
    assert control.pending("PJSIP/1001") == []


async def test_state_changes_become_queue_actions() -> None:
    ami = Ami()

    async def has(uid: str, user: int) -> bool:
        return True

    control = AgentStateController(ami=lambda: ami, has_disposition=has, default_queues=["general"])
    iface = "PJSIP/1002"
    await control.set_state(
        interface=iface,
        user_id=2,
        state="paused",
        reason="lunch",
        member=MemberView(queues=("bookings", "general")),
    )
    await control.set_state(
        interface=iface,
        user_id=2,
        state="logged_out",
        reason=None,
        member=MemberView(queues=("bookings", "general")),
    )
    await control.set_state(
        interface=iface, user_id=2, state="available", reason=None, member=MemberView(queues=())
    )
    assert ami.actions == [
        ("pause", iface, None, True, "lunch"),
        ("remove", iface, "bookings"),
        ("remove", iface, "general"),
        ("add", iface, "bookings", None, False),  # back into the queues it left
        ("add", iface, "general", None, False),
        ("pause", iface, None, False, None),
    ]


async def test_no_ami_is_a_lookup_error() -> None:
    async def has(uid: str, user: int) -> bool:
        return True

    control = AgentStateController(ami=lambda: None, has_disposition=has, default_queues=[])
    with pytest.raises(LookupError):
        await control.set_state(
            interface="PJSIP/1", user_id=1, state="available", reason=None, member=MemberView(())
        )


def test_state_request_validation() -> None:
    assert AgentStateIn(state="paused", reason=" lunch ").reason == "lunch"
    with pytest.raises(ValueError, match="reason"):
        AgentStateIn(state="paused", reason="  ")
    with pytest.raises(ValueError):
        AgentStateIn.model_validate({"state": "asleep"})


class NoStepsYet(Calls):
    """The IVR session's steps are not stored yet when the agent's phone rings."""

    async def get_steps(self, uniqueid: str) -> list[IvrStep]:
        return []


async def test_the_choice_label_comes_from_the_ivr_path_before_the_steps_are_stored() -> None:
    service = ScreenPopService(
        bus=MemoryBus(),
        enricher=PopEnricher(
            customers=Customers(), calls=NoStepsYet(), timeout=1.0, steps_wait=0.0
        ),
        clock=lambda: NOW,
    )
    tab = Sink()
    service.attach(tab, interface="PJSIP/1001", user_id=1)
    path = ["lookup", "language", "hours", "main", "2", "complaints_queue"]
    service.feed(payload("agent.ringing", "PJSIP/1001", ivr_path=path))
    await settle(service)
    data = tab.pops()[-1]["pop"]
    assert (data["ivr_choice"], data["ivr_choice_label"]) == ("2", "complaints_queue")
    assert [(d["node"], d["input"]) for d in data["digits"]] == [("main", "2")]  # the path's
    service.feed(payload("agent.ringing", "PJSIP/1001", uniqueid="100.2", ivr_path=["main", "2"]))
    await settle(service)
    assert tab.pops()[-1]["pop"]["ivr_choice_label"] is None  # nothing after the key: unknown
