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


# --- deploy/asterisk/extensions.conf: what [from-trunk] does after AGI() ----------------------

EXTENSIONS_CONF = ROOT / "deploy" / "asterisk" / "extensions.conf"
_PRIORITY = re.compile(
    r"^(?:exten\s*=>\s*[^,]+,\s*1|same\s*=>\s*n(?:\((\w+)\))?)\s*,\s*(\w+)\((.*)\)$"
)
_VAR = re.compile(r"\$\{([^}]*)\}")
_EQUALS = re.compile(r'^\$\["(.*)"\s*(=|!=)\s*"(.*)"\]\?(\w+)(?::(\w+))?$')


def _from_trunk() -> list[tuple[str | None, str, str]]:
    """The hotline extension's priorities as (label, application, data)."""
    priorities: list[tuple[str | None, str, str]] = []
    section = ""
    for raw in EXTENSIONS_CONF.read_text(encoding="utf-8").splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "from-trunk" and line:
            match = _PRIORITY.match(line)
            assert match is not None, f"cannot read {line!r}"
            priorities.append((match[1], match[2], match[3]))
    return priorities


def _run_from_trunk(agi: dict[str, str]) -> tuple[str, str]:
    """Run [from-trunk] for a caller; AGI() sets the channel variables in ``agi``. Returns
    ("queue", queue name) or ("hangup", "")."""
    plan = _from_trunk()
    labels = {label: i for i, (label, _, _) in enumerate(plan) if label is not None}
    variables: dict[str, str] = {"EXTEN": "4008001234", "CALLERID(num)": "13800138000"}
    i = 0
    for _ in range(100):
        _, app, data = plan[i]
        data = _VAR.sub(lambda m: variables.get(m[1], ""), data)
        i += 1
        match app:
            case "AGI":
                variables.update(agi)
            case "Set":
                name, _, value = data.partition("=")
                variables[name.lstrip("_")] = value
            case "GotoIf":
                cond = _EQUALS.match(data)
                assert cond is not None, f"unsupported condition {data!r}"
                left, op, right, then, otherwise = cond.groups()
                target = then if (left == right) == (op == "=") else otherwise
                if target is not None:
                    i = labels[target]
            case "Goto":
                i = labels[data]
            case "Queue":
                return "queue", data.split(",")[0]
            case "Hangup":
                return "hangup", ""
            case "NoOp" | "Answer" | "Gosub" | "Playback":
                pass
            case _:
                raise AssertionError(f"application {app} not modelled")
    raise AssertionError("the dialplan loops")


@pytest.mark.parametrize(
    ("agi", "end"),
    [
        pytest.param(
            {"AGISTATUS": "SUCCESS", "IVR_QUEUE": "bookings"}, ("queue", "bookings"), id="routed"
        ),
        # the caller hung up, or the IVR hung up itself (AGI HANGUP command)
        pytest.param({"AGISTATUS": "HANGUP"}, ("hangup", ""), id="hangup"),
        pytest.param(
            {"AGISTATUS": "HANGUP", "IVR_QUEUE": "bookings"}, ("hangup", ""), id="hangup-routed"
        ),
        # the service is unreachable
        pytest.param({"AGISTATUS": "FAILURE"}, ("queue", "general"), id="unreachable"),
        pytest.param({"AGISTATUS": "NOTFOUND"}, ("queue", "general"), id="notfound"),
        # a live channel back without a decision: the service stopped or died mid-call
        pytest.param({"AGISTATUS": "SUCCESS"}, ("queue", "general"), id="no-decision"),
        pytest.param(
            {"AGISTATUS": "SUCCESS", "IVR_QUEUE": ""}, ("queue", "general"), id="empty-queue"
        ),
    ],
)
def test_from_trunk_after_the_ivr(agi: dict[str, str], end: tuple[str, str]) -> None:
    assert _run_from_trunk(agi) == end
