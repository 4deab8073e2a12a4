"""deploy/asterisk/manager.conf: its event filters, applied by the emulator's filter engine (a
port of Asterisk's), drop noise but nothing the trackers need: the call log built from the
filtered stream of a recorded call equals the one built from the full stream."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from shared_asterisk import AMI_RAW

from callcenter.agents.service import AgentStateTracker
from callcenter.asterisk.events import decode_event
from callcenter.asterisk.framing import AmiFramer
from callcenter.asterisk.message import AmiMessage
from callcenter.calls.service import CallEnded, CallTracker
from callcenter.pbxsim.ami_server import EventFilter, parse_filter, should_send

ROOT = Path(__file__).resolve().parents[2]
MANAGER_CONF = ROOT / "deploy" / "asterisk" / "manager.conf"
TRANSCRIPTS = AMI_RAW
NOW = datetime(2026, 5, 14, 10, 0, tzinfo=UTC)


def _filters() -> list[EventFilter]:
    filters = []
    section = ""
    for line in MANAGER_CONF.read_text(encoding="utf-8").splitlines():
        line = line.split(";", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "callcenter" and line.startswith("eventfilter"):
            criteria, _, pattern = line.partition("=")
            filters.append(parse_filter(criteria.strip(), pattern.strip()))
    return filters


def _text(msg: AmiMessage) -> str:
    return msg.to_bytes().decode("utf-8")


def _events(name: str) -> list[AmiMessage]:
    path = TRANSCRIPTS / f"{name}.ast.raw"
    if not path.is_file():
        pytest.skip(f"transcript {path} not available")
    framer = AmiFramer()
    return [m for m in framer.feed(path.read_bytes()) if m.kind == "event"]


def test_manager_conf_filters_parse() -> None:
    filters = _filters()
    assert len(filters) > 20
    assert all(not f.exclude for f in filters)


@pytest.mark.parametrize(
    ("event", "passes"),
    [
        (
            "Event: VarSet\r\nChannel: PJSIP/t-1\r\nVariable: MIXMONITOR_FILENAME\r\nValue: /x.wav",
            True,
        ),
        (
            "Event: VarSet\r\nChannel: PJSIP/t-1\r\nVariable: __CALLCENTER_DID\r\nValue: 5551000",
            True,
        ),
        ("Event: VarSet\r\nChannel: PJSIP/t-1\r\nVariable: IVR_QUEUE\r\nValue: bookings", True),
        (
            "Event: VarSet\r\nChannel: PJSIP/t-1\r\nVariable: BRIDGEPEER\r\nValue: PJSIP/1001-1",
            False,
        ),
        (
            "Event: VarSet\r\nChannel: PJSIP/t-1\r\nVariable: PLAYBACKSTATUS\r\nValue: SUCCESS",
            False,
        ),
        ("Event: Newexten\r\nChannel: PJSIP/t-1\r\nApplication: NoOp\r\nAppData: x", False),
        ("Event: Newexten\r\nChannel: PJSIP/t-1\r\nApplication: Hangup\r\nAppData: ", True),
        ("Event: Newexten\r\nChannel: PJSIP/t-1\r\nApplication: Queue\r\nAppData: q,t", True),
        ("Event: Cdr\r\nSource: 1\r\n", False),
        ("Event: RTCPSent\r\nChannel: PJSIP/t-1\r\n", False),
        ("Event: QueueCallerAbandon\r\nChannel: PJSIP/t-1\r\nQueue: general\r\n", True),
        ("Event: Hangup\r\nChannel: PJSIP/t-1\r\nCause: 16\r\n", True),
    ],
)
def test_filter_decisions(event: str, passes: bool) -> None:
    name = re.match(r"Event: (\w+)", event)
    assert name is not None
    assert should_send(_filters(), name.group(1), event + "\r\n\r\n") is passes


@pytest.mark.parametrize("transcript", ["04_inbound_ivr_queue_agent_call", "05_queue_abandon"])
def test_filtered_stream_gives_the_same_call_log(transcript: str) -> None:
    events = _events(transcript)
    filters = _filters()
    kept = [m for m in events if should_send(filters, m.name, _text(m))]
    assert len(kept) < len(events)  # something was filtered out

    def ended(stream: list[AmiMessage]) -> list[object]:
        calls, agents = CallTracker(), AgentStateTracker()
        out: list[object] = []
        for msg in stream:
            ev = decode_event(msg)
            if ev is None:
                continue
            out.extend(e.record for e in calls.apply(ev, NOW) if isinstance(e, CallEnded))
            agents.apply(ev, NOW)
        return out

    full, filtered = ended(events), ended(kept)
    assert full, "the transcript should end a call"
    assert filtered == full
