"""CallTracker: calls answered across an AMI link drop (resync)."""

from __future__ import annotations

from test_call_tracker import (
    Chan,
    Snapshot,
    agent_ev,
    agent_leg,
    at,
    ended,
    ev,
    hangup,
    join,
    newchannel,
    run,
)
from test_call_tracker_transfer import answered_by_alice

from callcenter.asterisk.message import AmiMessage
from callcenter.calls.service import CallTracker


def listed(c: Chan, app: str, data: str, duration: str, bridge: str) -> AmiMessage:
    return ev(
        "CoreShowChannel",
        ("ActionID", "r1"),
        c.snap(),
        ("Application", app),
        ("ApplicationData", data),
        ("Duration", duration),
        ("BridgeId", bridge),
    )


def answered_during_gap(tracker: CallTracker, c: Chan, leg: Chan) -> None:
    """The link drops at +10; Alice answers at +20 (HoldTime 15); the resync at +40 shows the
    caller and her leg bridged and no QueueEntry."""
    snapshot = Snapshot(
        channels=(
            listed(c, "Queue", "general,t,,,300", "00:00:40", "b-9"),
            listed(leg, "AppQueue", "(Outgoing Line)", "00:00:20", "b-9"),
        ),
        queue_status=(ev("QueueParams", ("Queue", "general"), ("Strategy", "ringall")),),
    )
    tracker.reconcile(snapshot, at(40))


def completed_after_gap(
    c: Chan, leg: Chan, reason: str, *, hangup_at: int
) -> list[tuple[int, AmiMessage]]:
    """The agent's AgentComplete at +220 (held 15 s, talked 200 s), then the caller's hangup."""
    complete = agent_ev(
        "AgentComplete",
        c,
        leg,
        "general",
        ("HoldTime", "15"),
        ("TalkTime", "200"),
        ("Reason", reason),
    )
    return [(220, complete), (hangup_at, hangup(c))]


def test_answered_while_the_link_was_down_is_completed_not_abandoned() -> None:
    c = Chan("PJSIP/trunk-00000050", "950.1")
    leg = agent_leg(c, "1001", 0x51, "950.2")
    tracker = CallTracker()
    run(tracker, [(0, newchannel(c)), (5, join(c, "general"))])
    answered_during_gap(tracker, c, leg)
    live = tracker.get("950.1")
    assert live is not None
    assert live.queue_left_at == at(40)  # no QueueEntry: out of the queue (exact time unknown)
    effects = run(tracker, completed_after_gap(c, leg, "caller", hangup_at=220))
    (r,) = ended(effects)
    assert (r.end_reason, r.abandoned, r.abandon_stage, r.abandon_after_seconds) == (
        "completed",
        False,
        None,
        None,
    )
    assert (r.agent, r.agent_interface, r.answered_at) == ("Alice Agent", "PJSIP/1001", at(20))
    assert (r.wait_seconds, r.talk_seconds) == (15.0, 200.0)
    assert (r.queue, r.queue_joined_at, r.agents) == ("general", at(5), ("Alice Agent",))
    assert r.queue_left_at == at(20)  # the answer, once the AgentComplete tells when it was


def test_in_ivr_when_the_link_dropped_then_answered_is_completed() -> None:
    c = Chan("PJSIP/trunk-00000060", "960.1")
    leg = agent_leg(c, "1001", 0x61, "960.2")
    tracker = CallTracker()
    run(tracker, [(0, newchannel(c))])  # in the IVR; it joins 'general' at +5 during the gap
    answered_during_gap(tracker, c, leg)
    effects = run(tracker, completed_after_gap(c, leg, "agent", hangup_at=221))
    (r,) = ended(effects)
    assert (r.end_reason, r.abandoned, r.abandon_stage) == ("completed", False, None)
    assert (r.agent, r.answered_at, r.wait_seconds, r.talk_seconds) == (
        "Alice Agent",
        at(20),
        15.0,
        200.0,
    )
    # the queue stint is known from the AgentComplete alone: joined HoldTime before the answer
    assert (r.queue, r.queues, r.queue_joined_at, r.queue_left_at) == (
        "general",
        ("general",),
        at(5),
        at(20),
    )


def test_bridged_at_resync_and_hung_up_before_any_agent_event_is_completed() -> None:
    c = Chan("PJSIP/trunk-00000070", "970.1")
    leg = agent_leg(c, "1002", 0x71, "970.2")
    tracker = CallTracker()
    run(tracker, [(0, newchannel(c)), (5, join(c, "general"))])
    answered_during_gap(tracker, c, leg)
    (r,) = ended(run(tracker, [(50, hangup(c))]))
    assert (r.end_reason, r.abandoned, r.abandon_stage) == ("completed", False, None)


def test_member_gone_while_the_link_was_down_talks_no_longer_than_the_resync() -> None:
    """Alice (answered at 10) transferred the caller to a queue while the link was down (her
    AgentComplete lost): her leg is missing from the resync at 80, so her talk ends by then."""
    c, _alice, script = answered_by_alice("980.1", 0x80)
    tracker = CallTracker()
    run(tracker, script)
    c.context, c.exten = "agents", "7002"
    snapshot = Snapshot(
        channels=(listed(c, "Queue", "complaints,t,,,300", "00:01:20", ""),),
        queue_status=(),
    )
    tracker.reconcile(snapshot, at(80))
    (r,) = ended(run(tracker, [(200, hangup(c))]))
    assert r.talk_seconds == 70.0
