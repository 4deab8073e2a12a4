"""Talk time across an AMI link gap: never more than the call lasted (found by fuzzing the
tracker with link drops)."""

from __future__ import annotations

from test_call_tracker import (
    Snapshot,
    agent_ev,
    agent_leg,
    at,
    bridge_enter,
    ended,
    ev,
    hangup,
    hangup_request,
    leave,
    newchannel,
    newexten,
    newstate,
    run,
)
from test_call_tracker_resync import listed
from test_call_tracker_transfer import answered_by_alice, blind, complete, phone_leg

from callcenter.calls.service import CallTracker


def test_a_member_leg_hanging_up_after_the_resync_ends_its_talk() -> None:
    # Alice's AgentComplete is lost in the gap; her leg is still listed at the resync and
    # hangs up right after: her talk ends there, not at the caller's hangup
    c, alice, script = answered_by_alice("650.1", 0xC0)
    bob = phone_leg(c, "1002", 0xC3, "650.3")
    tracker = CallTracker()
    run(tracker, script)
    c.state = 6
    alice.state = 6
    tracker.reconcile(
        Snapshot(
            channels=(
                listed(c, "Queue", "sales,t,,,300", "00:01:00", ""),
                listed(alice, "AppQueue", "(Outgoing Line)", "00:00:50", "b-1"),
            ),
            queue_status=(ev("QueueParams", ("Queue", "sales"), ("Strategy", "ringall")),),
        ),
        at(60),
    )
    effects = run(
        tracker,
        [
            (60, hangup(alice)),
            (95, newchannel(bob)),
            (95, agent_ev("AgentCalled", c, bob, "sales")),
            (100, newstate(bob, 6)),
            (100, leave(c, "sales")),
            (100, agent_ev("AgentConnect", c, bob, "sales", ("HoldTime", "40"), ("RingTime", "5"))),
            (100, bridge_enter(bob, "b-3")),
            (160, hangup_request(c)),
            (160, complete(c, bob, "sales", 60, "caller")),
            (160, hangup(bob)),
            (160, hangup(c)),
        ],
    )
    (record,) = ended(effects)
    assert record.talk_seconds == 50 + 60


def test_a_member_timed_as_a_transfer_target_is_counted_once() -> None:
    # the gap loses the second queue's join and Carol's AgentConnect: her BridgeEnter looks
    # like a transfer target answering, then her AgentComplete brings her TalkTime
    c, alice, script = answered_by_alice("604.1", 0x70)
    carol = agent_leg(c, "1003", 0x72, "604.3")
    tracker = CallTracker()
    run(
        tracker,
        [
            *script,
            (70, blind(alice, c, "7001")),
            (70, complete(c, alice, "support", 60, "transfer")),
            (70, hangup(alice)),
            (70, newexten(c, "Queue", "sales,t,,,300", exten="7001")),
        ],
    )
    c.state = 6
    carol.state = 6
    tracker.reconcile(
        Snapshot(
            channels=(
                listed(c, "Queue", "sales,t,,,300", "00:01:40", "b-3"),
                listed(carol, "AppQueue", "(Outgoing Line)", "00:00:01", "b-3"),
            ),
            queue_status=(ev("QueueParams", ("Queue", "sales"), ("Strategy", "ringall")),),
        ),
        at(100),
    )
    effects = run(
        tracker,
        [
            (100, bridge_enter(carol, "b-3")),
            (160, complete(c, carol, "sales", 60, "caller")),
            (160, hangup(c)),
        ],
    )
    (record,) = ended(effects)
    assert record.talk_seconds == 60 + 60
