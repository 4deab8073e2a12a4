"""CallTracker: talk time, transfers list and abandons once an agent transfers the caller.

Asterisk sends AgentComplete (Reason: transfer) for the agent's part only; what the caller says
to the transfer target afterwards comes with no queue event at all (Newstate/BridgeEnter of the
target's leg, then the Hangups).
"""

from __future__ import annotations

import orjson
import pytest
from test_call_tracker import (
    Chan,
    Script,
    agent_ev,
    agent_leg,
    at,
    bridge_enter,
    ended,
    ev,
    hangup,
    hangup_request,
    join,
    leave,
    newchannel,
    newexten,
    newstate,
    run,
)

from callcenter.asterisk.events import AttendedTransferred, decode_event
from callcenter.asterisk.message import AmiMessage
from callcenter.calls.model import Transfer, call_record_from_json
from callcenter.calls.service import CallTracker, CallUpdated


def blind(transferer: Chan, caller: Chan, exten: str, context: str = "agents") -> AmiMessage:
    return ev(
        "BlindTransfer",
        ("Result", "Success"),
        transferer.snap("Transferer"),
        caller.snap("Transferee"),
        ("BridgeUniqueid", "b-1"),
        ("IsExternal", "No"),
        ("Context", context),
        ("Extension", exten),
    )


def complete(c: Chan, leg: Chan, queue: str, talk: int, reason: str) -> AmiMessage:
    return agent_ev(
        "AgentComplete", c, leg, queue, ("HoldTime", "5"), ("TalkTime", str(talk)),
        ("Reason", reason),
    )  # fmt: skip


def phone_leg(caller: Chan, endpoint: str, n: int, uniqueid: str, linkedid: str = "") -> Chan:
    """The leg Dial() creates for a phone: inherits the caller's Linkedid."""
    leg = agent_leg(caller, endpoint, n, uniqueid)
    leg.linkedid = linkedid or caller.linkedid
    leg.context = "agents"
    return leg


def answered_by_alice(uid: str, n: int) -> tuple[Chan, Chan, Script]:
    """Queued at 5, Alice answers at 10 (HoldTime 5)."""
    c = Chan(f"PJSIP/trunk-{n:08x}", uid)
    alice = agent_leg(c, "1001", n + 1, uid + "1")
    script: Script = [
        (0, newchannel(c)),
        (5, newexten(c, "Queue", "support,t,,,300")),
        (5, join(c, "support")),
        (6, newchannel(alice)),
        (6, agent_ev("AgentCalled", c, alice, "support")),
        (10, newstate(alice, 6)),
        (10, leave(c, "support")),
        (10, agent_ev("AgentConnect", c, alice, "support", ("HoldTime", "5"), ("RingTime", "4"))),
        (10, bridge_enter(c)),
        (10, bridge_enter(alice)),
    ]
    return c, alice, script


def blind_to_bob(c: Chan, alice: Chan, bob: Chan) -> Script:
    """At 70 Alice blind-transfers the caller to extension 1002 ([agents] Dial(PJSIP/1002))."""
    return [
        (70, blind(alice, c, "1002")),
        (70, complete(c, alice, "support", 60, "transfer")),
        (70, hangup(alice)),
        (70, newexten(c, "Dial", "PJSIP/1002,30", exten="1002")),
        (71, newchannel(bob)),
        (71, newstate(bob, 5)),
    ]


def test_talk_after_a_blind_transfer_to_an_extension_counts_until_the_hangup() -> None:
    c, alice, script = answered_by_alice("600.1", 0x60)
    bob = phone_leg(c, "1002", 0x62, "600.3")
    script += blind_to_bob(c, alice, bob)
    script += [
        (80, newstate(bob, 6)),
        (80, bridge_enter(c, "b-2")),
        (80, bridge_enter(bob, "b-2")),
        (200, hangup_request(c)),
        (200, hangup(bob)),
        (200, hangup(c)),
    ]
    (r,) = ended(run(CallTracker(), script))
    assert r.talk_seconds == 60.0 + 120.0  # Alice's TalkTime, then Bob from his answer
    assert r.transfers == (
        Transfer(at(70), "blind", "1002", source="Alice Agent", answered_at=at(80)),
    )
    # the call stays Alice's, answered once, after the first wait
    assert (r.agent, r.agents, r.answered_at, r.wait_seconds) == (
        "Alice Agent", ("Alice Agent",), at(10), 5.0,
    )  # fmt: skip
    assert (r.end_reason, r.abandoned, r.abandon_stage) == ("completed", False, None)


