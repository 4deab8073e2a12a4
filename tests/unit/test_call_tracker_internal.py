"""CallTracker: calls among the agents' phones are not hotline calls.

deploy/asterisk/extensions.conf `[agents]`: agent to agent (`_100[1-8]`), outside numbers
(`_0X.`), and the consultation leg of an attended transfer (the agent's phone calls the target
while the caller waits) all start as a channel of the agent's phone, ringing, in the agents'
context, with a Linkedid of its own. They get no call record (no effect at all), so no report,
abandon count, answered-within-target figure, screen-pop or summary sees them.
"""

from __future__ import annotations

import pytest
from test_call_tracker import (
    Chan,
    Script,
    Snapshot,
    agent_ev,
    agent_leg,
    answered_call,
    at,
    bridge_enter,
    ended,
    ev,
    expected_answered,
    hangup,
    hangup_request,
    join,
    newchannel,
    newexten,
    newstate,
    run,
)

from callcenter.asterisk.message import AmiMessage
from callcenter.calls.service import CallEnded, CallStarted, CallTracker


def phone(uid: str, n: int, exten: str, *, endpoint: str = "1001", context: str = "agents") -> Chan:
    """A call an agent's phone starts: inbound to Asterisk (state Ring), own Linkedid."""
    return Chan(
        f"PJSIP/{endpoint}-{n:08x}", uid, num=endpoint, name="Alice Agent",
        context=context, exten=exten,
    )  # fmt: skip


def dialled(caller: Chan, endpoint: str, n: int, uid: str) -> Chan:
    leg = agent_leg(caller, endpoint, n, uid)
    leg.context = "agents"
    return leg


def phone_call(c: Chan, far: Chan, *, answered: bool) -> Script:
    script: Script = [
        (0, newchannel(c)),
        (0, newexten(c, "Dial", f"{far.channel.split('-')[0]},30")),
        (1, newchannel(far)),
        (1, newstate(far, 5)),
    ]
    if answered:
        script += [
            (6, newstate(far, 6)),
            (6, bridge_enter(c, "b-9")),
            (6, bridge_enter(far, "b-9")),
            (60, hangup_request(far)),
            (60, hangup(far)),
            (60, hangup(c)),
        ]
    else:
        script += [(20, hangup_request(c)), (20, hangup(far, 0, "Unknown")), (20, hangup(c))]
    return script


@pytest.mark.parametrize("answered", [True, False])
def test_agent_to_agent_call_gives_no_effect(answered: bool) -> None:
    c = phone("700.1", 0x70, "1002")
    bob = dialled(c, "1002", 0x71, "700.2")
    tracker = CallTracker()
    assert run(tracker, phone_call(c, bob, answered=answered)) == []
    assert len(tracker) == 0  # followed while it lasted, nothing left behind


def test_outward_dial_from_an_agent_phone_gives_no_effect() -> None:
    c = phone("701.1", 0x72, "013800138000")
    out = Chan("PJSIP/trunk-00000073", "701.2", "701.1", num="", name="", context="agents")
    tracker = CallTracker()
    run(tracker, phone_call(c, out, answered=False)[:3])
    assert tracker.active_calls() == [] and tracker.get("701.1") is None
    assert run(tracker, phone_call(c, out, answered=True)[3:]) == []


def test_cancelled_consultation_is_not_an_ivr_abandon_and_leaves_the_call_alone() -> None:
    """Alice calls Bob to consult while her caller waits, then gives up and takes the caller
    back: the consultation must not count as a call abandoned in the IVR."""
    script = answered_call("710.1", 0x80)
    consult = phone("711.1", 0x90, "1002")
    bob = dialled(consult, "1002", 0x91, "711.2")
    script[-4:-4] = [
        (40, newchannel(consult)),
        (40, newexten(consult, "Dial", "PJSIP/1002,30")),
        (41, newchannel(bob)),
        (41, newstate(bob, 5)),
        (55, hangup_request(consult)),
        (55, hangup(bob, 0, "Unknown")),
        (55, hangup(consult)),
    ]
    effects = run(CallTracker(), script)
    assert {e.record.uniqueid for e in effects} == {"710.1"}
    assert ended(effects) == [expected_answered("710.1", 0x80)]


