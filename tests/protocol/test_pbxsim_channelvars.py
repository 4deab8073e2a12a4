"""manager.conf `channelvars` in the emulator: `ChanVariable: name=value` lines at the end of every
channel block (`DestChanVariable` for the dialled party), PROTOCOL.md §1.3 and §2.1.

No transcript shows ChanVariable lines, so the byte-exact test derives its expectation from the
04 transcript itself: after each `Linkedid` / `DestLinkedid` line, one line per configured name,
valued from the VarSet events seen so far for that block's Uniqueid (unset: empty).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC

import pytest
from pbxsim_support import split_messages
from shared_asterisk import AMI_DIR

from callcenter.pbxsim.agi_client import Prompts
from callcenter.pbxsim.callers import CallerModel, KeyPlan
from callcenter.pbxsim.emulator import Emulator, EmulatorConfig, _parse
from callcenter.pbxsim.pbx import (
    STATE_RING,
    Channel,
    Ids,
    Pbx,
    VirtualClock,
    parse_channelvars,
)
from callcenter.pbxsim.queues import AgentProfile, QueueConfig

IVR_SCRIPT = [
    b"ANSWER\n",
    b'STREAM FILE custom/welcome ""\n',
    b"GET DATA custom/main-menu 5000 1\n",
    b"SET VARIABLE IVR_CHOICE 2\n",
    b"SET VARIABLE IVR_QUEUE support\n",
]
# IVR_QUEUE/IVR_CHOICE: set on the caller by the IVR; BRIDGEPEER: set on both legs; NOT_SET:
# never set; CALLCENTER_DID: set as `__CALLCENTER_DID` on the caller, so the agent leg that
# Queue() creates inherits it (no VarSet for it on that leg).
NAMES = ("IVR_QUEUE", "BRIDGEPEER", "NOT_SET", "IVR_CHOICE", "CALLCENTER_DID")

_UNIQUEID = re.compile(rb"^(|Dest)Uniqueid: (.*)$")
_LINKEDID = re.compile(rb"^(|Dest)Linkedid: ")


def with_chanvariables(messages: Sequence[bytes], names: Sequence[str]) -> list[bytes]:
    """The transcript messages as Asterisk writes them with `channelvars = <names>`: values from
    the VarSet events of each channel, and for a channel created for a call (Newchannel with
    another Linkedid) the `__` variables of the call's first channel (inheritance)."""
    values: dict[bytes, dict[str, bytes]] = {}
    inherited: dict[bytes, set[str]] = {}  # `__` names by channel
    out: list[bytes] = []
    for msg in messages:
        lines = msg.split(b"\r\n")[:-2]
        fields = dict(line.split(b": ", 1) for line in lines if b": " in line)
        if lines[0] == b"Event: Newchannel" and fields[b"Linkedid"] != fields[b"Uniqueid"]:
            parent = fields[b"Linkedid"]
            names_ = inherited.get(parent, set())
            values[fields[b"Uniqueid"]] = {n: values[parent][n] for n in names_}
            inherited[fields[b"Uniqueid"]] = set(names_)
        if lines[0] == b"Event: VarSet":
            raw = fields[b"Variable"].decode()
            name = raw.lstrip("_")
            values.setdefault(fields[b"Uniqueid"], {})[name] = fields[b"Value"]
            if raw.startswith("__"):
                inherited.setdefault(fields[b"Uniqueid"], set()).add(name)
        uid_of: dict[bytes, bytes] = {}
        new: list[bytes] = []
        for line in lines:
            new.append(line)
            if m := _UNIQUEID.match(line):
                uid_of[m.group(1)] = m.group(2)
            elif m := _LINKEDID.match(line):
                prefix = m.group(1)
                chan = values.get(uid_of[prefix], {})
                new += [
                    prefix + b"ChanVariable: " + n.encode() + b"=" + chan.get(n, b"") for n in names
                ]
        out.append(b"\r\n".join(new) + b"\r\n\r\n")
    return out


