"""CallTracker: a member's talk is counted once, whichever leg its AgentComplete names.

app_queue's AgentConnect names the member channel it dialled; its AgentComplete names the
member channel at the end (`send_agent_complete`): for a Local member (`Local/1001@agents/n`)
that is the phone channel optimised in, and when the member snapshot is gone there is no Dest
block at all.
"""

from __future__ import annotations

import pytest
from test_call_tracker import (
    Chan,
    Script,
    agent_ev,
    bridge_enter,
    ended,
    hangup,
    hangup_request,
    join,
    leave,
    newchannel,
    newexten,
    newstate,
    run,
)
from test_call_tracker_transfer import answered_by_alice, complete

from callcenter.asterisk.message import AmiMessage
from callcenter.calls.service import CallTracker

LOCAL_MEMBER = "Local/1001@agents/n"


def local_member_ev(name: str, c: Chan, leg: Chan | None, *extra: tuple[str, str]) -> AmiMessage:
    """An Agent* event of the Local member; `leg` None: no Dest block."""
    m = agent_ev(name, c, leg or c, "support", *extra)
    headers = [
        (k, LOCAL_MEMBER if k == "Interface" else v)
        for k, v in m.headers
        if leg is not None or not k.startswith("Dest")
    ]
    return AmiMessage(tuple(headers))


@pytest.mark.parametrize("complete_names", ["local", "phone", "nothing"])
def test_local_member_talk_is_counted_once(complete_names: str) -> None:
    c = Chan("PJSIP/trunk-00000001", "700.1")
    local1 = Chan("Local/1001@agents-00000001;1", "700.2", c.linkedid, num="", context="agents")
    local2 = Chan("Local/1001@agents-00000001;2", "700.3", c.linkedid, num="", context="agents")
    phone = Chan("PJSIP/1001-00000002", "700.4", c.linkedid, num="", context="agents", state=0)
    named = {"local": local1, "phone": phone, "nothing": None}[complete_names]
    script: Script = [
        (0, newchannel(c)),
        (5, newexten(c, "Queue", "support,t,,,300")),
        (5, join(c, "support")),
        (6, newchannel(local1)),
        (6, newchannel(local2)),
        (6, local_member_ev("AgentCalled", c, local1)),
        (7, newchannel(phone)),
        (10, newstate(phone, 6)),
        (10, newstate(local1, 6)),
        (10, leave(c, "support")),
        (10, local_member_ev("AgentConnect", c, local1, ("HoldTime", "5"), ("RingTime", "4"))),
        (10, bridge_enter(c)),
        (11, hangup(local1)),  # the Local pair optimised away: the phone takes its place
        (11, hangup(local2)),
        (11, bridge_enter(phone)),
        (70, hangup_request(c)),
        (70, local_member_ev("AgentComplete", c, named, ("HoldTime", "5"), ("TalkTime", "60"))),
        (70, hangup(phone)),
        (70, hangup(c)),
    ]
    (r,) = ended(run(CallTracker(), script))
    assert r.talk_seconds == 60.0


def test_agent_complete_without_dest_after_a_transfer_counts_its_talk_time_once() -> None:
    """A PJSIP member whose AgentComplete (Reason transfer) has no Dest block: her TalkTime,
    not also her stint on the clock up to the transfer."""
    c, alice, script = answered_by_alice("701.1", 0x20)
    done = complete(c, alice, "support", 60, "transfer")
    done = AmiMessage(tuple(h for h in done.headers if not h[0].startswith("Dest")))
    script += [(70, done), (70, hangup(alice)), (80, hangup(c))]
    (r,) = ended(run(CallTracker(), script))
    assert r.talk_seconds == 60.0
