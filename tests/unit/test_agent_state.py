"""AgentStateTracker: agent and queue state from transcripts 04/05/08 and synthetic flows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ami_support import load_raw, requires_raw

from callcenter.agents.model import AgentState
from callcenter.agents.service import (
    AgentEffect,
    AgentStateChanged,
    AgentStateTracker,
    QueueStatsChanged,
)
from callcenter.asterisk.events import decode_event
from callcenter.asterisk.message import AmiMessage

BASE = datetime(2024, 5, 14, 10, 15, 2, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def feed(tracker: AgentStateTracker, messages: list[AmiMessage]) -> list[tuple[int, AgentEffect]]:
    out: list[tuple[int, AgentEffect]] = []
    for i, m in enumerate(messages):
        ev = decode_event(m)
        if ev is not None:
            out.extend((i, e) for e in tracker.apply(ev, at(i)))
    return out


def statuses(effects: list[tuple[int, AgentEffect]], interface: str) -> list[str]:
    """The distinct successive statuses an agent went through."""
    out: list[str] = []
    for _, e in effects:
        if not isinstance(e, AgentStateChanged) or e.agent.interface != interface:
            continue
        if not out or out[-1] != e.agent.status:
            out.append(e.agent.status)
    return out


def member(
    queue: str,
    interface: str,
    name: str,
    *,
    event: str = "QueueMemberStatus",
    status: int = 1,
    paused: bool = False,
    reason: str = "",
    in_call: bool = False,
    wrapup: int = 0,
) -> AmiMessage:
    return AmiMessage(
        (
            ("Event", event),
            ("Privilege", "agent,all"),
            ("Queue", queue),
            ("MemberName", name),
            ("Interface", interface),
            ("StateInterface", interface),
            ("Membership", "dynamic"),
            ("Penalty", "0"),
            ("CallsTaken", "3"),
            ("LastCall", "0"),
            ("LastPause", "0"),
            ("LoginTime", "1715670000"),
            ("InCall", "1" if in_call else "0"),
            ("Status", str(status)),
            ("Paused", "1" if paused else "0"),
            ("PausedReason", reason),
            ("Ringinuse", "0"),
            ("Wrapuptime", str(wrapup)),
        )
    )


def caller_ev(event: str, queue: str, uniqueid: str, *extra: tuple[str, str]) -> AmiMessage:
    return AmiMessage(
        (
            ("Event", event),
            ("Channel", f"PJSIP/trunk-{uniqueid}"),
            ("CallerIDNum", "15550001111"),
            ("CallerIDName", "周杰"),
            ("Uniqueid", uniqueid),
            ("Linkedid", uniqueid),
            ("Queue", queue),
            *extra,
        )
    )


def agent_ev(
    event: str, queue: str, uniqueid: str, interface: str, name: str, *extra: tuple[str, str]
) -> AmiMessage:
    return AmiMessage(
        (
            ("Event", event),
            ("Channel", f"PJSIP/trunk-{uniqueid}"),
            ("Uniqueid", uniqueid),
            ("Linkedid", uniqueid),
            ("DestChannel", f"{interface}-00000001"),
            ("DestUniqueid", uniqueid + "9"),
            ("DestLinkedid", uniqueid),
            ("Queue", queue),
            ("Interface", interface),
            ("MemberName", name),
            *extra,
        )
    )


def apply_all(
    tracker: AgentStateTracker, script: Sequence[tuple[float, AmiMessage]]
) -> list[AgentEffect]:
    out: list[AgentEffect] = []
    for seconds, m in script:
        ev = decode_event(m)
        assert ev is not None, m.name
        out.extend(tracker.apply(ev, at(seconds)))
    return out


def state(tracker: AgentStateTracker, interface: str) -> AgentState:
    s = tracker.agent(interface)
    assert s is not None
    return s


@dataclass(frozen=True)
class Snapshot:
    channels: tuple[AmiMessage, ...]
    queue_status: tuple[AmiMessage, ...]


# ---------------------------------------------------------------------------------------------
# Transcripts


@requires_raw
def test_transcript_08_members_pause_and_removal() -> None:
    tracker = AgentStateTracker()
    effects = feed(tracker, load_raw("08_lists_command_queue_actions.ast.raw"))
    assert statuses(effects, "PJSIP/1001") == ["available"]
    assert statuses(effects, "PJSIP/1002") == ["logged_out"]  # device 5 UNAVAILABLE
    # QueueAdd -> available; QueuePause lunch -> paused; unpause; QueueRemove -> logged out
    assert statuses(effects, "PJSIP/1003") == ["available", "paused", "available", "logged_out"]
    paused = next(
        e.agent
        for _, e in effects
        if isinstance(e, AgentStateChanged) and e.agent.status == "paused"
    )
    assert (paused.name, paused.paused_reason) == ("Carol Agent", "lunch")
    bob = state(tracker, "PJSIP/1002")
    assert (bob.paused_reason, bob.device_status, bob.calls_taken) == ("lunch", 5, 4)
    carol = state(tracker, "PJSIP/1003")
    assert (carol.status, carol.queues) == ("logged_out", ())
    stats = tracker.queue("support", at(100))
    assert stats is not None
    assert (stats.strategy, stats.completed, stats.abandoned, stats.service_level_perf) == (
        "ringall",
        13,
        2,
        92.3,
    )
    # the QueueEntry list item: one caller who had waited 41 s at message 4
    assert stats.waiting == 1
    assert stats.callers[0].uniqueid == "1715682600.50"
    assert stats.longest_wait_seconds == 100 - 4 + 41
    assert dict(stats.members) == {
        "logged_out": 1,
        "available": 1,
        "paused": 0,
        "ringing": 0,
        "on_call": 0,
        "wrap_up": 0,
    }


@requires_raw
def test_transcript_04_ringing_on_call_wrap_up_available() -> None:
    tracker = AgentStateTracker(default_wrapup_seconds=30)
    effects = feed(tracker, load_raw("04_inbound_ivr_queue_agent_call.ast.raw"))
    assert statuses(effects, "PJSIP/1001") == ["ringing", "on_call", "wrap_up"]
    alice = state(tracker, "PJSIP/1001")
    assert alice.wrap_up_until == at(49 + 30)  # AgentComplete at message 49
    assert alice.calls_taken == 13
    assert tracker.tick(at(78)) == []
    done = tracker.tick(at(79))
    assert [type(e) for e in done] == [AgentStateChanged, QueueStatsChanged]
    first = done[0]
    assert isinstance(first, AgentStateChanged)
    assert (first.previous, first.agent.status, first.agent.since) == (
        "wrap_up",
        "available",
        at(79),
    )
    queue_sizes = [e.stats.waiting for _, e in effects if isinstance(e, QueueStatsChanged)]
    assert queue_sizes[0] == 1 and queue_sizes[-1] == 0


@requires_raw
def test_transcript_04_without_wrap_up_goes_straight_to_available() -> None:
    tracker = AgentStateTracker()
    effects = feed(tracker, load_raw("04_inbound_ivr_queue_agent_call.ast.raw"))
    assert statuses(effects, "PJSIP/1001") == ["ringing", "on_call", "available"]


@requires_raw
def test_transcript_05_abandon_while_ringing() -> None:
    tracker = AgentStateTracker(default_wrapup_seconds=30)
    effects = feed(tracker, load_raw("05_queue_abandon.ast.raw"))
    assert statuses(effects, "PJSIP/1002") == ["ringing", "available"]
    bob = state(tracker, "PJSIP/1002")
    assert (bob.call_uniqueid, bob.wrap_up_until) == (None, None)  # no call: no wrap-up
    stats = tracker.queue("support", at(40))
    assert stats is not None
    assert stats.waiting == 0


# ---------------------------------------------------------------------------------------------
# Synthetic


def test_ringall_one_answers_the_other_stops_ringing() -> None:
    tracker = AgentStateTracker()
    script = [
        (0, member("support", "PJSIP/1001", "Alice")),
        (0, member("support", "PJSIP/1002", "Bob")),
        (1, caller_ev("QueueCallerJoin", "support", "1.1", ("Position", "1"), ("Count", "1"))),
        (2, agent_ev("AgentCalled", "support", "1.1", "PJSIP/1001", "Alice")),
        (2, agent_ev("AgentCalled", "support", "1.1", "PJSIP/1002", "Bob")),
    ]
    apply_all(tracker, script)
    assert [state(tracker, i).status for i in ("PJSIP/1001", "PJSIP/1002")] == ["ringing"] * 2
    assert state(tracker, "PJSIP/1001").call_uniqueid == "1.1"
    apply_all(tracker, [(9, caller_ev("QueueCallerLeave", "support", "1.1"))])
    apply_all(
        tracker,
        [(9, agent_ev("AgentConnect", "support", "1.1", "PJSIP/1002", "Bob", ("HoldTime", "8")))],
    )
    assert state(tracker, "PJSIP/1001").status == "available"
    bob = state(tracker, "PJSIP/1002")
    assert (bob.status, bob.call_uniqueid, bob.call_queue) == ("on_call", "1.1", "support")
    stats = tracker.queue("support", at(9))
    assert stats is not None
    assert stats.members["on_call"] == 1
    assert stats.members["available"] == 1


def test_ring_no_answer_clears_ringing() -> None:
    tracker = AgentStateTracker()
    apply_all(
        tracker,
        [
            (0, member("support", "PJSIP/1001", "Alice")),
            (1, agent_ev("AgentCalled", "support", "2.1", "PJSIP/1001", "Alice")),
        ],
    )
    assert state(tracker, "PJSIP/1001").status == "ringing"
    effects = apply_all(
        tracker,
        [
            (
                16,
                agent_ev(
                    "AgentRingNoAnswer",
                    "support",
                    "2.1",
                    "PJSIP/1001",
                    "Alice",
                    ("RingTime", "15000"),
                ),
            )
        ],
    )
    assert state(tracker, "PJSIP/1001").status == "available"
    assert any(isinstance(e, AgentStateChanged) and e.previous == "ringing" for e in effects)


def test_autopause_after_ring_no_answer_shows_paused_with_reason() -> None:
    tracker = AgentStateTracker()
    apply_all(
        tracker,
        [
            (0, member("support", "PJSIP/1001", "Alice")),
            (0, member("sales", "PJSIP/1001", "Alice")),
            (
                5,
                member(
                    "support",
                    "PJSIP/1001",
                    "Alice",
                    event="QueueMemberPause",
                    paused=True,
                    reason="Auto-Pause",
                ),
            ),
        ],
    )
    # paused in one queue only: still takes calls from the other
    assert state(tracker, "PJSIP/1001").status == "available"
    apply_all(
        tracker,
        [
            (
                6,
                member(
                    "sales",
                    "PJSIP/1001",
                    "Alice",
                    event="QueueMemberPause",
                    paused=True,
                    reason="Auto-Pause",
                ),
            )
        ],
    )
    alice = state(tracker, "PJSIP/1001")
    assert (alice.status, alice.paused_reason, alice.since) == ("paused", "Auto-Pause", at(6))
    assert [m.queue for m in alice.queues] == ["sales", "support"]


def test_wrap_up_uses_member_then_queue_then_default() -> None:
    tracker = AgentStateTracker(default_wrapup_seconds=5, wrapup_seconds={"vip": 60})
    script = [
        (0, member("support", "PJSIP/1001", "Alice", wrapup=20)),
        (0, member("vip", "PJSIP/1002", "Bob")),
        (0, member("sales", "PJSIP/1003", "Carol")),
    ]
    for n, (queue, iface, name) in enumerate(
        [
            ("support", "PJSIP/1001", "Alice"),
            ("vip", "PJSIP/1002", "Bob"),
            ("sales", "PJSIP/1003", "Carol"),
        ]
    ):
        uid = f"3.{n}"
        script += [
            (1, agent_ev("AgentConnect", queue, uid, iface, name, ("HoldTime", "1"))),
            (
                10,
                agent_ev(
                    "AgentComplete",
                    queue,
                    uid,
                    iface,
                    name,
                    ("TalkTime", "9"),
                    ("Reason", "caller"),
                ),
            ),
        ]
    apply_all(tracker, script)
    until = {i: state(tracker, i).wrap_up_until for i in ("PJSIP/1001", "PJSIP/1002", "PJSIP/1003")}
    assert until == {"PJSIP/1001": at(30), "PJSIP/1002": at(70), "PJSIP/1003": at(15)}
    assert all(state(tracker, i).status == "wrap_up" for i in until)
    tracker.tick(at(15))
    assert [state(tracker, i).status for i in until] == ["wrap_up", "wrap_up", "available"]
    # an unrelated event also ends the wrap-ups that are due
    apply_all(tracker, [(31, caller_ev("QueueCallerJoin", "sales", "3.9", ("Position", "1")))])
    assert [state(tracker, i).status for i in until] == ["available", "wrap_up", "available"]


def test_duplicate_complete_does_not_restart_wrap_up() -> None:
    tracker = AgentStateTracker(default_wrapup_seconds=10)
    complete = agent_ev(
        "AgentComplete",
        "support",
        "4.1",
        "PJSIP/1001",
        "Alice",
        ("TalkTime", "9"),
        ("Reason", "agent"),
    )
    apply_all(
        tracker,
        [
            (0, member("support", "PJSIP/1001", "Alice")),
            (1, agent_ev("AgentConnect", "support", "4.1", "PJSIP/1001", "Alice")),
            (10, complete),
            (15, complete),
        ],
    )
    assert state(tracker, "PJSIP/1001").wrap_up_until == at(20)


def test_device_states_map_to_statuses() -> None:
    tracker = AgentStateTracker()
    seen = []
    for n, device in enumerate([1, 6, 2, 8, 3, 5, 4, 0, 7]):
        apply_all(tracker, [(n, member("support", "PJSIP/1001", "Alice", status=device))])
        seen.append(state(tracker, "PJSIP/1001").status)
    assert seen == [
        "available",
        "ringing",
        "on_call",
        "on_call",
        "on_call",
        "logged_out",
        "logged_out",
        "available",
        "on_call",
    ]


def test_queue_waiting_callers_and_longest_wait() -> None:
    tracker = AgentStateTracker()
    effects = apply_all(
        tracker,
        [
            (0, caller_ev("QueueCallerJoin", "support", "5.1", ("Position", "1"))),
            (10, caller_ev("QueueCallerJoin", "support", "5.2", ("Position", "2"))),
            (10, caller_ev("QueueCallerJoin", "support", "5.2", ("Position", "2"))),  # duplicate
        ],
    )
    assert [e.stats.waiting for e in effects if isinstance(e, QueueStatsChanged)] == [1, 2]
    stats = tracker.queue("support", at(30))
    assert stats is not None
    assert (stats.waiting, stats.longest_wait_seconds) == (2, 30.0)
    assert [c.caller_name for c in stats.callers] == ["周杰", "周杰"]
    apply_all(
        tracker, [(31, caller_ev("QueueCallerAbandon", "support", "5.1", ("HoldTime", "31")))]
    )
    # a hangup without any QueueCallerLeave still removes the caller
    apply_all(
        tracker,
        [
            (
                32,
                AmiMessage(
                    (("Event", "Hangup"), ("Uniqueid", "5.2"), ("Linkedid", "5.2"), ("Cause", "16"))
                ),
            )
        ],
    )
    stats = tracker.queue("support", at(40))
    assert stats is not None
    assert (stats.waiting, stats.longest_wait_seconds, stats.callers) == (0, 0.0, ())
    assert tracker.queue("nosuch", at(40)) is None
    assert [q.queue for q in tracker.queues(at(40))] == ["support"]


def test_reconcile_replaces_members_and_waiting_callers() -> None:
    tracker = AgentStateTracker()
    apply_all(
        tracker,
        [
            (0, member("support", "PJSIP/1001", "Alice")),
            (0, member("support", "PJSIP/1009", "Gone Agent")),
            (1, caller_ev("QueueCallerJoin", "support", "6.1", ("Position", "1"))),
            (2, agent_ev("AgentCalled", "support", "6.1", "PJSIP/1001", "Alice")),
        ],
    )
    snapshot = Snapshot(
        channels=(),
        queue_status=(
            AmiMessage(
                (
                    ("Event", "QueueParams"),
                    ("Queue", "support"),
                    ("Strategy", "rrmemory"),
                    ("Completed", "7"),
                    ("ActionID", "qs"),
                )
            ),
            AmiMessage(
                (
                    ("Event", "QueueMember"),
                    ("Queue", "support"),
                    ("Name", "Alice"),
                    ("Location", "PJSIP/1001"),
                    ("Status", "2"),
                    ("InCall", "1"),
                    ("Paused", "0"),
                    ("ActionID", "qs"),
                )
            ),
            AmiMessage(
                (
                    ("Event", "QueueEntry"),
                    ("Queue", "support"),
                    ("Position", "1"),
                    ("Channel", "PJSIP/trunk-7"),
                    ("Uniqueid", "6.7"),
                    ("CallerIDNum", "unknown"),
                    ("CallerIDName", "unknown"),
                    ("Wait", "12"),
                    ("ActionID", "qs"),
                )
            ),
        ),
    )
    effects = tracker.reconcile(snapshot, at(100))
    assert state(tracker, "PJSIP/1001").status == "on_call"  # from device state + InCall
    assert state(tracker, "PJSIP/1001").call_uniqueid is None  # stale ringing flag dropped
    gone = state(tracker, "PJSIP/1009")
    assert (gone.status, gone.queues) == ("logged_out", ())
    stats = tracker.queue("support", at(100))
    assert stats is not None
    assert [(c.uniqueid, c.joined_at, c.caller_number) for c in stats.callers] == [
        ("6.7", at(88), "")
    ]
    assert (stats.strategy, stats.completed) == ("rrmemory", 7)
    assert any(isinstance(e, QueueStatsChanged) for e in effects)
    assert tracker.reconcile(snapshot, at(100)) == [
        e for e in tracker.reconcile(snapshot, at(100)) if isinstance(e, QueueStatsChanged)
    ]


def test_unknown_events_and_repeated_status_emit_nothing() -> None:
    tracker = AgentStateTracker()
    first = apply_all(tracker, [(0, member("support", "PJSIP/1001", "Alice"))])
    assert [type(e) for e in first] == [AgentStateChanged, QueueStatsChanged]
    assert apply_all(tracker, [(1, member("support", "PJSIP/1001", "Alice"))]) == []
    ignored = AmiMessage((("Event", "Newchannel"), ("Uniqueid", "1.1"), ("Linkedid", "1.1")))
    decoded = decode_event(ignored)
    assert decoded is not None
    assert tracker.apply(decoded, at(2)) == []
    assert [a.interface for a in tracker.agents()] == ["PJSIP/1001"]


def test_bounded_agents_and_queues() -> None:
    tracker = AgentStateTracker(max_agents=2, max_queues=1)
    apply_all(
        tracker,
        [
            (0, member("support", "PJSIP/1", "A")),
            (0, member("support", "PJSIP/2", "B", event="QueueMemberRemoved")),
            (0, member("other", "PJSIP/9", "Z")),  # a second queue: over the cap, ignored
            (1, member("support", "PJSIP/3", "C")),  # pushes out the logged-out agent B
        ],
    )
    assert [a.interface for a in tracker.agents()] == ["PJSIP/1", "PJSIP/3"]
    assert [q.queue for q in tracker.queues(at(1))] == ["support"]


def test_caller_hangup_without_agent_complete_ends_the_talk() -> None:
    tracker = AgentStateTracker(default_wrapup_seconds=10)
    apply_all(
        tracker,
        [
            (0, member("support", "PJSIP/1001", "Alice")),
            (1, agent_ev("AgentConnect", "support", "7.1", "PJSIP/1001", "Alice")),
        ],
    )
    assert state(tracker, "PJSIP/1001").status == "on_call"
    hangup = AmiMessage((("Event", "Hangup"), ("Uniqueid", "7.1"), ("Linkedid", "7.1")))
    apply_all(tracker, [(50, hangup)])
    alice = state(tracker, "PJSIP/1001")
    assert (alice.status, alice.wrap_up_until, alice.call_uniqueid) == ("wrap_up", at(60), None)


def test_agent_dump_ends_the_call_without_wrap_up() -> None:
    tracker = AgentStateTracker(default_wrapup_seconds=10)
    apply_all(
        tracker,
        [
            (0, member("support", "PJSIP/1001", "Alice")),
            (1, agent_ev("AgentConnect", "support", "8.1", "PJSIP/1001", "Alice")),
            (2, agent_ev("AgentDump", "support", "8.1", "PJSIP/1001", "Alice")),
        ],
    )
    alice = state(tracker, "PJSIP/1001")
    assert (alice.status, alice.wrap_up_until) == ("available", None)
