"""FastAGI wire parsing: environment, command quoting, and every reply format of the transcripts."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shared_asterisk import AGI_RAW

from callcenter.asterisk.agi import (
    AgiConnectionLost,
    AgiEnvironment,
    AgiProtocolError,
    AgiReply,
    ReplyAssembler,
    command_words,
    format_command,
    parse_reply_line,
    quote_arg,
    read_environment,
)
from callcenter.pbxsim.agi_client import parse_args

RAW = AGI_RAW
needs_raw = pytest.mark.skipif(not RAW.is_dir(), reason="transcripts not available")


# ---------------------------------------------------------------------------------------------
# single reply lines


@pytest.mark.parametrize(
    ("line", "code", "result", "data", "extras", "note"),
    [
        ("200 result=0", 200, "0", None, {}, ""),
        ("200 result=0 endpos=36800", 200, "0", None, {"endpos": "36800"}, ""),
        ("200 result=49 endpos=10400", 200, "49", None, {"endpos": "10400"}, ""),
        ("200 result=-1 endpos=0", 200, "-1", None, {"endpos": "0"}, ""),
        ("200 result=123456", 200, "123456", None, {}, ""),
        ("200 result=12 (timeout)", 200, "12", "timeout", {}, ""),
        ("200 result= (timeout)", 200, "", "timeout", {}, ""),
        ("200 result=1 (1001)", 200, "1", "1001", {}, ""),
        ("200 result=1 (Alice Agent-600)", 200, "1", "Alice Agent-600", {}, ""),
        ("200 result=1 (a) b (c)", 200, "1", "a) b (c", {}, ""),
        ("200 result=35 (dtmf) endpos=52800", 200, "35", "dtmf", {"endpos": "52800"}, ""),
        ("200 result=0 (timeout) endpos=80000", 200, "0", "timeout", {"endpos": "80000"}, ""),
        ("200 result=-1 (hangup) endpos=4000", 200, "-1", "hangup", {"endpos": "4000"}, ""),
        ("200 result=-1 (writefile)", 200, "-1", "writefile", {}, ""),
        ("200 result=0 Gosub complete", 200, "0", None, {}, "Gosub complete"),
        ("200 result=-1 Gosub label not found", 200, "-1", None, {}, "Gosub label not found"),
        ("200 result=-2", 200, "-2", None, {}, ""),
        ("200 result=50 endpos=16000", 200, "50", None, {"endpos": "16000"}, ""),
        ("510 Invalid or unknown command", 510, "", None, {}, "Invalid or unknown command"),
        (
            "511 Command Not Permitted on a dead channel or intercept routine",
            511,
            "",
            None,
            {},
            "Command Not Permitted on a dead channel or intercept routine",
        ),
        (
            "520 Invalid command syntax.  Proper usage not available.",
            520,
            "",
            None,
            {},
            "Invalid command syntax.  Proper usage not available.",
        ),
    ],
)
def test_parse_reply_line(
    line: str, code: int, result: str, data: str | None, extras: dict[str, str], note: str
) -> None:
    r = parse_reply_line(line)
    assert (r.code, r.result, r.data, dict(r.extras), r.note) == (code, result, data, extras, note)
    assert r.text == line


def test_reply_helpers() -> None:
    assert parse_reply_line("200 result=49 endpos=10400").digit == "1"
    assert parse_reply_line("200 result=35").digit == "#"
    assert parse_reply_line("200 result=42").digit == "*"
    assert parse_reply_line("200 result=0").digit is None
    assert parse_reply_line("200 result=-1 endpos=0").digit is None
    assert parse_reply_line("200 result=-1 endpos=11200").endpos == 11200
    assert parse_reply_line("200 result= (timeout)").timed_out
    assert parse_reply_line("200 result= (timeout)").result_int is None
    assert parse_reply_line("200 result=1 (timeout)").result_int == 1


@pytest.mark.parametrize("line", ["", "HELLO", "20 result=0", "200 nothing", "abc result=1"])
def test_garbage_reply_raises(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        parse_reply_line(line)


# ---------------------------------------------------------------------------------------------
# the assembler (multi-line 520, 100 Trying, HANGUP)


def feed_all(lines: list[str]) -> list[AgiReply | str]:
    asm = ReplyAssembler()
    out: list[AgiReply | str] = []
    for line in lines:
        item = asm.feed(line)
        if item is not None:
            out.append(item)
    assert not asm.in_block
    return out


def test_multiline_520_block_including_empty_lines() -> None:
    lines = [
        "520-Invalid command syntax.  Proper usage follows:",
        " Send the given file.",
        "",
        "520-looking line inside",
        "HANGUP",
        "520 End of proper usage.",
        "200 result=-1 endpos=0",
    ]
    out = feed_all(lines)
    assert len(out) == 2
    first, second = out
    assert isinstance(first, AgiReply) and first.code == 520
    assert first.text.splitlines()[0].startswith("520-Invalid") and "HANGUP" in first.text
    assert isinstance(second, AgiReply) and second.endpos == 0


def test_100_trying_is_intermediate() -> None:
    out = feed_all(["100 result=0 Trying...", "200 result=0 Gosub complete"])
    assert len(out) == 1 and isinstance(out[0], AgiReply) and out[0].note == "Gosub complete"


@pytest.mark.parametrize("line", ["HANGUP", "HANGUP ", "HANGUP\r", "HANGUP junk", "HANGUPxyz"])
def test_hangup_notification_forms(line: str) -> None:
    assert feed_all([line, "200 result=1"]) == [
        ReplyAssembler.HANGUP,
        parse_reply_line("200 result=1"),
    ]


def test_lowercase_hangup_is_not_a_notification() -> None:
    with pytest.raises(AgiProtocolError):
        feed_all(["hangup"])


def test_oversized_520_block_is_bounded() -> None:
    asm = ReplyAssembler()
    asm.feed("520-Invalid command syntax.  Proper usage follows:")
    with pytest.raises(AgiProtocolError):
        for _ in range(10_000):
            asm.feed("x")


def split_raw(data: bytes) -> tuple[list[list[str]], list[str]]:
    """Environment blocks and the reply lines that follow them."""
    text = data.decode("utf-8")
    lines = text.split("\n")
    assert lines[-1] == ""
    lines = lines[:-1]
    envs: list[list[str]] = []
    replies: list[str] = []
    current: list[str] | None = None
    for line in lines:
        if line.startswith("agi_"):
            if current is None:
                current = []
                envs.append(current)
            current.append(line)
        elif line == "" and current is not None:
            current = None
        else:
            replies.append(line)
    return envs, replies


EXPECTED = {
    "01_ivr_menu_happy_path": ["0", "0", "2", "1", "1"],
    "02_caller_hangup_during_playback": [
        "0", "-1", "H", "1", 511, 511, "0", "0", "H", 511, "-1", "H", "H",
    ],
    "03_errors_510_511_520": [510, 510, 520, "-1", "-2", "0", "1", "1", "0"],
    "04_exec_queue_blocking": ["0", "0", "0", "1", "0"],
    "05_gosub_and_misc_results": [
        "0", "0", "-1", "49", "0", "35", "123456", "12", "", "50", "0", "0", "0", "6", "1",
        "0", "0", "0", "0", "0", "0", "1", "1", "0", "35", "0", "-1", "-1", "1", "H",
    ],
    "06_env_variants": ["0"],
}  # fmt: skip


@needs_raw
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_transcript_reply_streams(name: str) -> None:
    _envs, lines = split_raw((RAW / f"{name}.ast.raw").read_bytes())
    got: list[str | int] = []
    for item in feed_all(lines):
        if isinstance(item, str):
            got.append("H")
        elif item.code == 200:
            got.append(item.result)
        else:
            got.append(item.code)
    assert got == EXPECTED[name]


# ---------------------------------------------------------------------------------------------
# environment


async def env_from(data: bytes, eof: bool = True) -> AgiEnvironment:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return await read_environment(reader)


@needs_raw
async def test_environment_from_transcripts() -> None:
    data = (RAW / "06_env_variants.ast.raw").read_bytes()
    env = await env_from(data)
    assert env.network_script == "ivr?lang=fr&mode=night"
    assert env.script_name == "ivr"
    assert env.query == {"lang": "fr", "mode": "night"}
    assert env.args == ("sales", "", "3")
    assert env.callerid == "33140000000"
    assert env.calleridname is None
    assert env.get("accountcode") == ""
    data = (RAW / "01_ivr_menu_happy_path.ast.raw").read_bytes()
    env = await env_from(data)
    assert env.uniqueid == "1715681702.12"
    assert env.calleridname == "John Smith"
    assert env.channel == "PJSIP/trunk-00000000"


async def test_environment_without_script_and_non_utf8() -> None:
    data = b"agi_network: yes\nagi_calleridname: \xe5\xbc\xa0\xff\nagi_callerid: unknown\n\n"
    env = await env_from(data)
    assert env.network_script is None and env.script_name is None
    assert env.calleridname == "张\ufffd"
    assert env.callerid is None


async def test_environment_eof_before_blank_line() -> None:
    with pytest.raises(AgiConnectionLost):
        await env_from(b"agi_network: yes\nagi_channel: PJSIP/x")
    with pytest.raises(AgiConnectionLost):
        await env_from(b"")


async def test_environment_bounded() -> None:
    many = b"".join(b"agi_x%d: y\n" % i for i in range(1000)) + b"\n"
    with pytest.raises(AgiProtocolError):
        await env_from(many)
    with pytest.raises(AgiProtocolError):
        await env_from(b"agi_x: " + b"y" * 100_000 + b"\n\n")


# ---------------------------------------------------------------------------------------------
# commands


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [
        ("", '""'),
        ("custom/welcome", "custom/welcome"),
        ("123#", "123#"),
        ("IVR step 3", '"IVR step 3"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a\\b", '"a\\\\b"'),
        ("main,1,bookings", "main,1,bookings"),
        ("张三", "张三"),
    ],
)
def test_quote_arg(arg: str, quoted: str) -> None:
    assert quote_arg(arg) == quoted


def test_format_command_uses_bare_lf_and_rejects_line_breaks() -> None:
    assert format_command("STREAM FILE", "custom/welcome", "") == 'STREAM FILE custom/welcome ""\n'
    assert format_command("ANSWER") == "ANSWER\n"
    with pytest.raises(ValueError):
        format_command("SET VARIABLE", "X", "a\r")
    with pytest.raises(ValueError):
        format_command("ANSWER\r")


def test_command_words() -> None:
    assert command_words("GET FULL VARIABLE ${X}\n") == "GET FULL VARIABLE"
    assert command_words("set variable X 1\n") == "SET VARIABLE"
    assert command_words('STREAM FILE x ""\n') == "STREAM FILE"
    assert command_words("NOOP\n") == "NOOP"
    assert command_words("EXEC Queue support\n") == "EXEC"


# ---------------------------------------------------------------------------------------------
# properties

_arg_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20)


@given(st.lists(_arg_text, max_size=5))
def test_quoting_round_trips_through_asterisk_style_parsing(args: list[str]) -> None:
    # parse_args is the emulator's port of res_agi.c parse_args(): an independent reader.
    line = format_command("SET VARIABLE", *args)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert parse_args(line[:-1]) == ["SET", "VARIABLE", *args]


@given(st.lists(st.text(max_size=60), max_size=30))
def test_assembler_never_crashes_on_arbitrary_lines(lines: list[str]) -> None:
    asm = ReplyAssembler()
    for line in lines:
        try:
            item = asm.feed(line)
        except AgiProtocolError:
            continue
        assert item is None or item == ReplyAssembler.HANGUP or isinstance(item, AgiReply)
