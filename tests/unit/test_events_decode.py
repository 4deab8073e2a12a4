"""The AMI event subscription table: decoding real transcript streams and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from ami_support import RAW, load_raw, requires_raw

from callcenter.asterisk.events import (
    SUBSCRIBED_EVENTS,
    AgentCalled,
    AgentCompleted,
    AgentConnected,
    AgentRingNoAnswer,
    AttendedTransferred,
    BlindTransferred,
    ChannelCreated,
    ChannelHungUp,
    ChannelListed,
    DialplanStep,
    HangupRequested,
    QueueCallerAbandoned,
    QueueCallerJoined,
    QueueEntryListed,
    QueueMemberChanged,
    QueueParamsListed,
    VariableSet,
    decode_all,
    decode_event,
    is_tracked_variable,
)
from callcenter.asterisk.message import AmiMessage


def msg(*headers: tuple[str, str]) -> AmiMessage:
    return AmiMessage(tuple(headers))


@requires_raw
def test_transcript_04_decodes_the_call_events() -> None:
    events = decode_all(load_raw("04_inbound_ivr_queue_agent_call.ast.raw"))
    created = events[0]
    assert created == ChannelCreated(
        channel="PJSIP/trunk-00000000",
        uniqueid="1715681702.12",
        linkedid="1715681702.12",
        state=4,
        caller_number="15551234567",
        caller_name="John Smith",
        context="from-trunk",
        exten="5551000",
    )
    did = next(e for e in events if isinstance(e, VariableSet))
    assert (did.variable, did.value) == ("__CALLCENTER_DID", "5551000")
    connect = next(e for e in events if isinstance(e, AgentConnected))
    assert (connect.queue, connect.interface, connect.member_name) == (
        "support",
        "PJSIP/1001",
        "Alice Agent",
    )
    assert (connect.hold_time, connect.ring_time) == (8, 7)
    assert (connect.dest_channel, connect.dest_uniqueid, connect.dest_linkedid) == (
        "PJSIP/1001-00000001",
        "1715681731.13",
        "1715681702.12",
    )
    called = next(e for e in events if isinstance(e, AgentCalled))
    assert called.dest_uniqueid == "1715681731.13"
    complete = next(e for e in events if isinstance(e, AgentCompleted))
    assert (complete.hold_time, complete.talk_time, complete.reason) == (8, 147, "caller")
    hangups = [e for e in events if isinstance(e, ChannelHungUp)]
    assert [(h.uniqueid, h.cause, h.cause_text) for h in hangups] == [
        ("1715681731.13", 16, "Normal Clearing"),
        ("1715681702.12", 16, "Normal Clearing"),
    ]
    request = next(e for e in events if isinstance(e, HangupRequested))
    assert (request.cause, request.soft) == (16, False)
    member = next(e for e in events if isinstance(e, QueueMemberChanged))
    assert (member.change, member.status, member.in_call, member.calls_taken) == (
        "status",
        6,
        False,
        12,
    )
    # the agent leg has no caller name: <unknown> becomes ""
    agent_leg = next(e for e in events if isinstance(e, ChannelCreated) and e.exten == "s")
    assert (agent_leg.caller_number, agent_leg.caller_name, agent_leg.state) == ("", "", 0)
    # DTMF, MusicOnHold, DialBegin, Cdr, ... are not in the table
    names = {m.name for m in load_raw("04_inbound_ivr_queue_agent_call.ast.raw")}
    assert {"DTMFBegin", "MusicOnHoldStart", "DialBegin", "Cdr", "AGIExecEnd"} <= names
    assert not {"DTMFBegin", "MusicOnHoldStart", "DialBegin", "Cdr"} & SUBSCRIBED_EVENTS


@requires_raw
def test_transcript_05_abandon_and_ring_no_answer() -> None:
    events = decode_all(load_raw("05_queue_abandon.ast.raw"))
    abandon = next(e for e in events if isinstance(e, QueueCallerAbandoned))
    assert (abandon.queue, abandon.position, abandon.original_position, abandon.hold_time) == (
        "support",
        1,
        1,
        22,
    )
    rna = next(e for e in events if isinstance(e, AgentRingNoAnswer))
    assert (rna.interface, rna.member_name, rna.ring_time_ms) == ("PJSIP/1002", "Bob Agent", 15000)
    join = next(e for e in events if isinstance(e, QueueCallerJoined))
    assert (join.queue, join.position, join.count) == ("support", 1, 1)
    step = events[0]
    assert isinstance(step, DialplanStep)
    assert (step.application, step.app_data) == ("Queue", "support,t,,,300")


@requires_raw
def test_transcript_08_list_items() -> None:
    events = decode_all(load_raw("08_lists_command_queue_actions.ast.raw"))
    params = next(e for e in events if isinstance(e, QueueParamsListed))
    assert params == QueueParamsListed(
        queue="support",
        max=0,
        strategy="ringall",
        calls=1,
        holdtime=9,
        talktime=151,
        completed=13,
        abandoned=2,
        service_level=30,
        service_level_perf=92.3,
        weight=0,
    )
    listed = [e for e in events if isinstance(e, QueueMemberChanged) and e.change == "listed"]
    # QueueMember items use Name/Location instead of MemberName/Interface
    assert [(m.member_name, m.interface, m.paused, m.paused_reason, m.status) for m in listed] == [
        ("Alice Agent", "PJSIP/1001", False, "", 1),
        ("Bob Agent", "PJSIP/1002", True, "lunch", 5),
    ]
    entry = next(e for e in events if isinstance(e, QueueEntryListed))
    # QueueEntry prints `unknown` without brackets
    assert (entry.uniqueid, entry.caller_number, entry.caller_name, entry.wait_seconds) == (
        "1715682600.50",
        "15552223333",
        "",
        41,
    )
    channel = next(e for e in events if isinstance(e, ChannelListed))
    assert (channel.uniqueid, channel.application, channel.duration_seconds) == (
        "1715682600.50",
        "Queue",
        63,
    )
    assert channel.application_data == "support,t,,,300"
    assert channel.bridge_id == ""
    changes = [e.change for e in events if isinstance(e, QueueMemberChanged)]
    assert changes == ["listed", "listed", "added", "pause", "pause", "removed", "status"]


@requires_raw
@pytest.mark.parametrize("path", sorted(RAW.glob("*.ast.raw")) if RAW.is_dir() else [])
def test_every_transcript_decodes_without_error(path: Path) -> None:
    for m in load_raw(path.name):
        ev = decode_event(m)
        if m.kind != "event":
            assert ev is None
        elif m.name == "VarSet" and not is_tracked_variable(m.get("Variable")):
            assert ev is None  # BRIDGEPEER, AGISTATUS...: no tracker reads them
        elif m.name in SUBSCRIBED_EVENTS:
            assert ev is not None


def test_responses_and_unknown_events_are_ignored() -> None:
    assert decode_event(AmiMessage(())) is None
    assert decode_event(msg(("Response", "Success"), ("ActionID", "1"))) is None
    assert decode_event(msg(("Event", "UserEvent"), ("UserEvent", "x"))) is None
    assert decode_event(msg(("Event", "FooBar"))) is None
    # an action whose name happens to equal an event name is not an event
    assert decode_event(msg(("Action", "Hangup"), ("Channel", "PJSIP/1-1"))) is None


def test_header_names_are_case_insensitive_and_values_kept_verbatim() -> None:
    ev = decode_event(
        msg(
            ("Event", "Newchannel"),
            ("CHANNEL", "PJSIP/trunk-00000001"),
            ("channelstate", "4"),
            ("CallerIDNum", "13800138000"),
            ("CallerIDName", "张三 (客户)"),
            ("UniqueID", "1.1"),
            ("LinkedID", "1.1"),
            ("Context", "from-trunk"),
            ("Exten", "5551000"),
        )
    )
    assert ev == ChannelCreated(
        "PJSIP/trunk-00000001",
        "1.1",
        "1.1",
        4,
        "13800138000",
        "张三 (客户)",
        "from-trunk",
        "5551000",
    )


def test_malformed_numbers_become_none_not_errors() -> None:
    ev = decode_event(
        msg(
            ("Event", "Hangup"),
            ("Channel", "PJSIP/x-1"),
            ("ChannelState", "six"),
            ("Uniqueid", "1.2"),
            ("Linkedid", "1.2"),
            ("Cause", ""),
        )
    )
    assert isinstance(ev, ChannelHungUp)
    assert (ev.state, ev.cause, ev.cause_text, ev.caller_number) == (None, None, "", "")
    member = decode_event(
        msg(("Event", "QueueMemberStatus"), ("Queue", "q"), ("Status", "x"), ("Paused", "maybe"))
    )
    assert isinstance(member, QueueMemberChanged)
    assert (member.status, member.paused, member.interface) == (0, False, "")
    listed = decode_event(msg(("Event", "CoreShowChannel"), ("Duration", "1:99:00")))
    assert isinstance(listed, ChannelListed)
    assert listed.duration_seconds is None


def test_repeated_headers_first_wins() -> None:
    ev = decode_event(
        msg(
            ("Event", "VarSet"),
            ("Uniqueid", "1.3"),
            ("Variable", "IVR_CHOICE"),
            ("Value", "1"),
            ("Value", "2"),
        )
    )
    assert isinstance(ev, VariableSet)
    assert ev.value == "1"


def test_blind_transfer_fields() -> None:
    ev = decode_event(
        msg(
            ("Event", "BlindTransfer"),
            ("Privilege", "call,all"),
            ("Result", "Success"),
            ("TransfererChannel", "PJSIP/1001-00000001"),
            ("TransfererCallerIDNum", "5551000"),
            ("TransfererConnectedLineNum", "15551234567"),
            ("TransfererUniqueid", "1.13"),
            ("TransfererLinkedid", "1.12"),
            ("TransfereeChannel", "PJSIP/trunk-00000000"),
            ("TransfereeCallerIDNum", "15551234567"),
            ("TransfereeUniqueid", "1.12"),
            ("TransfereeLinkedid", "1.12"),
            ("BridgeUniqueid", "b-1"),
            ("IsExternal", "No"),
            ("Context", "from-internal"),
            ("Extension", "600"),
        )
    )
    assert isinstance(ev, BlindTransferred)
    assert ev.result == "Success"
    assert (ev.context, ev.extension, ev.is_external) == ("from-internal", "600", False)
    assert ev.transferer.uniqueid == "1.13"
    assert ev.transferer.connected_number == "15551234567"
    assert ev.transferee is not None
    assert (ev.transferee.uniqueid, ev.transferee.linkedid) == ("1.12", "1.12")


def test_attended_transfer_fields_and_missing_parties() -> None:
    ev = decode_event(
        msg(
            ("Event", "AttendedTransfer"),
            ("Result", "Success"),
            ("OrigTransfererChannel", "PJSIP/1001-00000001"),
            ("OrigTransfererUniqueid", "1.13"),
            ("OrigTransfererLinkedid", "1.12"),
            ("SecondTransfererChannel", "PJSIP/1001-00000002"),
            ("SecondTransfererConnectedLineNum", "1002"),
            ("SecondTransfererUniqueid", "1.20"),
            ("SecondTransfererLinkedid", "1.20"),
            ("DestType", "Bridge"),
            ("DestBridgeUniqueid", "b-2"),
            ("TransfereeChannel", "PJSIP/trunk-00000000"),
            ("TransfereeUniqueid", "1.12"),
            ("TransfereeLinkedid", "1.12"),
            ("TransferTargetChannel", "PJSIP/1002-00000003"),
            ("TransferTargetCallerIDNum", "1002"),
            ("TransferTargetUniqueid", "1.21"),
            ("TransferTargetLinkedid", "1.20"),
        )
    )
    assert isinstance(ev, AttendedTransferred)
    assert ev.dest_type == "Bridge"
    assert ev.orig_transferer.linkedid == "1.12"
    assert ev.second_transferer is not None
    assert ev.second_transferer.connected_number == "1002"
    assert ev.target is not None
    assert ev.target.caller_number == "1002"
    bare = decode_event(msg(("Event", "AttendedTransfer"), ("Result", "Fail")))
    assert isinstance(bare, AttendedTransferred)
    assert (bare.transferee, bare.target, bare.second_transferer) == (None, None, None)
    assert bare.orig_transferer.uniqueid == ""