def test_the_target_answering_is_published_as_a_transfer_update() -> None:
    c, alice, script = answered_by_alice("601.1", 0x64)
    bob = phone_leg(c, "1002", 0x66, "601.3")
    tracker = CallTracker()
    run(tracker, script + blind_to_bob(c, alice, bob))
    effects = run(tracker, [(80, newstate(bob, 6))])
    assert [(type(e), getattr(e, "change", None)) for e in effects] == [(CallUpdated, "transfer")]
    live = tracker.get("601.1")
    assert live is not None and live.transfers[-1].answered_at == at(80)
    assert run(tracker, [(80, bridge_enter(bob, "b-2"))]) == []  # the same answer again


@pytest.mark.parametrize("ending", ["caller hangs up", "dial times out"])
def test_transfer_target_never_answers(ending: str) -> None:
    c, alice, script = answered_by_alice("602.1", 0x68)
    bob = phone_leg(c, "1002", 0x6A, "602.3")
    script += blind_to_bob(c, alice, bob)
    if ending == "caller hangs up":
        script += [(85, hangup_request(c)), (85, hangup(bob, 0, "Unknown")), (85, hangup(c))]
    else:
        script += [
            (101, hangup(bob, 19, "User alerting, no answer")),
            (101, newexten(c, "Hangup", "")),
            (101, hangup(c)),
        ]
    (r,) = ended(run(CallTracker(), script))
    assert r.talk_seconds == 60.0  # only Alice: ringing Bob is not talk
    assert r.transfers == (Transfer(at(70), "blind", "1002", source="Alice Agent"),)
    # served by Alice before the transfer: not an abandoned call (as for a queue after a
    # transfer); the unanswered transfer says what happened
    assert (r.abandoned, r.abandon_stage, r.end_reason) == (False, None, "completed")


def test_target_hangs_up_first_and_the_dialplan_goes_on() -> None:
    c, alice, script = answered_by_alice("603.1", 0x6C)
    bob = phone_leg(c, "1002", 0x6E, "603.3")
    script += blind_to_bob(c, alice, bob)
    script += [
        (80, newstate(bob, 6)),
        (80, bridge_enter(bob, "b-2")),
        (150, hangup_request(bob)),
        (150, hangup(bob)),
        (150, newexten(c, "Playback", "survey", exten="survey")),
        (170, hangup(c)),
    ]
    (r,) = ended(run(CallTracker(), script))
    assert r.talk_seconds == 60.0 + 70.0  # the survey after Bob hung up is not talk


@pytest.mark.parametrize("leave_first", [False, True])
def test_transfer_to_another_queue_keeps_the_first_answer_and_wait(leave_first: bool) -> None:
    """[agents] 7001 = Queue(bookings): the second queue's wait is not the caller's wait for
    the hotline (it is neither talk). The member's leg may go Up after the caller left the
    queue (stasis order is only typical): still one answer, counted once."""
    c, alice, script = answered_by_alice("604.1", 0x70)
    carol = agent_leg(c, "1003", 0x72, "604.3")
    script += [
        (70, blind(alice, c, "7001")),
        (70, complete(c, alice, "support", 60, "transfer")),
        (70, hangup(alice)),
        (70, newexten(c, "Queue", "bookings,t,,,300", exten="7001")),
        (70, join(c, "bookings")),
        (71, newchannel(carol)),
        (71, agent_ev("AgentCalled", c, carol, "bookings")),
        *(
            [(100, leave(c, "bookings")), (100, newstate(carol, 6))]
            if leave_first
            else [(100, newstate(carol, 6)), (100, leave(c, "bookings"))]
        ),
        (100, agent_ev("AgentConnect", c, carol, "bookings", ("HoldTime", "30"))),
        (100, bridge_enter(carol, "b-3")),
        (160, complete(c, carol, "bookings", 60, "caller")),
        (160, hangup(c)),
    ]  # fmt: skip
    (r,) = ended(run(CallTracker(), script))
    assert (r.queue, r.queues, r.agents) == (
        "support", ("support", "bookings"), ("Alice Agent", "Carol Agent"),
    )  # fmt: skip
    assert (r.agent, r.answered_at, r.wait_seconds) == ("Alice Agent", at(10), 5.0)
    assert r.talk_seconds == 120.0
    assert r.transfers == (
        Transfer(at(70), "blind", "7001", source="Alice Agent", answered_at=at(100)),
    )