@pytest.fixture
async def agi_port() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\n\n")
            for line in IVR_SCRIPT:
                writer.write(line)
                await writer.drain()
                reply = await reader.readline()
                if not reply or reply == b"HANGUP\n":
                    break
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def call_04_emulator(agi_port: int, channelvars: tuple[str, ...]) -> Emulator:
    """The deterministic set-up of transcript 04 (see test_pbxsim_core_transcripts.py)."""
    bridges = iter(["a6d1b5f2-3c0e-4c1a-9b0c-7e5d2f9c1a44"])
    call_ids = {
        "PJSIP/trunk": "a84b4c76e66710@198.51.100.7",
        "PJSIP/1001": "5f0c1e4a-7d2b-4c8e-9a1f-3b6d8e2c4f10",
    }
    ids = Ids(
        uniqueid_numbers=iter([12, 13]),
        channel_numbers=iter([0, 1]),
        uuid_factory=lambda: next(bridges),
        call_id_factory=lambda name: call_ids[name.rsplit("-", 1)[0]],
    )
    alice = AgentProfile(
        "PJSIP/1001", "Alice Agent", answer_delay=(7.0, 7.0), talk_time=(900, 900), forced="answer"
    )
    cfg = EmulatorConfig(
        agi_port=4573,
        agi_script="ivr",
        queues=[QueueConfig("support", member_delay=1.0)],
        agents=[alice],
        members={"support": []},
        tz=UTC,
        agi_address_map={("127.0.0.1", 4573): ("127.0.0.1", agi_port)},
        prompts=Prompts(durations={"custom/main-menu": 24.5}),
        channelvars=channelvars,
    )
    emu = Emulator(config=cfg, clock=VirtualClock(start=1715681702.0), ids=ids)
    emu.acd.add_member(
        "support", "PJSIP/1001", calls_taken=12, last_call=1715680001, login_time=1715650000
    )
    return emu


async def run_call_04(emu: Emulator) -> list[bytes]:
    async with emu:
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.ami_address[1])
        await reader.readline()
        writer.write(
            b"Action: Login\r\nUsername: callcenter\r\nSecret: secret\r\n"
            b"Events: call,dialplan,agi,agent,dtmf,cdr\r\n\r\n"
        )
        assert b"Authentication accepted" in await reader.readuntil(b"\r\n\r\n")
        caller = CallerModel(
            number="15551234567",
            name="John Smith",
            keys=[KeyPlan("2", delay=24.0)],
            talk_limit=147.0,
        )
        await emu.inbound_call(caller)
        got: list[bytes] = []
        while not got or not got[-1].startswith(b"Event: Cdr"):
            got.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10))
        writer.close()
    return got


@pytest.mark.skipif(not AMI_DIR.is_dir(), reason="transcripts not available")
async def test_call_04_with_channelvars_byte_exact(agi_port: int) -> None:
    transcript = split_messages(
        (AMI_DIR / "raw/04_inbound_ivr_queue_agent_call.ast.raw").read_bytes()
    )
    want = with_chanvariables(transcript, NAMES)
    got = await run_call_04(call_04_emulator(agi_port, NAMES))
    assert [m.split(b"\r\n")[0] for m in got] == [m.split(b"\r\n")[0] for m in want]
    for g, w in zip(got, want, strict=True):
        assert g == w
    # the oracle really inserted lines (values seen, both prefixes, events without a channel)
    joined = b"".join(got)
    assert b"\r\nChanVariable: IVR_QUEUE=support\r\n" in joined
    assert b"\r\nChanVariable: BRIDGEPEER=PJSIP/trunk-00000000\r\n" in joined
    assert b"\r\nDestChanVariable: NOT_SET=\r\n" in joined
    agent_leg = [m for m in got if m.startswith(b"Event: Newchannel") and b"PJSIP/1001" in m]
    assert agent_leg and b"\r\nChanVariable: CALLCENTER_DID=5551000\r\n" in agent_leg[0]
    hangups = [m for m in got if m.startswith(b"Event: Hangup\r\n")]
    assert hangups and all(
        re.search(rb"Linkedid: [^\r]*\r\n(ChanVariable: [^\r]*\r\n){5}Cause: ", m) for m in hangups
    )
    cdr = got[-1]
    assert b"ChanVariable" not in cdr


@pytest.mark.skipif(not AMI_DIR.is_dir(), reason="transcripts not available")
async def test_call_04_without_channelvars_is_the_transcript(agi_port: int) -> None:
    transcript = split_messages(
        (AMI_DIR / "raw/04_inbound_ivr_queue_agent_call.ast.raw").read_bytes()
    )
    assert with_chanvariables(transcript, ()) == transcript
    assert await run_call_04(call_04_emulator(agi_port, ())) == transcript


