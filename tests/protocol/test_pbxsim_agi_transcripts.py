"""The emulator's FastAGI client against agi_transcripts/01-06, byte for byte.

A scripted FastAGI server (real TCP socket) sends exactly the APP lines of a transcript and reads
exactly as many bytes as the transcript's AST lines hold; what it read must equal them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from shared_asterisk import AGI_DIR

from callcenter.pbxsim.agi_client import AgiSession, AgiUrl, Prompts
from callcenter.pbxsim.callers import CallerModel, IvrHangup, KeyPlan
from callcenter.pbxsim.pbx import STATE_UP, Channel, Ids, Pbx, VirtualClock

pytestmark = pytest.mark.skipif(not AGI_DIR.is_dir(), reason="transcripts not available")


@dataclass
class Section:
    title: str
    items: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def ast(self) -> bytes:
        return b"".join(d for k, d in self.items if k == "AST")

    @property
    def has_env(self) -> bool:
        return bool(self.items) and self.items[0][1].startswith(b"agi_network: yes")


def parse_transcript(path: Path) -> list[Section]:
    """Annotated transcript -> sections split at '# ---- ' lines (same rules as make_raw.py)."""
    sections = [Section("main")]
    for line in path.read_text().split("\n"):
        if line.startswith("# ---- "):
            sections.append(Section(line))
            continue
        for tag in ("AST>", "APP>"):
            if line.startswith(tag):
                body = line[len(tag) :]
                if body.startswith(" "):
                    body = body[1:]
                if body.endswith(":") and " " not in body:
                    body += " "
                body = body.replace("<CR>", "\r")
                sections[-1].items.append((tag[:3], body.encode() + b"\n"))
    out = [s for s in sections if s.items]
    # the environment block is one AST chunk up to the empty line
    for s in out:
        merged: list[tuple[str, bytes]] = []
        for k, d in s.items:
            if merged and merged[-1][0] == k == "AST":
                merged[-1] = (k, merged[-1][1] + d)
            else:
                merged.append((k, d))
        s.items = merged
    return out


async def scripted_server(
    items: Sequence[tuple[str, bytes]],
) -> tuple[asyncio.Server, int, asyncio.Future[bytes]]:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = b""
        try:
            for kind, data in items:
                if kind == "AST":
                    try:
                        seen += await asyncio.wait_for(reader.readexactly(len(data)), 10)
                    except asyncio.IncompleteReadError as exc:
                        seen += exc.partial
                        break
                else:
                    writer.write(data)
                    await writer.drain()
        finally:
            writer.close()
            if not got.done():
                got.set_result(seen)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port, got


@dataclass
class Scenario:
    channel: str
    uniqueid: str
    callerid: str
    name: str
    dnid: str
    context: str
    exten: str
    priority: int
    threadid: int
    request: str
    script: str | None
    args: tuple[str, ...] = ()
    language: str = "en"
    accountcode: str = ""
    caller_keys: Sequence[KeyPlan | str | None] = ()
    hangup: IvrHangup | None = None
    exit_on_hangup: bool = False
    prompts: Mapping[str, float] = field(default_factory=dict)


async def run_section(sc: Scenario, items: Sequence[tuple[str, bytes]]) -> bytes:
    server, port, got = await scripted_server(items)
    clock = VirtualClock(start=float(sc.uniqueid.split(".")[0]))
    ids = Ids(thread_ids=iter([sc.threadid]))
    pbx = Pbx(publish=lambda *a: None, clock=clock, ids=ids)
    tech = sc.channel.split("/")[0]
    ch = Channel(
        name=sc.channel,
        tech=tech,
        endpoint=sc.channel.split("/")[1].rsplit("-", 1)[0],
        uniqueid=sc.uniqueid,
        linkedid=sc.uniqueid,
        context=sc.context,
        exten=sc.exten,
        created=clock.time(),
        priority=sc.priority,
        state=STATE_UP,
        caller_num=sc.callerid,
        caller_name=sc.name,
        language=sc.language,
        accountcode=sc.accountcode,
        dnid=sc.dnid,
    )
    pbx.channels[ch.name] = ch
    caller = CallerModel(
        number=sc.callerid, name=sc.name, keys=sc.caller_keys, ivr_hangup=sc.hangup
    )

    async def apps(channel: Channel, app: str, data: str) -> int | None:
        if app.lower() == "queue":  # EXEC Queue ... tc: the agent hangs up first -> CONTINUE
            await clock.sleep(240)
            pbx.set_var(channel, "QUEUESTATUS", "CONTINUE")
            return 0
        if app.lower() == "mixmonitor":
            return 0
        return None

    session = AgiSession(
        pbx=pbx,
        channel=ch,
        url=AgiUrl("127.0.0.1", port, sc.script, sc.request, sc.args),
        caller=caller,
        prompts=Prompts(durations=dict(sc.prompts)),
        apps=apps,
        exit_on_hangup=sc.exit_on_hangup,
        extension_exists=lambda c, e, p: (c, e) == ("ivr-helpers", "play-hours"),
    )
    result = await session.run()
    assert result.connected
    data = await asyncio.wait_for(got, 10)
    server.close()
    await server.wait_closed()
    return data


TRUNK = dict(
    request="agi://127.0.0.1:4573/ivr",
    script="ivr",
    dnid="5551000",
    context="from-trunk",
    exten="5551000",
    priority=3,
)


async def check(path: Path, scenarios: Sequence[Scenario]) -> None:
    sections = parse_transcript(path)
    assert len(sections) == len(scenarios)
    env = sections[0].items[0]
    total = b""
    for sec, sc in zip(sections, scenarios, strict=True):
        items = sec.items if sec.has_env else [env, *sec.items]
        got = await run_section(sc, items)
        want = b"".join(d for k, d in items if k == "AST")
        assert got == want, sec.title
        total += got if sec.has_env else got[len(env[1]) :]
    raw = (AGI_DIR / "raw" / (path.stem + ".ast.raw")).read_bytes()
    assert total == raw


async def test_01_ivr_menu_happy_path() -> None:
    sc = Scenario(
        channel="PJSIP/trunk-00000000",
        uniqueid="1715681702.12",
        callerid="15551234567",
        name="John Smith",
        threadid=139780010514176,
        caller_keys=[KeyPlan("2", delay=3.0)],
        **TRUNK,  # type: ignore[arg-type]
    )
    await check(AGI_DIR / "01_ivr_menu_happy_path.txt", [sc])


async def test_02_caller_hangup_during_playback() -> None:
    base = Scenario(
        channel="PJSIP/trunk-00000002",
        uniqueid="1715681900.16",
        callerid="15557770000",
        name="",
        threadid=139780002121472,
        **TRUNK,  # type: ignore[arg-type]
    )
    await check(
        AGI_DIR / "02_caller_hangup_during_playback.txt",
        [
            replace(base, hangup=IvrHangup(command=1, after=1.4)),
            replace(base, hangup=IvrHangup(command=0)),
            replace(base, hangup=IvrHangup(command=0, after=1.0), exit_on_hangup=True),
        ],
    )


async def test_03_errors_510_511_520() -> None:
    sc = Scenario(
        channel="PJSIP/1001-00000010",
        uniqueid="1715685000.70",
        callerid="1001",
        name="Alice Agent",
        dnid="600",
        context="from-internal",
        exten="600",
        priority=1,
        threadid=139779993728768,
        request="agi://127.0.0.1:4573/ivr",
        script="ivr",
    )
    await check(AGI_DIR / "03_errors_510_511_520.txt", [sc])


async def test_04_exec_queue_blocking() -> None:
    sc = Scenario(
        channel="PJSIP/trunk-00000008",
        uniqueid="1715686000.80",
        callerid="15554445555",
        name="Pat Doe",
        threadid=139779985336064,
        prompts={"custom/survey-intro": 3.0},
        **TRUNK,  # type: ignore[arg-type]
    )
    await check(AGI_DIR / "04_exec_queue_blocking.txt", [sc])


async def test_05_gosub_and_misc_results() -> None:
    keys: list[KeyPlan | str | None] = [
        KeyPlan("1", delay=1.3),  # STREAM FILE custom/main-menu "123"
        None,  # WAIT FOR DIGIT -> timeout
        KeyPlan("#", delay=2.0),  # WAIT FOR DIGIT -> '#'
        KeyPlan("123456", delay=1.0, inter_digit=0.5),  # GET DATA, max digits
        KeyPlan("12", delay=1.0),  # GET DATA, then timeout
        None,  # GET DATA, nothing
        KeyPlan("2", delay=3.0),  # GET OPTION: after the 2 s prompt
        KeyPlan("#", delay=6.6),  # RECORD FILE -> dtmf
        None,  # RECORD FILE -> timeout
        None,  # RECORD FILE -> writefile
    ]
    sc = Scenario(
        channel="PJSIP/1001-00000011",
        uniqueid="1715687000.90",
        callerid="1001",
        name="Alice Agent",
        dnid="601",
        context="from-internal",
        exten="601",
        priority=1,
        threadid=139779976943360,
        request="agi://127.0.0.1:4573/misc",
        script="misc",
        caller_keys=keys,
        prompts={"custom/press-1-or-2": 2.0},
    )
    await check(AGI_DIR / "05_gosub_and_misc_results.txt", [sc])


async def test_06_env_variants() -> None:
    a = Scenario(
        channel="PJSIP/trunk-0000000a",
        uniqueid="1715688000.95",
        callerid="33140000000",
        name="",
        dnid="5551000",
        context="from-trunk",
        exten="5551000",
        priority=3,
        threadid=139779968550656,
        request="agi://127.0.0.1:4573/ivr?lang=fr&mode=night",
        script="ivr?lang=fr&mode=night",
        args=("sales", "", "3"),
        language="fr",
    )
    b = Scenario(
        channel="PJSIP/1001-00000012",
        uniqueid="1715688100.97",
        callerid="1001",
        name="Alice Agent",
        dnid="",
        context="from-internal",
        exten="602",
        priority=1,
        threadid=139779960157952,
        request="agi://127.0.0.1",
        script=None,
        accountcode="sales-dept",
    )
    await check(AGI_DIR / "06_env_variants.txt", [a, b])


def test_url_parsing() -> None:
    u = AgiUrl.parse("agi://127.0.0.1:4573/ivr?lang=fr&mode=night,sales,,3")
    assert (u.host, u.port, u.script, u.args) == (
        "127.0.0.1",
        4573,
        "ivr?lang=fr&mode=night",
        ("sales", "", "3"),
    )
    assert u.request == "agi://127.0.0.1:4573/ivr?lang=fr&mode=night"
    bare = AgiUrl.parse("agi://127.0.0.1")
    assert (bare.port, bare.script) == (4573, None)
    with pytest.raises(ValueError):
        AgiUrl.parse("http://x")