def attended(alice: Chan, consult: Chan, c: Chan, bob: Chan) -> AmiMessage:
    return ev(
        "AttendedTransfer",
        ("Result", "Success"),
        alice.snap("OrigTransferer"),
        ("OrigBridgeUniqueid", "b-1"),
        consult.snap("SecondTransferer"),
        ("SecondBridgeUniqueid", "b-2"),
        ("DestType", "Bridge"),
        ("DestBridgeUniqueid", "b-1"),
        c.snap("Transferee"),
        bob.snap("TransferTarget"),
        ("IsExternal", "No"),
    )


@pytest.mark.parametrize("relinked", [True, False], ids=["caller-linkedid", "consult-linkedid"])
def test_attended_transfer_counts_the_target_until_the_hangup(relinked: bool) -> None:
    """Alice's phone calls Bob (the consultation: a call of its own, Linkedid its own), then
    completes the transfer. Bridging Bob with the caller gives his leg the caller's (oldest)
    Linkedid; either way his leg now belongs to the caller's call."""
    c, alice, script = answered_by_alice("610.1", 0x80)
    consult = Chan("PJSIP/1001-00000082", "611.1", context="agents", exten="1002", num="1001")
    bob = phone_leg(consult, "1002", 0x83, "611.2")
    bob.num = "1002"
    script += [
        (40, newchannel(consult)),
        (40, newexten(consult, "Dial", "PJSIP/1002,30")),
        (41, newchannel(bob)),
        (45, newstate(bob, 6)),
        (45, bridge_enter(consult, "b-2")),
        (45, bridge_enter(bob, "b-2")),
        (60, attended(alice, consult, c, bob)),
        (60, complete(c, alice, "support", 50, "transfer")),
        (60, hangup(alice)),
        (60, hangup(consult)),
    ]
    if relinked:
        bob.linkedid = c.linkedid
    script += [(60, bridge_enter(bob, "b-1")), (130, hangup_request(bob)), (130, hangup(bob))]
    script += [(130, hangup(c))]
    tracker = CallTracker()
    records = ended(run(tracker, script))
    assert [r.uniqueid for r in records] == ["610.1"]  # no record for the consultation
    (r,) = records
    assert r.talk_seconds == 50.0 + 70.0
    assert r.transfers == (
        Transfer(at(60), "attended", "1002", source="Alice Agent", answered_at=at(60)),
    )
    assert (r.agent, r.end_reason, r.abandoned) == ("Alice Agent", "completed", False)
    assert len(tracker) == 0


def test_second_transfer_is_from_the_first_target() -> None:
    c, alice, script = answered_by_alice("620.1", 0x90)
    bob = phone_leg(c, "1002", 0x92, "620.3")
    carol = phone_leg(c, "1003", 0x93, "620.4")
    script += blind_to_bob(c, alice, bob)
    script += [
        (80, newstate(bob, 6)),
        (80, bridge_enter(bob, "b-2")),
        (100, blind(bob, c, "1003")),
        (100, hangup(bob)),
        (100, newexten(c, "Dial", "PJSIP/1003,30", exten="1003")),
        (101, newchannel(carol)),
        (105, newstate(carol, 6)),
        (165, hangup(carol)),
        (165, hangup(c)),
    ]
    (r,) = ended(run(CallTracker(), script))
    assert r.transfers == (
        Transfer(at(70), "blind", "1002", source="Alice Agent", answered_at=at(80)),
        Transfer(at(100), "blind", "1003", source="1002", answered_at=at(105)),
    )
    assert r.talk_seconds == 60.0 + 20.0 + 60.0


def test_without_agent_complete_the_agent_talk_ends_at_the_transfer() -> None:
    """AgentComplete lost (or not sent): Alice's part is counted on the clock up to the
    transfer, not up to the caller's hangup (which would count Bob's time twice)."""
    c, alice, script = answered_by_alice("630.1", 0xA0)
    bob = phone_leg(c, "1002", 0xA2, "630.3")
    script += [m for m in blind_to_bob(c, alice, bob) if m[1].name != "AgentComplete"]
    script += [(80, newstate(bob, 6)), (200, hangup(c))]
    (r,) = ended(run(CallTracker(), script))
    assert r.talk_seconds == 60.0 + 120.0