def test_callback_originated_from_an_agent_phone_is_still_a_hotline_call() -> None:
    """Originate creates the agent's channel Down in the endpoint's context: ours, logged."""
    agent = Chan(
        "PJSIP/1001-000000a1", "720.1", num="", name="", context="agents",
        exten="s", state=0,
    )  # fmt: skip
    script: Script = [(0, newchannel(agent)), (4, newstate(agent, 6)), (60, hangup(agent))]
    (r,) = ended(run(CallTracker(), script))
    assert (r.uniqueid, r.direction) == ("720.1", "outbound")


def learn_alice(tracker: CallTracker) -> None:
    """A queue call Alice (PJSIP/1001) is rung for: the tracker learns her phone."""
    c = Chan("PJSIP/trunk-000000b0", "730.1")
    alice = agent_leg(c, "1001", 0xB1, "730.2")
    run(tracker, [(0, newchannel(c)), (1, join(c, "support"))])
    run(tracker, [(2, newchannel(alice)), (2, agent_ev("AgentCalled", c, alice, "support"))])


def test_a_member_phone_is_internal_in_any_context() -> None:
    tracker = CallTracker()
    learn_alice(tracker)
    c = phone("731.1", 0xB2, "1002", context="phones")
    effects = run(tracker, [(10, newchannel(c)), (30, hangup(c))])
    assert effects == []


def adopted_mid_call(c: Chan) -> list[tuple[float, AmiMessage]]:
    """First seen mid-call (the service started late): no Newchannel."""
    return [(10, newexten(c, "Dial", "PJSIP/1002,30")), (30, hangup(c))]


def test_adopted_call_of_a_member_phone_is_internal() -> None:
    tracker = CallTracker()
    learn_alice(tracker)
    assert run(tracker, adopted_mid_call(phone("732.1", 0xB3, "1002"))) == []


def test_adopted_callback_from_a_member_phone_is_still_a_hotline_call() -> None:
    """A callback rings the agent's phone first (deploy [callbacks]): seen mid-call, it runs
    in the callbacks context, not the agents' one."""
    tracker = CallTracker()
    learn_alice(tracker)
    c = phone("734.1", 0xB5, "13800138000", context="callbacks")
    (r,) = ended(run(tracker, adopted_mid_call(c)))
    assert (r.uniqueid, r.adopted) == ("734.1", True)


def test_adopted_transferred_caller_in_the_agents_context_is_still_a_hotline_call() -> None:
    """After a blind transfer the caller's trunk channel runs in the agents' context: a call
    adopted there (seen first after a restart) is judged by its channel, not its context."""
    c = Chan("PJSIP/trunk-000000b4", "733.1", context="agents", exten="1002")
    effects = run(CallTracker(), adopted_mid_call(c))
    assert isinstance(effects[0], CallStarted) and effects[0].record.adopted
    (r,) = ended(effects)
    assert r.uniqueid == "733.1"


def test_internal_contexts_are_configurable() -> None:
    c = phone("740.1", 0xC0, "1002", context="phones")
    script: Script = [(0, newchannel(c)), (20, hangup(c))]
    assert [r.uniqueid for r in ended(run(CallTracker(), script))] == ["740.1"]
    assert run(CallTracker(internal_contexts={"phones"}), script) == []


def test_internal_calls_do_not_crowd_out_hotline_records() -> None:
    """The size cap may end an internal call to make room: still no effect for it."""
    tracker = CallTracker(max_calls=1)
    c = phone("750.1", 0xD0, "1002")
    run(tracker, [(0, newchannel(c))])
    hot = Chan("PJSIP/trunk-000000d1", "751.1")
    effects = run(tracker, [(5, newchannel(hot)), (65, hangup(hot))])
    assert {e.record.uniqueid for e in effects} == {"751.1"}
    assert ended(effects)[0].ended_at == at(65)


# -- after a restart: the phones are learnt from the resync's QueueMember items ----------------


def listed(c: Chan, app: str, data: str) -> AmiMessage:
    return ev(
        "CoreShowChannel", ("ActionID", "r1"), c.snap(), ("Application", app),
        ("ApplicationData", data), ("Duration", "00:00:04"), ("BridgeId", ""),
    )  # fmt: skip