async def test_functions_unset_values_and_reload() -> None:
    events: list[tuple[str, list[tuple[str, str]]]] = []
    pbx = Pbx(
        publish=lambda name, klass, fields: events.append((name, list(fields))),
        clock=VirtualClock(),
        channelvars="CALLERID(num), DID ,,EMPTY",
    )
    assert pbx.channelvars == ("CALLERID(num)", "DID", "EMPTY")
    ch = pbx.new_channel(
        endpoint="trunk", context="from-trunk", exten="5551000", state=STATE_RING,
        caller_num="13800138000",
    )  # fmt: skip
    pbx.set_var(ch, "__DID", "line1\nline2")
    pbx.set_channelvars(["EMPTY"])  # a manager reload applies to live channels' next events
    pbx.hangup(ch, 16)
    newchannel, varset, hangup = (fields for _, fields in events)
    assert newchannel[-3:] == [
        ("ChanVariable", "CALLERID(num)=13800138000"),
        ("ChanVariable", "DID="),
        ("ChanVariable", "EMPTY="),
    ]
    assert newchannel[-4][0] == "Linkedid"
    assert varset[-5:-2] == [
        ("ChanVariable", "CALLERID(num)=13800138000"),
        ("ChanVariable", "DID=line1\\nline2"),  # a raw line break would end the message
        ("ChanVariable", "EMPTY="),
    ]
    assert [k for k, _ in hangup[-4:]] == ["Linkedid", "ChanVariable", "Cause", "Cause-txt"]


def test_channelvars_parsing_and_cli() -> None:
    assert parse_channelvars(" A , B,,C ") == ["A", "B", "C"]
    assert parse_channelvars(["CALLERID(name)"]) == ["CALLERID(name)"]
    for bad in ("A=1", "A B", ["A,B"]):
        with pytest.raises(ValueError, match="channelvars"):
            parse_channelvars(bad)
    assert _parse(["--channelvars", "A, B"]).channelvars == ("A", "B")
    assert _parse([]).channelvars == ()
    with pytest.raises(SystemExit):
        _parse(["--channelvars", "A=1"])


def test_callcenter_pbxsim_takes_channelvars() -> None:
    from callcenter.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["pbxsim", "--channelvars", "CALLERID(num), DID"])
    assert args.channelvars == ("CALLERID(num)", "DID")
    assert parser.parse_args(["pbxsim"]).channelvars == ()
    with pytest.raises(SystemExit):
        parser.parse_args(["pbxsim", "--channelvars", "A=1"])


def test_variables_are_inherited_as_asterisk_does() -> None:
    """`__X` goes to every later generation, `_X` to the next channel only (as plain X), a plain
    X to none; setting X plainly afterwards ends its inheritance."""
    events: list[tuple[str, list[tuple[str, str]]]] = []
    pbx = Pbx(
        publish=lambda name, klass, fields: events.append((name, list(fields))),
        clock=VirtualClock(),
        channelvars=["ALWAYS", "ONCE", "PLAIN", "ENDED"],
    )

    def chan(parent: Channel | None = None) -> Channel:
        return pbx.new_channel(
            endpoint="x", context="c", exten="s", state=STATE_RING, parent=parent
        )

    caller = chan()
    for name, value in (("__ALWAYS", "a"), ("_ONCE", "o"), ("PLAIN", "p"), ("__ENDED", "e")):
        pbx.set_var(caller, name, value)
    pbx.set_var(caller, "ENDED", "e2")
    n = len(events)
    child = chan(caller)
    grandchild = chan(child)
    assert [name for name, _ in events[n:]] == ["Newchannel", "Newchannel"]  # no VarSet
    chanvars = [[v for k, v in fields if k == "ChanVariable"] for _, fields in events[n:]]
    assert chanvars == [
        ["ALWAYS=a", "ONCE=o", "PLAIN=", "ENDED="],
        ["ALWAYS=a", "ONCE=", "PLAIN=", "ENDED="],
    ]
    assert grandchild.get_var("__ALWAYS") == "a"