def test_agent_complete_before_the_blind_transfer_event_counts_the_same() -> None:
    c, alice, script = answered_by_alice("631.1", 0xA4)
    bob = phone_leg(c, "1002", 0xA6, "631.3")
    steps = blind_to_bob(c, alice, bob)
    steps[0], steps[1] = steps[1], steps[0]  # stasis order is only typical
    script += [*steps, (80, newstate(bob, 6)), (200, hangup(c))]
    (r,) = ended(run(CallTracker(), script))
    assert r.talk_seconds == 180.0
    assert r.transfers[0].answered_at == at(80)


def test_transfer_fields_survive_the_json_round_trip() -> None:
    c, alice, script = answered_by_alice("640.1", 0xB0)
    bob = phone_leg(c, "1002", 0xB2, "640.3")
    script += [*blind_to_bob(c, alice, bob), (80, newstate(bob, 6)), (90, hangup(c))]
    (r,) = ended(run(CallTracker(), script))
    assert call_record_from_json(orjson.loads(orjson.dumps(r))) == r


def attended_to_app(alice: Chan, consult: Chan, c: Chan, app: str) -> AmiMessage:
    """The consultation was not in a bridge (still in Dial or Queue): Asterisk moves the caller
    into its place in that application (bridge.c, the "unbridged" branch): DestType App, no
    TransferTarget block, nobody has answered yet."""
    return ev(
        "AttendedTransfer",
        ("Result", "Success"),
        alice.snap("OrigTransferer"),
        ("OrigBridgeUniqueid", "b-1"),
        consult.snap("SecondTransferer"),
        ("DestType", "App"),
        ("DestApp", app),
        c.snap("Transferee"),
        ("IsExternal", "No"),
    )


@pytest.mark.parametrize("answered", [True, False], ids=["answered", "abandoned"])
def test_attended_transfer_into_a_queue_is_answered_by_its_member(answered: bool) -> None:
    """Alice's phone dials 7002 (Queue complaints) and she completes the transfer while the
    consultation still waits there: the caller waits in complaints until Bob answers."""
    c, alice, script = answered_by_alice("650.1", 0xC0)
    consult = Chan("PJSIP/1001-000000c2", "651.1", context="agents", exten="7002", num="1001")
    script += [
        (40, newchannel(consult)),
        (40, newexten(consult, "Queue", "complaints,t,,,300")),
        (40, join(consult, "complaints")),
        (60, attended_to_app(alice, consult, c, "Queue")),
        (60, complete(c, alice, "support", 50, "transfer")),
        (60, hangup(alice)),
        (60, hangup(consult)),  # the masquerade's leftover carries the consultation's id
    ]
    c.context, c.exten = "agents", "7002"
    if answered:
        bob = agent_leg(c, "1002", 0xC3, "650.3")
        script += [
            (95, newchannel(bob)),
            (95, agent_ev("AgentCalled", c, bob, "complaints")),
            (100, newstate(bob, 6)),
            (100, leave(c, "complaints")),
            (100, agent_ev("AgentConnect", c, bob, "complaints", ("HoldTime", "40"))),
            (100, bridge_enter(bob, "b-3")),
            (160, hangup_request(c)),
            (160, complete(c, bob, "complaints", 60, "caller")),
            (160, hangup(bob)),
            (160, hangup(c)),
        ]
    else:
        script += [(90, hangup_request(c)), (90, hangup(c))]
    (r,) = ended(run(CallTracker(), script))
    assert r.talk_seconds == (50.0 + 60.0 if answered else 50.0)
    assert r.transfers == (
        Transfer(
            at(60), "attended", "7002", source="Alice Agent",
            answered_at=at(100) if answered else None,
        ),
    )  # fmt: skip
    assert (r.agent, r.answered_at, r.end_reason) == ("Alice Agent", at(10), "completed")


