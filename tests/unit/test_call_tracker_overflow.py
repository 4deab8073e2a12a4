"""CallTracker: a caller re-queued (overflow after a queue timeout) waits from the first join."""

from __future__ import annotations

from test_call_tracker import (
    Chan,
    Script,
    abandon,
    agent_ev,
    agent_leg,
    at,
    ended,
    hangup,
    join,
    leave,
    newchannel,
    newexten,
    run,
)

from callcenter.calls.service import CallTracker


def overflowed(c: Chan) -> Script:
    """50 s in 'bookings', the queue times out, the dialplan sends the caller to 'general'."""
    return [
        (0, newchannel(c)),
        (5, join(c, "bookings")),
        (55, leave(c, "bookings")),  # queue timeout: QueueCallerLeave, no abandon
        (55, newexten(c, "Queue", "general", exten="overflow")),
        (55, join(c, "general")),
    ]


def test_overflow_answer_waits_from_the_first_queue_join() -> None:
    c = Chan("PJSIP/trunk-00000001", "700.1")
    alice = agent_leg(c, "1001", 1, "700.2")
    script = [
        *overflowed(c),
        (85, agent_ev("AgentConnect", c, alice, "general", ("HoldTime", "30"), ("RingTime", "3"))),
        (
            145,
            agent_ev(
                "AgentComplete", c, alice, "general", ("TalkTime", "60"), ("Reason", "caller")
            ),
        ),
        (145, hangup(c)),
    ]
    (r,) = ended(run(CallTracker(), script))
    assert (r.end_reason, r.agent, r.answered_at) == ("completed", "Alice Agent", at(85))
    # filed under the first queue, where the wait began: queue_joined_at + wait = answered_at
    assert (r.queue, r.queues, r.queue_joined_at) == ("bookings", ("bookings", "general"), at(5))
    assert r.wait_seconds == 80.0  # 50 s in bookings + HoldTime 30 in general


def test_overflow_abandon_waits_from_the_first_queue_join() -> None:
    c = Chan("PJSIP/trunk-00000002", "701.1")
    script = [*overflowed(c), (75, abandon(c, "general", 20)), (75, hangup(c))]
    (r,) = ended(run(CallTracker(), script))
    assert (r.end_reason, r.abandon_stage, r.queue) == ("abandoned", "queue", "bookings")
    assert (r.wait_seconds, r.abandon_after_seconds) == (70.0, 70.0)


def test_overflow_hangup_without_abandon_event_waits_from_the_first_queue_join() -> None:
    c = Chan("PJSIP/trunk-00000003", "702.1")
    (r,) = ended(run(CallTracker(), [*overflowed(c), (75, hangup(c))]))
    assert (r.end_reason, r.abandon_stage) == ("abandoned", "queue")
    assert (r.wait_seconds, r.abandon_after_seconds) == (70.0, 70.0)