def member_item(endpoint: str, event: str = "QueueMember") -> AmiMessage:
    """A QueueStatus member item (Name/Location), or a QueueMember* event (MemberName/Interface)."""
    names = ("Name", "Location") if event == "QueueMember" else ("MemberName", "Interface")
    return ev(
        event, ("Queue", "support"), (names[0], f"Agent {endpoint}"),
        (names[1], f"PJSIP/{endpoint}"), ("StateInterface", f"PJSIP/{endpoint}"),
        ("Membership", "static"), ("Penalty", "0"), ("CallsTaken", "0"), ("LastCall", "0"),
        ("LastPause", "0"), ("LoginTime", "0"), ("InCall", "0"), ("Status", "6"),
        ("Paused", "0"), ("PausedReason", ""), ("Wrapuptime", "0"),
    )  # fmt: skip


MEMBERS = (member_item("1001"), member_item("1002"))


def ringing_agent_call() -> tuple[Chan, Chan, tuple[AmiMessage, ...]]:
    """Live at the restart: Alice's phone rings Bob's ([agents] _100[1-8] Dial)."""
    a = phone("800.1", 0x10, "1002")
    b = dialled(a, "1002", 0x11, "800.2")
    b.state = 5
    return a, b, (listed(a, "Dial", "PJSIP/1002,30"), listed(b, "AppDial", "(Outgoing Line)"))


@pytest.mark.parametrize("stages", ["apart", "whole"])
def test_agent_call_live_at_a_restart_gives_no_effect(stages: str) -> None:
    a, b, channels = ringing_agent_call()
    tracker = CallTracker()  # a fresh process: no Agent* event seen yet
    if stages == "apart":
        effects = tracker.reconcile_channels(channels, at(100))
        assert tracker.active_calls() == []
        effects += run(tracker, [(101, newstate(b, 5))])  # between the two lists
        effects += tracker.reconcile_queue_entries(MEMBERS, at(102))
    else:
        effects = tracker.reconcile(Snapshot(channels, MEMBERS), at(100))
    assert effects == []
    assert tracker.active_calls() == [] and tracker.get("800.1") is None
    effects = run(tracker, [(110, hangup_request(a)), (110, hangup(b, 0, "")), (110, hangup(a))])
    assert effects == []
    assert len(tracker) == 0


def test_caller_in_the_agents_context_at_a_restart_is_published_after_the_queue_list() -> None:
    """A transferred caller's trunk channel runs in the agents' context too: it is held back
    until the member list tells it is not a phone, then published with what came meanwhile."""
    c = Chan("PJSIP/trunk-000000c0", "810.1", context="agents", exten="1002", state=6)
    tracker = CallTracker()
    assert tracker.reconcile_channels((listed(c, "Dial", "PJSIP/1002,30"),), at(100)) == []
    assert run(tracker, [(101, hangup(c))]) == []  # ended between the two lists
    effects = tracker.reconcile_queue_entries(MEMBERS, at(102))
    assert [type(e) for e in effects] == [CallStarted, CallEnded]
    (r,) = ended(effects)
    assert (r.uniqueid, r.adopted, r.ended_at) == ("810.1", True, at(101))


def test_held_calls_are_decided_without_a_queue_list() -> None:
    """QueueStatus refused (read permission): the next expiry pass decides by what is known."""
    c = Chan("PJSIP/trunk-000000c1", "811.1", context="agents", exten="1002", state=6)
    _a, _b, channels = ringing_agent_call()
    tracker = CallTracker()
    tracker.reconcile_channels((listed(c, "Dial", "PJSIP/1002,30"), *channels), at(100))
    effects = tracker.expire(at(200))
    assert [(type(e), e.record.uniqueid) for e in effects] == [
        (CallStarted, "811.1"),
        (CallStarted, "800.1"),
    ]


@pytest.mark.parametrize("event", ["QueueMemberAdded", "QueueMemberStatus"])
def test_a_phone_named_by_a_queue_member_event_is_internal(event: str) -> None:
    tracker = CallTracker()
    assert run(tracker, [(0, member_item("1001", event))]) == []
    c = phone("820.1", 0xC2, "1002", context="phones")
    assert run(tracker, [(10, newchannel(c)), (30, hangup(c))]) == []