@pytest.mark.parametrize("relinked", [True, False], ids=["caller-linkedid", "consult-linkedid"])
@pytest.mark.parametrize("answered", [True, False], ids=["answered", "unanswered"])
def test_transfer_while_the_target_still_rings_is_answered_by_the_target(
    answered: bool, relinked: bool
) -> None:
    """The usual semi-attended transfer of a SIP phone: Transfer pressed while Bob's phone
    still rings (the consultation in Dial): DestType App; the caller hears the ringing."""
    c, alice, script = answered_by_alice("660.1", 0xD0)
    consult = Chan("PJSIP/1001-000000d2", "661.1", context="agents", exten="1002", num="1001")
    bob = phone_leg(consult, "1002", 0xD3, "661.2")
    script += [
        (40, newchannel(consult)),
        (40, newexten(consult, "Dial", "PJSIP/1002,30")),
        (41, newchannel(bob)),
        (41, newstate(bob, 5)),
        (60, attended_to_app(alice, consult, c, "Dial")),
        (60, complete(c, alice, "support", 50, "transfer")),
        (60, hangup(alice)),
        (60, hangup(consult)),
    ]
    if answered:
        if relinked:
            bob.linkedid = c.linkedid
        script += [
            (75, newstate(bob, 6)),
            (75, bridge_enter(c, "b-4")),
            (75, bridge_enter(bob, "b-4")),
            (135, hangup_request(bob)),
            (135, hangup(bob)),
            (135, hangup(c)),
        ]
    else:  # Dial(PJSIP/1002,30) gives up
        script += [(70, hangup(bob, 19, "User alerting, no answer")), (70, hangup(c))]
    (r,) = ended(run(CallTracker(), script))
    assert r.talk_seconds == (50.0 + 60.0 if answered else 50.0)
    assert r.transfers == (
        Transfer(
            at(60), "attended", "1002", source="Alice Agent",
            answered_at=at(75) if answered else None,
        ),
    )  # fmt: skip


def test_threeway_keeps_the_agent_talking() -> None:
    """DestType Threeway: the agent stays in the call (no AgentComplete until the end, with
    her whole TalkTime); the target joins talking."""
    c, alice, script = answered_by_alice("670.1", 0xE0)
    consult = Chan("PJSIP/1001-000000e2", "671.1", context="agents", exten="1002", num="1001")
    bob = phone_leg(consult, "1002", 0xE3, "671.2")
    bob.num = "1002"
    threeway = ev(
        "AttendedTransfer",
        ("Result", "Success"),
        alice.snap("OrigTransferer"),
        ("OrigBridgeUniqueid", "b-1"),
        consult.snap("SecondTransferer"),
        ("SecondBridgeUniqueid", "b-2"),
        ("DestType", "Threeway"),
        ("DestBridgeUniqueid", "b-1"),
        ("DestTransfererChannel", alice.channel),
        c.snap("Transferee"),
        bob.snap("TransferTarget"),
        ("IsExternal", "No"),
    )
    script += [
        (40, newchannel(consult)),
        (40, newexten(consult, "Dial", "PJSIP/1002,30")),
        (41, newchannel(bob)),
        (45, newstate(bob, 6)),
        (45, bridge_enter(consult, "b-2")),
        (45, bridge_enter(bob, "b-2")),
        (60, threeway),
        (60, hangup(consult)),
        (60, bridge_enter(bob, "b-1")),
        (130, hangup_request(c)),
        (130, complete(c, alice, "support", 120, "caller")),
        (130, hangup(alice)),
        (130, hangup(bob)),
        (130, hangup(c)),
    ]
    (r,) = ended(run(CallTracker(), script))
    assert r.talk_seconds == 120.0
    assert r.transfers == (
        Transfer(at(60), "attended", "1002", source="Alice Agent", answered_at=at(60)),
    )


def test_bridged_transfer_to_a_ringing_target_waits_for_its_answer() -> None:
    """A features "blond" transfer bridges the caller with a target that still rings
    (DestType Bridge, TransferTarget not Up): its answer starts its talk."""
    c, alice, script = answered_by_alice("680.1", 0xF0)
    consult = Chan("PJSIP/1001-000000f2", "681.1", context="agents", exten="1002", num="1001")
    bob = phone_leg(consult, "1002", 0xF3, "681.2")
    bob.num = "1002"
    script += [
        (40, newchannel(consult)),
        (40, newexten(consult, "Dial", "PJSIP/1002,30")),
        (41, newchannel(bob)),
        (41, newstate(bob, 5)),
        (60, attended(alice, consult, c, bob)),
        (60, complete(c, alice, "support", 50, "transfer")),
        (60, hangup(alice)),
        (60, hangup(consult)),
        (70, newstate(bob, 6)),
        (70, bridge_enter(bob, "b-1")),
        (130, hangup(bob)),
        (130, hangup(c)),
    ]
    (r,) = ended(run(CallTracker(), script))
    assert r.talk_seconds == 50.0 + 60.0
    assert r.transfers[-1].answered_at == at(70)


