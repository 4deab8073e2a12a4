"""decode_event's positional fast path gives exactly what the dict path gives."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest
from ami_support import RAW, load_raw, requires_raw

from callcenter.asterisk import events
from callcenter.asterisk.message import AmiMessage


def _slow(msg: AmiMessage) -> object:
    names, values = zip(*msg.headers, strict=True)
    return events._decode_fields(events._DECODERS[msg.name], names, values)


@requires_raw
def test_every_transcript_event_decodes_alike() -> None:
    seen: set[str] = set()
    for path in sorted(RAW.glob("*.raw")):
        for msg in load_raw(path.name):
            if msg.kind == "event" and msg.name in events._FAST:
                seen.add(msg.name)
                assert events.decode_event(msg) == _slow(msg), (path.name, msg.headers)
    assert {"Newchannel", "VarSet", "Hangup", "AgentConnect", "QueueCallerJoin"} <= seen


SNAP = (
    ("Channel", "PJSIP/trunk-00000001"),
    ("ChannelState", "6"),
    ("CallerIDNum", "<unknown>"),
    ("CallerIDName", "张三"),
    ("Context", "from-trunk"),
    ("Exten", "5551000"),
    ("Uniqueid", "1.1"),
    ("Linkedid", "1.1"),
)


@pytest.mark.parametrize(
    "headers",
    [
        (("Event", "Hangup"), *SNAP, ("Cause", "16"), ("Cause-txt", "Normal Clearing")),
        # Cause-txt missing: the dict path supplies the default
        (("Event", "Hangup"), *SNAP, ("Cause", "x")),
        # a repeated header: the first one wins on both paths
        (("Event", "VarSet"), *SNAP, ("Variable", "A"), ("Value", "1"), ("Value", "2")),
        # names in another case, state out of the usual range
        (("Event", "Newstate"), *((k.upper(), v) for k, v in SNAP[:1]), ("ChannelState", "42")),
        (("Event", "AgentComplete"), *SNAP, ("DestChannel", "PJSIP/1001-1"), ("Queue", "q")),
    ],
)
def test_odd_layouts_decode_alike(headers: tuple[tuple[str, str], ...]) -> None:
    msg = AmiMessage(headers)
    for _ in range(2):  # once to build the plan, once to use it
        assert events.decode_event(msg) == _slow(msg)


def test_varset_values() -> None:
    msg = AmiMessage(
        (("Event", "VarSet"), *SNAP, ("Variable", "__IVR_A"), ("Value", "1"), ("Value", "2"))
    )
    ev = events.decode_event(msg)
    assert isinstance(ev, events.VariableSet)
    assert (ev.caller_number, ev.caller_name, ev.state, ev.value) == ("", "张三", 6, "1")
    assert ev.variable == "__IVR_A"


@pytest.mark.parametrize(
    ("variable", "tracked"),
    [
        ("MIXMONITOR_FILENAME", True),
        ("__CALLCENTER_DID", True),
        ("_QUEUE_PRIO", True),
        ("IVR_CHOICE", True),
        ("BRIDGEPEER", False),
        ("AGISTATUS", False),
        ("", False),
    ],
)
def test_only_tracked_variables_are_decoded(variable: str, tracked: bool) -> None:
    for headers in (  # the fast way, and the dict way (no Exten header)
        (("Event", "VarSet"), *SNAP, ("Variable", variable), ("Value", "x")),
        (("Event", "VarSet"), ("Channel", "none"), ("Variable", variable), ("Value", "x")),
    ):
        ev = events.decode_event(AmiMessage(headers))
        assert isinstance(ev, events.VariableSet) if tracked else ev is None


@pytest.mark.parametrize("cls", [*get_args(events.AmiEvent), events.TransferParty])
def test_event_classes_build_like_frozen_dataclasses(cls: type) -> None:
    """Their faster __init__ takes the same arguments and keeps instances frozen."""
    names = [f.name for f in dataclasses.fields(cls)]
    values = [f"v{i}" for i in range(len(names))]
    by_position = cls(*values)
    by_keyword = cls(**dict(zip(names, values, strict=True)))
    assert by_position == by_keyword
    assert [getattr(by_position, n) for n in names] == values
    assert repr(by_position).startswith(f"{cls.__name__}({names[0]}='v0'")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(by_position, names[0], "changed")
    with pytest.raises(TypeError):
        cls(*values[:-1])


def test_member_events_with_an_empty_member_name_go_the_dict_way() -> None:
    headers = (
        ("Event", "QueueMemberStatus"), ("Queue", "support"), ("MemberName", ""),
        ("Interface", "PJSIP/1001"), ("StateInterface", "PJSIP/1001"), ("Membership", "static"),
        ("Penalty", "0"), ("CallsTaken", "3"), ("LastCall", "0"), ("LastPause", "0"),
        ("LoginTime", "0"), ("InCall", "1"), ("Status", "2"), ("Paused", "0"),
        ("PausedReason", ""), ("Wrapuptime", "5"), ("Name", "Alice"),
    )  # fmt: skip
    msg = AmiMessage(headers)
    event = events.decode_event(msg)
    assert event == _slow(msg)
    assert isinstance(event, events.QueueMemberChanged)
    assert (event.member_name, event.calls_taken, event.in_call) == ("Alice", 3, True)
    fast = events.decode_event(AmiMessage((*headers[:2], ("MemberName", "Bob"), *headers[3:])))
    assert isinstance(fast, events.QueueMemberChanged) and fast.member_name == "Bob"
