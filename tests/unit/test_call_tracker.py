"""CallTracker: real transcript streams and synthetic call flows -> call records."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from ami_support import load_raw, requires_raw
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.asterisk.events import decode_event, is_tracked_variable
from callcenter.asterisk.message import AmiMessage
from callcenter.calls.model import CallRecord, Transfer
from callcenter.calls.service import (
    AgentAnswered,
    AgentFinished,
    AgentNoAnswer,
    AgentRinging,
    CallEffect,
    CallEnded,
    CallStarted,
    CallTracker,
    CallUpdated,
)

BASE = datetime(2024, 5, 14, 10, 15, 2, tzinfo=UTC)


def feed_raw(tracker: CallTracker, name: str) -> list[tuple[int, CallEffect]]:
    """Message i arrives at BASE + i seconds."""
    out: list[tuple[int, CallEffect]] = []
    for i, m in enumerate(load_raw(name)):
        ev = decode_event(m)
        if ev is not None:
            out.extend((i, e) for e in tracker.apply(ev, BASE + timedelta(seconds=i)))
    return out


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


# ---------------------------------------------------------------------------------------------
# Synthetic AMI messages


@dataclass
class Chan:
    channel: str
    uniqueid: str
    linkedid: str = ""
    num: str = "15551234567"
    name: str = "John Smith"
    context: str = "from-trunk"
    exten: str = "5551000"
    state: int = 4

    def __post_init__(self) -> None:
        self.linkedid = self.linkedid or self.uniqueid

    def snap(self, prefix: str = "") -> list[tuple[str, str]]:
        return [
            (prefix + "Channel", self.channel),
            (prefix + "ChannelState", str(self.state)),
            (prefix + "ChannelStateDesc", "Up" if self.state == 6 else "Ring"),
            (prefix + "CallerIDNum", self.num or "<unknown>"),
            (prefix + "CallerIDName", self.name or "<unknown>"),
            (prefix + "ConnectedLineNum", "<unknown>"),
            (prefix + "ConnectedLineName", "<unknown>"),
            (prefix + "Language", "en"),
            (prefix + "AccountCode", ""),
            (prefix + "Context", self.context),
            (prefix + "Exten", self.exten),
            (prefix + "Priority", "1"),
            (prefix + "Uniqueid", self.uniqueid),
            (prefix + "Linkedid", self.linkedid),
        ]


def ev(name: str, *parts: list[tuple[str, str]] | tuple[str, str]) -> AmiMessage:
    headers: list[tuple[str, str]] = [("Event", name), ("Privilege", "call,all")]
    for p in parts:
        if isinstance(p, list):
            headers.extend(p)
        else:
            headers.append(p)
    return AmiMessage(tuple(headers))


def newchannel(c: Chan) -> AmiMessage:
    return ev("Newchannel", c.snap())


def newstate(c: Chan, state: int) -> AmiMessage:
    c.state = state
    return ev("Newstate", c.snap())


def varset(c: Chan, variable: str, value: str) -> AmiMessage:
    return ev("VarSet", c.snap(), ("Variable", variable), ("Value", value))


def newexten(c: Chan, app: str, data: str = "", exten: str | None = None) -> AmiMessage:
    if exten is not None:
        c.exten = exten
    return ev("Newexten", c.snap(), ("Extension", c.exten), ("Application", app), ("AppData", data))


def callerid(c: Chan, num: str, name: str) -> AmiMessage:
    c.num, c.name = num, name
    return ev("NewCallerid", c.snap(), ("CID-CallingPres", "0 (Presentation Allowed)"))


def hangup_request(c: Chan, cause: int = 16) -> AmiMessage:
    return ev("HangupRequest", c.snap(), ("Cause", str(cause)))


def soft_hangup_request(c: Chan) -> AmiMessage:
    return ev("SoftHangupRequest", c.snap(), ("Cause", "16"))


def hangup(c: Chan, cause: int = 16, text: str = "Normal Clearing") -> AmiMessage:
    return ev("Hangup", c.snap(), ("Cause", str(cause)), ("Cause-txt", text))


def agi(c: Chan, command: str) -> AmiMessage:
    return ev("AGIExecStart", c.snap(), ("CommandId", "42"), ("Command", command))


def join(c: Chan, queue: str, position: int = 1) -> AmiMessage:
    return ev(
        "QueueCallerJoin", c.snap(), ("Queue", queue), ("Position", str(position)), ("Count", "1")
    )


def leave(c: Chan, queue: str) -> AmiMessage:
    return ev("QueueCallerLeave", c.snap(), ("Queue", queue), ("Position", "1"), ("Count", "0"))


def abandon(c: Chan, queue: str, hold: int) -> AmiMessage:
    return ev(
        "QueueCallerAbandon",
        c.snap(),
        ("Queue", queue),
        ("Position", "1"),
        ("OriginalPosition", "1"),
        ("HoldTime", str(hold)),
    )


def agent_ev(name: str, c: Chan, leg: Chan, queue: str, *extra: tuple[str, str]) -> AmiMessage:
    iface = leg.channel.rsplit("-", 1)[0]
    member = {"PJSIP/1001": "Alice Agent", "PJSIP/1002": "Bob Agent"}.get(iface, "Carol Agent")
    return ev(
        name,
        c.snap(),
        leg.snap("Dest"),
        ("Queue", queue),
        ("Interface", iface),
        ("MemberName", member),
        *extra,
    )


def bridge_enter(c: Chan, bridge: str = "b-1") -> AmiMessage:
    return ev("BridgeEnter", ("BridgeUniqueid", bridge), ("BridgeNumChannels", "1"), c.snap())


def agent_leg(caller: Chan, endpoint: str, n: int, uniqueid: str) -> Chan:
    return Chan(
        f"PJSIP/{endpoint}-{n:08x}",
        uniqueid,
        caller.linkedid,
        num="",
        name="",
        context="from-internal",
        exten="s",
        state=0,
    )


Script = list[tuple[float, AmiMessage]]


def run(tracker: CallTracker, script: Script) -> list[CallEffect]:
    out: list[CallEffect] = []
    for seconds, m in script:
        decoded = decode_event(m)
        if decoded is None:  # only VarSets of variables no tracker reads are dropped
            assert m.name == "VarSet" and not is_tracked_variable(m.get("Variable")), m.name
            continue
        out.extend(tracker.apply(decoded, at(seconds)))
    return out


def ended(effects: list[CallEffect]) -> list[CallRecord]:
    return [e.record for e in effects if isinstance(e, CallEnded)]


def answered_call(
    uid: str,
    n: int,
    *,
    t0: float = 0,
    num: str = "15551234567",
    name: str = "John Smith",
    queue: str = "support",
) -> Script:
    """IVR -> queue -> Alice answers after 8 s -> caller hangs up after 82 s of talk."""
    c = Chan(f"PJSIP/trunk-{n:08x}", uid, num=num, name=name)
    leg = agent_leg(c, "1001", n + 1, uid + "1")
    return [
        (t0, newchannel(c)),
        (t0, varset(c, "__CALLCENTER_DID", "5551000")),
        (t0 + 1, newexten(c, "Answer")),
        (t0 + 1, newstate(c, 6)),
        (t0 + 1, newexten(c, "AGI", "agi://127.0.0.1:4573/ivr")),
        (t0 + 5, varset(c, "CALLCENTER_IVR_PATH", "main>2>support")),
        (t0 + 5, varset(c, "IVR_CHOICE", "2")),
        (t0 + 5, varset(c, "QUEUE_PRIO", "5")),
        (t0 + 6, varset(c, "AGISTATUS", "SUCCESS")),
        (t0 + 6, newexten(c, "Queue", f"{queue},t,,,300")),
        (t0 + 10, join(c, queue)),
        (t0 + 11, newchannel(leg)),
        (t0 + 11, agent_ev("AgentCalled", c, leg, queue)),
        (t0 + 18, newstate(leg, 6)),
        (t0 + 18, varset(c, "MIXMONITOR_FILENAME", f"/var/spool/asterisk/monitor/{uid}.wav")),
        (t0 + 18, leave(c, queue)),
        (t0 + 18, agent_ev("AgentConnect", c, leg, queue, ("HoldTime", "8"), ("RingTime", "7"))),
        (t0 + 18, bridge_enter(c)),
        (t0 + 18, bridge_enter(leg)),
        (t0 + 100, hangup_request(c)),
        (
            t0 + 100,
            agent_ev(
                "AgentComplete",
                c,
                leg,
                queue,
                ("HoldTime", "8"),
                ("TalkTime", "82"),
                ("Reason", "caller"),
            ),
        ),
        (t0 + 100, hangup(leg)),
        (t0 + 100, hangup(c)),
    ]


def expected_answered(
    uid: str,
    n: int,
    *,
    t0: float = 0,
    num: str = "15551234567",
    name: str = "John Smith",
    queue: str = "support",
) -> CallRecord:
    return CallRecord(
        uniqueid=uid,
        linkedid=uid,
        channel=f"PJSIP/trunk-{n:08x}",
        started_at=at(t0),
        caller_number=num,
        caller_name=name,
        dialed_number="5551000",
        direction="inbound",
        ivr_path=("main", "2", "support"),
        ivr_choice="2",
        queue=queue,
        queue_priority=5,
        queue_joined_at=at(t0 + 10),
        queue_left_at=at(t0 + 18),
        agent="Alice Agent",
        agent_interface="PJSIP/1001",
        answered_at=at(t0 + 18),
        ended_at=at(t0 + 100),
        wait_seconds=8.0,
        talk_seconds=82.0,
        hangup_cause=16,
        hangup_cause_text="Normal Clearing",
        recording_file=f"/var/spool/asterisk/monitor/{uid}.wav",
        end_reason="completed",
        variables={
            "CALLCENTER_DID": "5551000",
            "CALLCENTER_IVR_PATH": "main>2>support",
            "IVR_CHOICE": "2",
            "QUEUE_PRIO": "5",
        },
        queues=(queue,),
        agents=("Alice Agent",),
    )


# ---------------------------------------------------------------------------------------------
# Real transcripts


@requires_raw
def test_transcript_04_full_call_record() -> None:
    tracker = CallTracker()
    effects = feed_raw(tracker, "04_inbound_ivr_queue_agent_call.ast.raw")
    records = [e.record for _, e in effects if isinstance(e, CallEnded)]
    assert records == [
        CallRecord(
            uniqueid="1715681702.12",
            linkedid="1715681702.12",
            channel="PJSIP/trunk-00000000",
            started_at=at(0),
            caller_number="15551234567",
            caller_name="John Smith",
            dialed_number="5551000",
            direction="inbound",
            ivr_path=("2",),
            ivr_choice="2",
            queue="support",
            queue_priority=None,
            queue_joined_at=at(23),
            queue_left_at=at(37),
            agent="Alice Agent",
            agent_interface="PJSIP/1001",
            answered_at=at(38),
            ended_at=at(54),
            wait_seconds=8.0,  # AgentConnect HoldTime, not the (fake) clock
            talk_seconds=147.0,  # AgentComplete TalkTime
            abandoned=False,
            transfers=(),
            hangup_cause=16,
            hangup_cause_text="Normal Clearing",
            recording_file="/var/spool/asterisk/monitor/1715681702.12.wav",
            end_reason="completed",
            variables={"CALLCENTER_DID": "5551000", "IVR_CHOICE": "2", "IVR_QUEUE": "support"},
            queues=("support",),
            agents=("Alice Agent",),
            adopted=False,
        )
    ]
    kinds = [type(e).__name__ for _, e in effects]
    assert kinds[0] == "CallStarted"
    assert kinds[-1] == "CallEnded"
    assert kinds.count("CallStarted") == 1  # the agent leg is not a call of its own
    ringing = next(e for _, e in effects if isinstance(e, AgentRinging))
    assert (ringing.interface, ringing.member_name, ringing.queue) == (
        "PJSIP/1001",
        "Alice Agent",
        "support",
    )
    assert (ringing.agent_channel, ringing.agent_uniqueid) == (
        "PJSIP/1001-00000001",
        "1715681731.13",
    )
    assert ringing.record.caller_name == "John Smith"
    assert ringing.record.ivr_choice == "2"
    answered = next(e for _, e in effects if isinstance(e, AgentAnswered))
    assert (answered.hold_seconds, answered.ring_seconds) == (8.0, 7.0)
    finished = next(e for _, e in effects if isinstance(e, AgentFinished))
    assert (finished.talk_seconds, finished.reason) == (147.0, "caller")
    assert len(tracker) == 0


@requires_raw
def test_transcript_05_abandon_record_and_late_events_do_not_resurrect() -> None:
    tracker = CallTracker()
    effects = feed_raw(tracker, "05_queue_abandon.ast.raw")
    records = [e.record for _, e in effects if isinstance(e, CallEnded)]
    # the stream starts at the Queue() step: the call is adopted there (start approximate)
    assert records == [
        CallRecord(
            uniqueid="1715682000.20",
            linkedid="1715682000.20",
            channel="PJSIP/trunk-00000004",
            started_at=at(0),
            caller_number="15559876543",
            caller_name="Mary Jones",
            dialed_number="5551000",
            queue="support",
            queue_joined_at=at(1),
            queue_left_at=at(14),
            ended_at=at(15),
            wait_seconds=22.0,
            abandoned=True,
            abandon_stage="queue",
            abandon_after_seconds=22.0,  # QueueCallerAbandon HoldTime
            hangup_cause=16,
            hangup_cause_text="Normal Clearing",
            end_reason="abandoned",
            queues=("support",),
            adopted=True,
        )
    ]
    # the ring-timeout variant after the hangup concerns a finished call: no ghost state
    assert len(tracker) == 0
    assert not any(isinstance(e, AgentNoAnswer) for _, e in effects)


@requires_raw
def test_transcript_06_originate_is_an_outbound_call() -> None:
    tracker = CallTracker()
    effects = feed_raw(tracker, "06_originate_async_success.ast.raw")
    started = [e.record for _, e in effects if isinstance(e, CallStarted)]
    assert [(r.uniqueid, r.direction) for r in started] == [("c2c-1715683000-1001", "outbound")]
    live = tracker.get("c2c-1715683000-1001")
    assert live is not None
    assert (live.caller_number, live.caller_name) == ("5551000", "Click2Call")
    assert live.dialed_number == "15557654321"
    assert live.answered_at is None  # only the agent's own phone (the first channel) is up
    leg = Chan("PJSIP/1001-00000007", "c2c-1715683000-1001", state=6)
    # the rest of the call (cut from the transcript): Dial rings the customer, who answers
    customer = Chan("PJSIP/trunk-00000008", "c2c-1715683000-1001-2", "c2c-1715683000-1001", state=0)
    run(tracker, [(10, newchannel(customer)), (15, newstate(customer, 6))])
    end = ended(run(tracker, [(70, hangup(customer)), (70, hangup(leg))]))
    assert [(r.end_reason, r.answered_at, r.talk_seconds, r.abandoned) for r in end] == [
        ("completed", at(15), 55.0, False)
    ]


@requires_raw
def test_transcript_07_originate_failures() -> None:
    tracker = CallTracker()
    effects = feed_raw(tracker, "07_originate_failures.ast.raw")
    records = [e.record for _, e in effects if isinstance(e, CallEnded)]
    assert [(r.uniqueid, r.direction, r.end_reason, r.hangup_cause) for r in records] == [
        ("1715683100.40", "outbound", "failed", 17),
        ("c2c-1715683200-1003", "outbound", "failed", 19),
        ("1715683300.44", "outbound", "failed", 21),
    ]
    assert all(not r.abandoned and r.answered_at is None for r in records)
    assert len(tracker) == 0


# ---------------------------------------------------------------------------------------------
# Synthetic flows


def test_answered_call_full_record_and_effect_order() -> None:
    tracker = CallTracker()
    effects = run(tracker, answered_call("100.1", 1))
    assert ended(effects) == [expected_answered("100.1", 1)]
    updates = [e.change for e in effects if isinstance(e, CallUpdated)]
    assert updates == ["ivr", "ivr", "queued", "recording", "left_queue", "answered"]
    assert [type(e) for e in effects if not isinstance(e, CallUpdated)] == [
        CallStarted,
        AgentRinging,
        AgentAnswered,
        AgentFinished,
        CallEnded,
    ]
    ringing = next(e for e in effects if isinstance(e, AgentRinging))
    assert ringing.hold_seconds == 1.0  # joined at +10, rang at +11
    assert tracker.active_calls() == []


def test_hangup_in_ivr_is_abandoned_in_ivr() -> None:
    c = Chan("PJSIP/trunk-00000001", "200.1")
    script: Script = [
        (0, newchannel(c)),
        (0, varset(c, "__CALLCENTER_DID", "5551000")),
        (1, newexten(c, "Answer")),
        (1, newstate(c, 6)),
        (1, newexten(c, "AGI", "agi://127.0.0.1:4573/ivr")),
        (4, varset(c, "IVR_CHOICE", "1")),
        (9, varset(c, "IVR_CHOICE", "3")),
        (12, hangup_request(c)),
        (12, hangup(c)),
    ]
    (record,) = ended(run(CallTracker(), script))
    assert record.abandoned is True
    assert record.abandon_stage == "ivr"
    assert record.abandon_after_seconds == 12.0
    assert record.end_reason == "abandoned"
    assert record.ivr_path == ("1", "3")  # no CALLCENTER_IVR_PATH: built from the choices
    assert record.ivr_choice == "3"
    assert record.queue is None
    assert record.wait_seconds is None


@pytest.mark.parametrize(
    "ending",
    [
        lambda c: [agi(c, "HANGUP"), soft_hangup_request(c)],
        lambda c: [newexten(c, "Hangup")],
        lambda c: [soft_hangup_request(c)],
    ],
    ids=["agi-hangup", "dialplan-hangup", "soft-hangup"],
)
def test_ivr_that_ends_the_call_itself_is_not_an_abandon(ending: object) -> None:
    c = Chan("PJSIP/trunk-00000002", "201.1")
    steps = ending(c)  # type: ignore[operator]
    script: Script = [
        (0, newchannel(c)),
        (1, newstate(c, 6)),
        (2, varset(c, "CALLCENTER_CALLBACK", "1")),
    ]
    script += [(30, m) for m in steps] + [(30, hangup(c))]
    (record,) = ended(run(CallTracker(), script))
    assert (record.abandoned, record.end_reason) == (False, "completed")
    assert record.variables == {"CALLCENTER_CALLBACK": "1"}


def test_abandon_in_queue_after_n_seconds() -> None:
    c = Chan("PJSIP/trunk-00000003", "300.1")
    leg = agent_leg(c, "1002", 4, "300.2")
    script: Script = [
        (0, newchannel(c)),
        (1, newstate(c, 6)),
        (20, join(c, "support")),
        (21, newchannel(leg)),
        (21, agent_ev("AgentCalled", c, leg, "support")),
        (47, hangup_request(c)),
        (47, hangup(leg, 0, "Unknown")),
        (47, abandon(c, "support", 27)),
        (47, leave(c, "support")),
        (47, hangup(c)),
    ]
    (record,) = ended(run(CallTracker(), script))
    assert (record.abandoned, record.abandon_stage, record.abandon_after_seconds) == (
        True,
        "queue",
        27.0,
    )
    assert record.wait_seconds == 27.0
    assert record.end_reason == "abandoned"
    assert record.agent is None
    assert record.hangup_cause == 16


def test_hangup_while_queued_without_abandon_event_still_counts_as_abandon() -> None:
    c = Chan("PJSIP/trunk-00000004", "301.1")
    script: Script = [(0, newchannel(c)), (5, join(c, "sales")), (50, hangup(c))]
    (record,) = ended(run(CallTracker(), script))
    assert (record.abandoned, record.abandon_stage, record.abandon_after_seconds) == (
        True,
        "queue",
        45.0,
    )
    assert record.end_reason == "abandoned"


def test_queue_timeout_without_agent_is_failed_not_abandoned() -> None:
    c = Chan("PJSIP/trunk-00000005", "302.1")
    script: Script = [
        (0, newchannel(c)),
        (5, join(c, "sales")),
        (305, leave(c, "sales")),
        (305, newexten(c, "Hangup")),
        (305, hangup(c)),
    ]
    (record,) = ended(run(CallTracker(), script))
    assert (record.abandoned, record.end_reason, record.queue_left_at) == (False, "failed", at(305))


def test_ring_no_answer_then_another_agent_answers() -> None:
    c = Chan("PJSIP/trunk-00000006", "400.1")
    alice = agent_leg(c, "1001", 7, "400.2")
    bob = agent_leg(c, "1002", 8, "400.3")
    script: Script = [
        (0, newchannel(c)),
        (2, join(c, "support")),
        (3, newchannel(alice)),
        (3, agent_ev("AgentCalled", c, alice, "support")),
        (18, agent_ev("AgentRingNoAnswer", c, alice, "support", ("RingTime", "15000"))),
        (18, hangup(alice, 19, "User alerting, no answer")),
        (20, newchannel(bob)),
        (20, agent_ev("AgentCalled", c, bob, "support")),
        (25, leave(c, "support")),
        (25, agent_ev("AgentConnect", c, bob, "support", ("HoldTime", "23"), ("RingTime", "5"))),
        (85, hangup(c)),
    ]
    tracker = CallTracker()
    effects = run(tracker, script)
    agent_effects = [
        e for e in effects if isinstance(e, AgentRinging | AgentNoAnswer | AgentAnswered)
    ]
    assert [(type(e).__name__, e.interface) for e in agent_effects] == [
        ("AgentRinging", "PJSIP/1001"),
        ("AgentNoAnswer", "PJSIP/1001"),
        ("AgentRinging", "PJSIP/1002"),
        ("AgentAnswered", "PJSIP/1002"),
    ]
    no_answer = agent_effects[1]
    assert isinstance(no_answer, AgentNoAnswer)
    assert no_answer.ring_seconds == 15.0
    (record,) = ended(effects)
    assert (record.agent, record.agent_interface, record.agents) == (
        "Bob Agent",
        "PJSIP/1002",
        ("Bob Agent",),
    )
    assert record.wait_seconds == 23.0
    assert record.talk_seconds == 60.0  # no AgentComplete: answer -> hangup on the clock
    assert record.end_reason == "completed"


def test_blind_transfer_event_then_second_queue() -> None:
    c = Chan("PJSIP/trunk-00000009", "500.1")
    alice = agent_leg(c, "1001", 10, "500.2")
    carol = agent_leg(c, "1003", 11, "500.3")
    blind = ev(
        "BlindTransfer",
        ("Result", "Success"),
        alice.snap("Transferer"),
        c.snap("Transferee"),
        ("BridgeUniqueid", "b-1"),
        ("IsExternal", "No"),
        ("Context", "from-internal"),
        ("Extension", "600"),
    )
    script: Script = [
        (0, newchannel(c)),
        (5, join(c, "support")),
        (6, newchannel(alice)),
        (6, agent_ev("AgentConnect", c, alice, "support", ("HoldTime", "1"), ("RingTime", "1"))),
        (60, blind),
        (
            60,
            agent_ev(
                "AgentComplete", c, alice, "support", ("TalkTime", "54"), ("Reason", "transfer")
            ),
        ),
        (60, hangup(alice)),
        (61, newexten(c, "Queue", "sales", exten="600")),
        (61, join(c, "sales")),
        (71, newchannel(carol)),
        (71, agent_ev("AgentConnect", c, carol, "sales", ("HoldTime", "10"), ("RingTime", "2"))),
        (
            131,
            agent_ev("AgentComplete", c, carol, "sales", ("TalkTime", "60"), ("Reason", "caller")),
        ),
        (131, hangup(c)),
    ]
    (record,) = ended(run(CallTracker(), script))
    assert record.transfers == (
        Transfer(at(60), "blind", "600", source="Alice Agent", answered_at=at(71)),
    )
    assert record.queues == ("support", "sales")
    assert record.agents == ("Alice Agent", "Carol Agent")
    assert (record.queue, record.agent, record.wait_seconds) == ("support", "Alice Agent", 1.0)
    assert record.talk_seconds == 114.0  # 54 + 60: both agents' TalkTime
    assert record.end_reason == "completed"


def test_caller_moved_to_another_queue_without_transfer_event() -> None:
    c = Chan("PJSIP/trunk-0000000c", "510.1")
    alice = agent_leg(c, "1001", 13, "510.2")
    script: Script = [
        (0, newchannel(c)),
        (5, join(c, "support")),
        (7, agent_ev("AgentConnect", c, alice, "support", ("HoldTime", "2"), ("RingTime", "1"))),
        (40, join(c, "billing")),  # e.g. an AMI Redirect straight into Queue(billing)
        (70, abandon(c, "billing", 30)),
        (70, hangup(c)),
    ]
    (record,) = ended(run(CallTracker(), script))
    assert record.transfers == (Transfer(at(40), "blind", "billing", source="Alice Agent"),)
    assert record.queues == ("support", "billing")
    # the caller was served before the transfer: not an abandoned call
    assert (record.abandoned, record.end_reason) == (False, "completed")


def test_redirect_to_another_extension_is_one_transfer() -> None:
    c = Chan("PJSIP/trunk-0000000d", "520.1")
    alice = agent_leg(c, "1001", 14, "520.2")
    script: Script = [
        (0, newchannel(c)),
        (5, newexten(c, "Queue", "support")),
        (5, join(c, "support")),
        (7, agent_ev("AgentConnect", c, alice, "support", ("HoldTime", "2"), ("RingTime", "1"))),
        (30, newexten(c, "Queue", "vip", exten="700")),
        (30, join(c, "vip")),
        (90, hangup(c)),
    ]
    (record,) = ended(run(CallTracker(), script))
    assert record.transfers == (Transfer(at(30), "blind", "700", source="Alice Agent"),)
    assert record.queues == ("support", "vip")


def test_agent_hangup_then_dialplan_continues_is_not_a_transfer() -> None:
    c = Chan("PJSIP/trunk-0000000e", "530.1")
    alice = agent_leg(c, "1001", 15, "530.2")
    script: Script = [
        (0, newchannel(c)),
        (5, join(c, "support")),
        (7, agent_ev("AgentConnect", c, alice, "support", ("HoldTime", "2"), ("RingTime", "1"))),
        (
            50,
            agent_ev("AgentComplete", c, alice, "support", ("TalkTime", "43"), ("Reason", "agent")),
        ),
        (50, newexten(c, "Playback", "survey", exten="survey")),
        (60, hangup(c)),
    ]
    (record,) = ended(run(CallTracker(), script))
    assert record.transfers == ()
    assert record.talk_seconds == 43.0


def test_attended_transfer() -> None:
    c = Chan("PJSIP/trunk-0000000f", "540.1")
    alice = agent_leg(c, "1001", 16, "540.2")
    consult = Chan(
        "PJSIP/1001-00000011", "541.1", context="from-internal", exten="1002", num="1001"
    )
    bob = agent_leg(consult, "1002", 18, "541.2")
    bob.num = "1002"
    bob_answers = newstate(bob, 6)  # the target talks with the agent when she transfers
    attended = ev(
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
    script: Script = [
        (0, newchannel(c)),
        (5, join(c, "support")),
        (7, agent_ev("AgentConnect", c, alice, "support", ("HoldTime", "2"), ("RingTime", "1"))),
        (30, newchannel(consult)),  # Alice dials Bob to consult: a call of its own
        (31, newchannel(bob)),
        (35, bob_answers),
        (45, attended),
        (45, hangup(alice)),
        (45, hangup(consult)),
        (100, hangup(c)),
    ]
    effects = run(CallTracker(), script)
    records = {r.uniqueid: r for r in ended(effects)}
    assert records["540.1"].transfers == (
        Transfer(at(45), "attended", "1002", source="Alice Agent", answered_at=at(45)),
    )
    assert records["540.1"].end_reason == "completed"
    assert "541.1" not in records  # the consultation is an internal call: no call record


def test_chinese_names_pass_through_and_unknown_becomes_empty() -> None:
    c = Chan("PJSIP/trunk-00000020", "600.1", num="13800138000", name="张三")
    anon = Chan("PJSIP/trunk-00000021", "600.2", num="", name="")
    tracker = CallTracker()
    run(tracker, [(0, newchannel(c)), (0, newchannel(anon))])
    live = tracker.get("600.1")
    assert live is not None
    assert (live.caller_number, live.caller_name) == ("13800138000", "张三")
    unknown = tracker.get("600.2")
    assert unknown is not None
    assert (unknown.caller_number, unknown.caller_name) == ("", "")
    effects = run(tracker, [(1, callerid(anon, "13912345678", "李四 王五"))])
    assert [(type(e).__name__, getattr(e, "change", "")) for e in effects] == [
        ("CallUpdated", "caller")
    ]
    renamed = tracker.get("600.2")
    assert renamed is not None
    assert renamed.caller_name == "李四 王五"


def test_unknown_and_irrelevant_events_change_nothing() -> None:
    tracker = CallTracker()
    c = Chan("PJSIP/trunk-00000022", "700.1")
    run(tracker, [(0, newchannel(c))])
    before = tracker.get("700.1")
    noise = [
        ev("DTMFBegin", c.snap(), ("Digit", "1"), ("Direction", "Received")),
        ev("MusicOnHoldStart", c.snap(), ("Class", "default")),
        ev("Cdr", ("Source", "x")),
        ev("FooBar"),
        AmiMessage((("Response", "Success"), ("ActionID", "1"))),
        AmiMessage(()),
        AmiMessage((("Garbage", ""),)),
    ]
    for m in noise:
        decoded = decode_event(m)
        if decoded is not None:
            assert tracker.apply(decoded, at(1)) == []
    # events of channels nobody knows: global VarSet, a leg of an unknown call
    stray = [
        ev(
            "VarSet",
            ("Channel", "none"),
            ("Uniqueid", "none"),
            ("Linkedid", "none"),
            ("Variable", "CALLCENTER_GLOBALX"),
            ("Value", "1"),
        ),
        hangup(Chan("PJSIP/1001-00000099", "9.2", "9.1")),
        leave(Chan("PJSIP/trunk-00000099", "9.3"), "support"),
    ]
    assert run(tracker, [(1, m) for m in stray]) == []
    assert tracker.get("700.1") == before
    assert len(tracker) == 1


def test_duplicate_events_give_the_same_record() -> None:
    script = answered_call("800.1", 0x30)
    doubled = [item for pair in zip(script, script, strict=True) for item in pair]
    effects = run(CallTracker(), doubled)
    assert ended(effects) == [expected_answered("800.1", 0x30)]
    assert sum(isinstance(e, CallStarted) for e in effects) == 1
    assert sum(isinstance(e, AgentAnswered) for e in effects) == 1


@requires_raw
def test_transcript_04_with_every_message_twice() -> None:
    once = CallTracker()
    reference = [
        e.record
        for _, e in feed_raw(once, "04_inbound_ivr_queue_agent_call.ast.raw")
        if isinstance(e, CallEnded)
    ]
    twice = CallTracker()
    records = []
    for i, m in enumerate(load_raw("04_inbound_ivr_queue_agent_call.ast.raw")):
        decoded = decode_event(m)
        if decoded is None:
            continue
        for _ in range(2):
            records += ended(twice.apply(decoded, BASE + timedelta(seconds=i)))
    assert records == reference


def test_link_drop_and_reconcile() -> None:
    tracker = CallTracker()
    gone = Chan("PJSIP/trunk-00000040", "900.1")
    alive = Chan("PJSIP/trunk-00000041", "900.2", num="15550000002")
    alive_leg = agent_leg(alive, "1001", 0x42, "900.3")
    run(
        tracker,
        [
            (0, newchannel(gone)),
            (1, join(gone, "support")),
            (2, newchannel(alive)),
            (3, join(alive, "support")),
            (4, newchannel(alive_leg)),
            (
                5,
                agent_ev(
                    "AgentConnect",
                    alive,
                    alive_leg,
                    "support",
                    ("HoldTime", "2"),
                    ("RingTime", "1"),
                ),
            ),
        ],
    )
    # ... the AMI link drops at +10 and comes back at +70 ...
    newcomer = Chan("PJSIP/trunk-00000043", "900.9", num="15550000009", name="王小明")
    snapshot = Snapshot(
        channels=(
            ev(
                "CoreShowChannel",
                ("ActionID", "csc-1"),
                alive.snap(),
                ("Application", "Queue"),
                ("ApplicationData", "support,t,,,300"),
                ("Duration", "00:01:08"),
                ("BridgeId", "b-7"),
            ),
            ev(
                "CoreShowChannel",
                ("ActionID", "csc-1"),
                alive_leg.snap(),
                ("Application", "AppQueue"),
                ("ApplicationData", "(Outgoing Line)"),
                ("Duration", "00:01:05"),
                ("BridgeId", "b-7"),
            ),
            ev(
                "CoreShowChannel",
                ("ActionID", "csc-1"),
                newcomer.snap(),
                ("Application", "Queue"),
                ("ApplicationData", "support,t,,,300"),
                ("Duration", "00:01:03"),
                ("BridgeId", ""),
            ),
        ),
        queue_status=(
            ev("QueueParams", ("Queue", "support"), ("Strategy", "ringall"), ("Calls", "1")),
            ev(
                "QueueEntry",
                ("Queue", "support"),
                ("Position", "1"),
                ("Channel", newcomer.channel),
                ("Uniqueid", "900.9"),
                ("CallerIDNum", "15550000009"),
                ("Wait", "41"),
            ),
        ),
    )
    effects = tracker.reconcile(snapshot, at(70))
    (lost,) = ended(effects)
    assert lost.uniqueid == "900.1"
    assert lost.end_reason == "ended_while_disconnected"
    assert (lost.hangup_cause, lost.hangup_cause_text, lost.ended_at) == (None, None, at(70))
    assert lost.abandoned is False  # how it ended is unknown
    started = [e.record for e in effects if isinstance(e, CallStarted)]
    assert [(r.uniqueid, r.adopted, r.started_at, r.caller_name) for r in started] == [
        ("900.9", True, at(70 - 63), "王小明")
    ]
    adopted = tracker.get("900.9")
    assert adopted is not None
    assert (adopted.queue, adopted.queue_joined_at) == ("support", at(70 - 41))
    # both calls continue normally after the resync
    newcomer_leg = agent_leg(newcomer, "1002", 0x44, "900.10")
    effects = run(
        tracker,
        [
            (
                75,
                agent_ev(
                    "AgentConnect",
                    newcomer,
                    newcomer_leg,
                    "support",
                    ("HoldTime", "46"),
                    ("RingTime", "3"),
                ),
            ),
            (80, hangup(alive_leg)),
            (80, hangup(alive)),
            (90, hangup(newcomer)),
        ],
    )
    records = {r.uniqueid: r for r in ended(effects)}
    assert records["900.2"].end_reason == "completed"
    assert records["900.2"].talk_seconds == 75.0
    assert records["900.2"].adopted is False
    assert (records["900.9"].adopted, records["900.9"].wait_seconds) == (True, 46.0)
    assert records["900.9"].agent == "Bob Agent"
    assert len(tracker) == 0


def test_reconcile_with_nothing_changed_emits_nothing() -> None:
    tracker = CallTracker()
    c = Chan("PJSIP/trunk-00000050", "910.1")
    run(tracker, [(0, newchannel(c))])
    snapshot = Snapshot(
        channels=(
            ev("CoreShowChannel", c.snap(), ("Application", "AGI"), ("Duration", "00:00:09")),
        ),
        queue_status=(),
    )
    assert tracker.reconcile(snapshot, at(10)) == []
    assert tracker.reconcile(Snapshot((), ()), at(11))[0] == CallEnded(
        replace(
            tracker_record(c),
            ended_at=at(11),
            end_reason="ended_while_disconnected",
        )
    )


def tracker_record(c: Chan) -> CallRecord:
    return CallRecord(
        uniqueid=c.uniqueid,
        linkedid=c.uniqueid,
        channel=c.channel,
        started_at=at(0),
        caller_number=c.num,
        caller_name=c.name,
        dialed_number=c.exten,
    )


@dataclass(frozen=True)
class Snapshot:
    channels: tuple[AmiMessage, ...]
    queue_status: tuple[AmiMessage, ...]


def test_expire_evicts_ghost_calls_and_size_cap_holds() -> None:
    tracker = CallTracker(max_idle=timedelta(hours=2), max_calls=2)
    a = Chan("PJSIP/trunk-00000060", "920.1")
    b = Chan("PJSIP/trunk-00000061", "920.2")
    c = Chan("PJSIP/trunk-00000062", "920.3")
    run(tracker, [(0, newchannel(a)), (3600, newchannel(b))])
    assert tracker.expire(at(7000)) == []
    (expired,) = ended(tracker.expire(at(7300)))
    assert (expired.uniqueid, expired.end_reason) == ("920.1", "expired")
    assert len(tracker) == 1
    run(tracker, [(7400, newchannel(a := Chan("PJSIP/trunk-00000063", "920.4")))])
    effects = run(tracker, [(7500, newchannel(c))])  # a third call: the idlest goes
    (evicted,) = ended(effects)
    assert (evicted.uniqueid, evicted.end_reason) == ("920.2", "expired")
    assert len(tracker) == 2
    assert tracker.get(a.uniqueid) is not None
    # late events of an evicted call do not bring it back
    assert run(tracker, [(7600, varset(b, "IVR_CHOICE", "1"))]) == []


def test_ended_calls_leave_no_state_behind() -> None:
    tracker = CallTracker(max_tombstones=3)
    for n in range(10):
        run(tracker, answered_call(f"1000.{n}", 0x100 + 2 * n, t0=n * 200))
    assert len(tracker) == 0
    assert tracker._legs == {}
    assert len(tracker._tombstones) == 3


def test_caller_uniqueid_of_a_leg_finds_the_call() -> None:
    tracker = CallTracker()
    script = answered_call("1100.1", 0x200)[:-4]  # still talking
    run(tracker, script)
    by_leg = tracker.get("1100.11")
    assert by_leg is not None
    assert by_leg.uniqueid == "1100.1"
    assert [r.uniqueid for r in tracker.active_calls()] == ["1100.1"]


def test_bad_values_are_kept_but_do_not_break_the_record() -> None:
    c = Chan("PJSIP/trunk-00000070", "1200.1")
    script: Script = [
        (0, newchannel(c)),
        (1, varset(c, "QUEUE_PRIO", "high")),
        (1, varset(c, "CALLCENTER_IVR_PATH", "")),
        (1, varset(c, "CALLCENTER_NOTE", "x" * 10_000)),
        (2, ev("Hangup", c.snap(), ("Cause", "abc"))),
    ]
    (record,) = ended(run(CallTracker(), script))
    assert record.queue_priority is None
    assert record.variables["QUEUE_PRIO"] == "high"
    assert len(record.variables["CALLCENTER_NOTE"]) == 512
    assert record.ivr_path == ()
    assert (record.hangup_cause, record.hangup_cause_text) == (None, None)


# ---------------------------------------------------------------------------------------------
# Property: interleaving concurrent calls never changes their records


CALLS = [
    ("2000.1", 0x300, "13800000001", "张伟", "support"),
    ("2000.5", 0x310, "13800000002", "John Smith", "sales"),
    ("2000.9", 0x320, "", "", "support"),
]


@settings(max_examples=150, deadline=None)
@given(
    order=st.lists(st.integers(min_value=0, max_value=2), min_size=80, max_size=80),
    dup=st.lists(st.booleans(), min_size=80, max_size=80),
)
def test_interleaved_calls_give_the_same_records(order: list[int], dup: list[bool]) -> None:
    scripts = [
        answered_call(uid, n, t0=i * 3, num=num, name=name, queue=queue)
        for i, (uid, n, num, name, queue) in enumerate(CALLS)
    ]
    expected = {
        uid: expected_answered(uid, n, t0=i * 3, num=num, name=name, queue=queue)
        for i, (uid, n, num, name, queue) in enumerate(CALLS)
    }
    cursors = [0, 0, 0]
    merged: Script = []
    choices = iter(order)
    duplicates = iter(dup)
    while any(cursors[k] < len(scripts[k]) for k in range(3)):
        k = next(choices, 0)
        while cursors[k] >= len(scripts[k]):
            k = (k + 1) % 3
        item = scripts[k][cursors[k]]
        merged.append(item)
        if next(duplicates, False):
            merged.append(item)
        cursors[k] += 1
    tracker = CallTracker()
    records = {r.uniqueid: r for r in ended(run(tracker, merged))}
    assert records == expected
    assert len(tracker) == 0