def test_transfer_target_state_is_decoded() -> None:
    c, alice, _ = answered_by_alice("690.1", 0x10)
    consult = Chan("PJSIP/1001-00000012", "691.1", context="agents", exten="1002", num="1001")
    bob = phone_leg(consult, "1002", 0x13, "691.2")
    bob.state = 5
    event = decode_event(attended(alice, consult, c, bob))
    assert isinstance(event, AttendedTransferred) and event.target is not None
    assert event.target.state == 5
    assert event.transferee is not None and event.transferee.state == 4


def test_attended_transfer_joining_two_hotline_calls_ends_both() -> None:
    """Alice holds caller X, takes caller Y on her second line, then joins them: the transfer
    target is Y's own first channel. Each call still ends with its own hangup."""
    tracker = CallTracker()
    x, alice_x, first = answered_by_alice("740.1", 0x40)
    y, alice_y, second = answered_by_alice("750.1", 0x44)
    y.num = "15559999999"
    run(tracker, first + [(20 + s, m) for s, m in second])
    x.state = y.state = 6  # Queue() answered them
    join_them = ev(
        "AttendedTransfer",
        ("Result", "Success"),
        alice_x.snap("OrigTransferer"),
        ("OrigBridgeUniqueid", "b-1"),
        alice_y.snap("SecondTransferer"),
        ("SecondBridgeUniqueid", "b-2"),
        ("DestType", "Bridge"),
        ("DestBridgeUniqueid", "b-1"),
        x.snap("Transferee"),
        y.snap("TransferTarget"),
        ("IsExternal", "No"),
    )
    run(tracker, [
        (60, join_them),
        (60, complete(x, alice_x, "support", 50, "transfer")),
        (60, complete(y, alice_y, "support", 30, "transfer")),
        (60, hangup(alice_x)),
        (60, hangup(alice_y)),
    ])  # fmt: skip
    (r,) = ended(run(tracker, [(120, hangup_request(y)), (120, hangup(y))]))
    assert (r.uniqueid, r.end_reason, r.talk_seconds) == ("750.1", "completed", 30.0)
    assert [c.uniqueid for c in tracker.active_calls()] == ["740.1"]
    (r,) = ended(run(tracker, [(125, hangup(x))]))
    assert (r.uniqueid, r.talk_seconds) == ("740.1", 50.0 + 60.0)  # Alice, then Y till 120
    assert r.transfers == (
        Transfer(at(60), "attended", "15559999999", source="Alice Agent", answered_at=at(60)),
    )
    assert len(tracker) == 0


@pytest.mark.parametrize("into", ["extension", "queue"])
def test_caller_running_the_dialplan_before_the_blind_transfer_event_is_one_transfer(
    into: str,
) -> None:
    """bridge.c queues the blind transfer to the caller's own thread before the transferer
    publishes BlindTransfer: the caller's Newexten (and queue join) may come first."""
    c, alice, script = answered_by_alice("690.1", 0x30)
    if into == "extension":
        bob = phone_leg(c, "1002", 0x32, "690.3")
        steps = blind_to_bob(c, alice, bob)
        steps.insert(0, steps.pop(3))  # Newexten first
        script += [*steps, (80, newstate(bob, 6)), (200, hangup(c))]
        expected = Transfer(at(70), "blind", "1002", source="Alice Agent", answered_at=at(80))
    else:
        carol = agent_leg(c, "1003", 0x33, "690.4")
        script += [
            (70, newexten(c, "Queue", "bookings,t,,,300", exten="7001")),
            (70, join(c, "bookings")),
            (70, blind(alice, c, "7001")),
            (70, complete(c, alice, "support", 60, "transfer")),
            (70, hangup(alice)),
            (80, newchannel(carol)),
            (80, leave(c, "bookings")),
            (80, agent_ev("AgentConnect", c, carol, "bookings", ("HoldTime", "10"))),
            (200, complete(c, carol, "bookings", 120, "caller")),
            (200, hangup(c)),
        ]
        expected = Transfer(at(70), "blind", "7001", source="Alice Agent", answered_at=at(80))
    (r,) = ended(run(CallTracker(), script))
    assert r.transfers == (expected,)
    assert r.talk_seconds == 60.0 + 120.0
