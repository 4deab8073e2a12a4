"""CallTracker: originated calls (callbacks) are answered when the far end is reached."""

from __future__ import annotations

import pytest
from test_call_tracker import (
    Chan,
    Script,
    agent_ev,
    agent_leg,
    at,
    bridge_enter,
    ended,
    hangup,
    hangup_request,
    join,
    newchannel,
    newexten,
    newstate,
    run,
)
from test_call_tracker_transfer import blind

from callcenter.calls.model import Transfer
from callcenter.calls.service import CallTracker


def callback(uid: str) -> tuple[Chan, Chan, Script]:
    """deploy/asterisk/extensions.conf [callbacks]: AMI Originate Channel=PJSIP/1001
    Context=callbacks Exten=<customer>; the agent's phone is the first channel and the customer
    is dialled once the agent answers."""
    agent = Chan(
        "PJSIP/1001-000000a1", uid, num="", name="", context="callbacks",
        exten="13800138000", state=0,
    )  # fmt: skip
    customer = Chan(
        "PJSIP/trunk-000000a2", uid + "1", uid, num="13800138000", name="",
        context="callbacks", exten="13800138000", state=0,
    )  # fmt: skip
    script: Script = [
        (0, newchannel(agent)),
        (4, newstate(agent, 6)),  # the agent picks up
        (4, newexten(agent, "Dial", "PJSIP/13800138000@trunk,60")),
        (4, newchannel(customer)),
    ]
    return agent, customer, script


def test_callback_the_customer_never_answers_is_failed_not_answered() -> None:
    agent, customer, script = callback("901.1")
    tracker = CallTracker()
    run(tracker, script)
    live = tracker.get("901.1")
    assert live is not None and live.answered_at is None  # only the agent's own phone is up
    script = [
        (64, hangup(customer, 19, "No Answer")),
        (64, newexten(agent, "Hangup", "")),
        (64, hangup(agent)),
    ]
    (r,) = ended(run(tracker, script))
    assert (r.direction, r.end_reason, r.answered_at, r.talk_seconds) == (
        "outbound",
        "failed",
        None,
        None,
    )
    assert r.abandoned is False


def test_callback_answered_when_the_customer_leg_goes_up() -> None:
    agent, customer, script = callback("902.1")
    script += [
        (10, newstate(customer, 6)),
        (10, bridge_enter(agent)),
        (10, bridge_enter(customer)),
        (70, hangup(customer)),
        (70, hangup(agent)),
    ]
    (r,) = ended(run(CallTracker(), script))
    assert (r.end_reason, r.answered_at, r.talk_seconds) == ("completed", at(10), 60.0)


def test_callback_answered_when_the_customer_leg_is_bridged() -> None:
    agent, customer, script = callback("903.1")
    script += [(12, bridge_enter(customer)), (70, hangup(agent))]
    (r,) = ended(run(CallTracker(), script))
    assert (r.end_reason, r.answered_at, r.talk_seconds) == ("completed", at(12), 58.0)


def originated_to_queue(c: Chan, alice: Chan) -> Script:
    """The system rings the customer first; on answer the dialplan queues them in 'general'."""
    return [
        (0, newchannel(c)),
        (8, newstate(c, 6)),  # the customer picks up
        (9, newexten(c, "Queue", "general", exten="s")),
        (9, join(c, "general")),
        (49, newchannel(alice)),
    ]


def test_originated_call_answered_through_a_queue_gets_the_agent() -> None:
    c = Chan("PJSIP/trunk-00000030", "800.1", context="callback", exten="s", state=0)
    alice = agent_leg(c, "1001", 0x31, "800.2")
    script = [
        *originated_to_queue(c, alice),
        (49, agent_ev("AgentConnect", c, alice, "general", ("HoldTime", "40"), ("RingTime", "4"))),
        (
            169,
            agent_ev(
                "AgentComplete", c, alice, "general", ("TalkTime", "120"), ("Reason", "caller")
            ),
        ),
        (169, hangup(c)),
    ]
    (r,) = ended(run(CallTracker(), script))
    assert (r.direction, r.end_reason, r.queue) == ("outbound", "completed", "general")
    assert (r.agent, r.agent_interface, r.answered_at) == ("Alice Agent", "PJSIP/1001", at(49))
    assert (r.wait_seconds, r.talk_seconds) == (40.0, 120.0)


def test_agent_leg_up_before_agent_connect_still_sets_the_agent_and_wait() -> None:
    c = Chan("PJSIP/trunk-00000031", "801.1", context="callback", exten="s", state=0)
    alice = agent_leg(c, "1001", 0x32, "801.2")
    script = [
        *originated_to_queue(c, alice),
        (52, newstate(alice, 6)),  # the member answers: its leg goes up first
        (52, agent_ev("AgentConnect", c, alice, "general", ("HoldTime", "43"), ("RingTime", "3"))),
        (100, hangup(c)),
    ]
    (r,) = ended(run(CallTracker(), script))
    assert (r.end_reason, r.answered_at) == ("completed", at(52))
    assert (r.agent, r.wait_seconds, r.talk_seconds) == ("Alice Agent", 43.0, 48.0)


@pytest.mark.parametrize("answered", [True, False], ids=["answered", "unanswered"])
def test_transferred_callback_goes_on_with_the_customer(answered: bool) -> None:
    """The agent blind-transfers the customer of a callback to 1002 and hangs up: the call (its
    first channel is the agent's phone) goes on until the customer's hangup."""
    agent, customer, script = callback("905.1")
    bob = agent_leg(customer, "1002", 0xA3, "905.3")
    script += [
        (10, newstate(customer, 6)),
        (10, bridge_enter(agent)),
        (10, bridge_enter(customer)),
        (60, blind(agent, customer, "1002")),
        (60, hangup(agent)),
        (60, newexten(customer, "Dial", "PJSIP/1002,30", exten="1002")),
        (61, newchannel(bob)),
    ]
    if answered:
        script += [
            (70, newstate(bob, 6)),
            (70, bridge_enter(customer, "b-2")),
            (70, bridge_enter(bob, "b-2")),
            (130, hangup_request(bob)),
            (130, hangup(bob)),
            (130, hangup(customer)),
        ]
    else:
        script += [(90, hangup_request(customer)), (90, hangup(bob, 0, "")), (90, hangup(customer))]
    tracker = CallTracker()
    (r,) = ended(run(tracker, script))
    assert (r.uniqueid, r.direction, r.end_reason) == ("905.1", "outbound", "completed")
    assert r.ended_at == at(130 if answered else 90)
    assert r.talk_seconds == (50.0 + 60.0 if answered else 50.0)  # the agent's, then Bob's
    assert r.transfers == (
        Transfer(
            at(60), "blind", "1002", source="PJSIP/1001", answered_at=at(70) if answered else None
        ),
    )
    assert (r.hangup_cause, len(tracker)) == (16, 0)


def test_callback_agent_hanging_up_without_a_transfer_ends_it() -> None:
    agent, customer, script = callback("906.1")
    script += [
        (10, newstate(customer, 6)),
        (10, bridge_enter(agent)),
        (10, bridge_enter(customer)),
        (60, hangup(agent)),
        (61, hangup(customer)),
    ]
    (r,) = ended(run(CallTracker(), script))
    assert (r.ended_at, r.talk_seconds, r.transfers) == (at(60), 50.0, ())
