"""AmiFramer against the byte-exact transcripts, arbitrary chunking, and malformed input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shared_asterisk import AMI_DIR

from callcenter.asterisk.errors import AmiFrameError
from callcenter.asterisk.framing import AmiFramer
from callcenter.asterisk.message import AmiMessage

TRANSCRIPTS = AMI_DIR
RAW_FILES = sorted((TRANSCRIPTS / "raw").glob("*.ast.raw"))


def expected_from_annotated(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Read the annotated .txt independently of raw/: (kind, name) per message, and banners."""
    messages: list[tuple[str, str]] = []
    banners: list[str] = []
    current: list[str] = []
    for line in path.read_text().split("\n"):
        if not line.startswith("AST>"):
            continue
        body = line[4:].removeprefix(" ")
        if body.startswith("Asterisk Call Manager/"):
            banners.append(body.split("/", 1)[1])
        elif body.strip() == "":
            name, _, value = current[0].partition(":")
            messages.append((name.strip().lower(), value.strip()))
            current = []
        else:
            current.append(body)
    assert not current, f"{path.name}: unterminated message"
    return messages, banners


def feed_all(framer: AmiFramer, data: bytes, cuts: list[int]) -> list[AmiMessage]:
    out: list[AmiMessage] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out += framer.feed(data[prev:cut])
        prev = cut
    return out


def test_all_transcripts_present() -> None:
    assert len(RAW_FILES) == 10


@pytest.mark.parametrize("raw", RAW_FILES, ids=lambda p: p.name.split(".")[0])
def test_transcript_message_counts_and_kinds(raw: Path) -> None:
    expected, banners = expected_from_annotated(
        TRANSCRIPTS / (raw.name[: -len(".ast.raw")] + ".txt")
    )
    framer = AmiFramer()
    msgs = framer.feed(raw.read_bytes())
    assert [(m.kind, m.name) for m in msgs] == expected
    assert framer.errors == 0
    assert framer.frames == len(expected)
    assert framer.buffered == 0
    assert framer.banners == len(banners)
    assert framer.version == (banners[-1] if banners else None)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1001, 4096])
def test_transcripts_identical_for_fixed_chunk_sizes(chunk: int) -> None:
    for raw in RAW_FILES:
        data = raw.read_bytes()
        whole = AmiFramer().feed(data)
        framer = AmiFramer()
        parts = feed_all(framer, data, list(range(chunk, len(data), chunk)))
        assert parts == whole, raw.name


def test_header_details_from_transcripts() -> None:
    msgs = AmiFramer().feed((RAW_FILES[7]).read_bytes())  # 08 lists/command
    command = next(m for m in msgs if m.action_id == "cmd-3")
    outputs = command.get_all("Output")
    assert len(outputs) == 5
    assert outputs[1] == "   Members: "  # leading blanks and trailing space kept
    assert "(paused:lunch was 100 secs ago)" in outputs[3]
    member = next(m for m in msgs if m.name == "QueueMember")
    assert member.get("PausedReason") == ""
    assert member.headers[-1] == ("ActionID", "qs-1")


def test_banner_alone_then_messages() -> None:
    framer = AmiFramer()
    assert framer.feed(b"Asterisk Call Man") == []
    assert framer.version is None
    assert framer.feed(b"ager/9.0.0\r\n") == []
    assert framer.version == "9.0.0"
    msgs = framer.feed(b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
    assert [m.name for m in msgs] == ["Success"]


def test_no_banner_stream() -> None:
    framer = AmiFramer()
    assert [m.name for m in framer.feed(b"Event: X\r\n\r\n")] == ["X"]
    assert framer.version is None


def test_header_splitting_rules() -> None:
    raw = (
        b"Event: Test\r\n"
        b"Key:value\r\n"
        b"Empty: \r\n"
        b"Bare:\r\n"
        b"Output: a: b: c\r\n"
        b"Spaces:   indented\r\n"
        b"Output: second\r\n"
        b"\r\n"
    )
    (m,) = AmiFramer().feed(raw)
    assert m.headers == (
        ("Event", "Test"),
        ("Key", "value"),
        ("Empty", ""),
        ("Bare", ""),
        ("Output", "a: b: c"),
        ("Spaces", "  indented"),
        ("Output", "second"),
    )
    assert m.get("KEY") == "value" and m.get("key") == "value" and m.get("Nope", "-") == "-"
    assert m.get_all("output") == ["a: b: c", "second"]
    assert m.kind == "event" and "bare" in m
    (lower,) = AmiFramer().feed(b"event: X\r\nactionid: 7\r\n\r\n")
    assert lower.kind == "event" and lower.action_id == "7"


def test_bare_lf_framing_is_accepted() -> None:
    framer = AmiFramer()
    msgs = framer.feed(b"Event: A\nX: 1\n\nEvent: B\nY: 2\n\n")
    assert [m.headers for m in msgs] == [
        (("Event", "A"), ("X", "1")),
        (("Event", "B"), ("Y", "2")),
    ]
    assert framer.errors == 0


def test_stray_empty_lines_are_ignored() -> None:
    framer = AmiFramer()
    msgs = framer.feed(b"\r\n\r\nEvent: A\r\n\r\n\r\n\r\n\r\nEvent: B\r\n\r\n")
    assert [m.name for m in msgs] == ["A", "B"]
    assert framer.errors == 0


CALLER_NAMES = ["张三", "李四", "王小明", "Zoë Ångström", "Ольга", "😀 emoji", "John Smith"]


def chinese_stream(names: list[str]) -> bytes:
    frames = []
    for i, name in enumerate(names):
        frames.append(
            "Event: Newchannel\r\nPrivilege: call,all\r\n"
            f"Channel: PJSIP/trunk-{i:08x}\r\nCallerIDNum: 1555000{i}\r\n"
            f"CallerIDName: {name}\r\nUniqueid: 1715681702.{i}\r\n\r\n"
        )
    return ("Asterisk Call Manager/9.0.0\r\n" + "".join(frames)).encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(st.sampled_from(CALLER_NAMES), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=60),
)
def test_any_chunking_yields_identical_messages(names: list[str], cuts: list[int]) -> None:
    data = chinese_stream(names)
    whole = AmiFramer().feed(data)
    framer = AmiFramer()
    parts = feed_all(framer, data, [c for c in cuts if c < len(data)])
    assert parts == whole
    assert [m.get("CallerIDName") for m in parts] == names
    assert framer.decode_errors == 0 and framer.errors == 0
    assert framer.version == "9.0.0"


def test_split_multibyte_character_byte_by_byte() -> None:
    data = chinese_stream(["张三", "李四"])
    framer = AmiFramer()
    msgs: list[AmiMessage] = []
    for i in range(len(data)):
        msgs += framer.feed(data[i : i + 1])
    assert [m.get("CallerIDName") for m in msgs] == ["张三", "李四"]


def test_invalid_utf8_is_replaced_and_counted() -> None:
    framer = AmiFramer()
    (m,) = framer.feed(b"Event: X\r\nCallerIDName: ab\xff\xfecd\r\n\r\n")
    assert m.get("CallerIDName") == "ab\ufffd\ufffdcd"
    assert framer.decode_errors == 1
    assert framer.errors == 0


GOOD = b"Event: Good\r\nUniqueid: 1.1\r\n\r\n"


@pytest.mark.parametrize(
    "bad",
    [
        b"this line has no colon\r\nEvent: X\r\n\r\n",
        b"Event: X\r\nno colon here\r\n\r\n",
        b"\x00\xff\xfe\x80garbage\x01\x02\r\n\r\n",
        b": empty name\r\n\r\n",
        b"Asterisk Call Manager/9.0.0\r\njunk line\r\n\r\n",
    ],
)
def test_malformed_frame_is_counted_and_skipped(bad: bytes) -> None:
    seen: list[AmiFrameError] = []
    framer = AmiFramer(on_error=seen.append)
    msgs = framer.feed(GOOD + bad + GOOD)
    assert [m.name for m in msgs] == ["Good", "Good"]
    assert framer.errors == 1
    assert len(seen) == 1 and seen[0].code == "ami_frame_error"


def test_malformed_frame_split_across_reads() -> None:
    framer = AmiFramer()
    data = GOOD + b"Event: X\r\nbroken\r\n\r\n" + GOOD
    msgs = feed_all(framer, data, list(range(1, len(data), 5)))
    assert [m.name for m in msgs] == ["Good", "Good"]
    assert framer.errors == 1


def test_oversized_complete_frame_is_skipped() -> None:
    framer = AmiFramer(max_frame_bytes=1024)
    big = b"Event: Big\r\n" + b"".join(b"Output: " + b"x" * 100 + b"\r\n" for _ in range(20))
    msgs = framer.feed(GOOD + big + b"\r\n" + GOOD)
    assert [m.name for m in msgs] == ["Good", "Good"]
    assert framer.errors == 1


def test_oversized_frame_in_small_chunks_is_skipped_and_memory_bounded() -> None:
    framer = AmiFramer(max_frame_bytes=1024)
    big = b"Event: Big\r\n" + b"".join(b"Output: " + b"x" * 100 + b"\r\n" for _ in range(50))
    data = GOOD + big + b"\r\n" + GOOD
    msgs: list[AmiMessage] = []
    peak = 0
    for i in range(0, len(data), 100):
        msgs += framer.feed(data[i : i + 100])
        peak = max(peak, framer.buffered)
    assert [m.name for m in msgs] == ["Good", "Good"]
    assert framer.errors == 1
    assert peak <= 1024 + 100


def test_multibyte_frame_over_the_byte_limit_is_skipped() -> None:
    framer = AmiFramer(max_frame_bytes=256)
    frame = (
        "Event: X\r\nCallerIDName: " + "张" * 100 + "\r\n\r\n"
    ).encode()  # 100 chars, 300+ bytes
    msgs = framer.feed(GOOD + b"Event: Pad\r\nP: " + b"p" * 300 + b"\r\n\r\n" + frame + GOOD)
    assert [m.name for m in msgs] == ["Good", "Good"]
    assert framer.errors == 2


def test_too_many_lines_is_skipped() -> None:
    framer = AmiFramer(max_lines=10)
    many = b"Event: Many\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(20)) + b"\r\n"
    msgs = framer.feed(GOOD + many + GOOD)
    assert [m.name for m in msgs] == ["Good", "Good"]
    assert framer.errors == 1


def test_never_ending_line_keeps_memory_bounded() -> None:
    framer = AmiFramer(max_frame_bytes=4096)
    framer.feed(b"Event: Endless\r\nData: ")
    for _ in range(2000):  # 8 MB without a line break
        assert framer.feed(b"y" * 4096) == []
        assert framer.buffered <= 4096 + 4096
    assert framer.errors == 1  # one error for the whole run, not one per chunk
    msgs = framer.feed(b"\r\n\r\n" + GOOD)
    assert [m.name for m in msgs] == ["Good"]


def test_never_ending_lf_stream_of_lines_without_blank_line() -> None:
    framer = AmiFramer(max_frame_bytes=2048)
    for i in range(1000):
        framer.feed(b"Header%d: value\r\n" % i)
        assert framer.buffered <= 2048 + 64
    assert framer.errors >= 1
    assert [m.name for m in framer.feed(b"\r\n" + GOOD)] == ["Good"]


def test_terminator_split_over_reads_in_discard_mode() -> None:
    framer = AmiFramer(max_frame_bytes=64)
    framer.feed(b"Event: X\r\nData: " + b"z" * 200)
    assert framer.errors == 1
    msgs = framer.feed(b"\r\n\r")
    msgs += framer.feed(b"\n" + GOOD)
    assert [m.name for m in msgs] == ["Good"]


def test_reset_starts_a_new_session() -> None:
    framer = AmiFramer()
    framer.feed(b"Asterisk Call Manager/7.0.3\r\nEvent: Part")
    framer.reset()
    assert framer.buffered == 0
    msgs = framer.feed(b"Asterisk Call Manager/9.0.0\r\n" + GOOD)
    assert framer.version == "9.0.0"
    assert [m.name for m in msgs] == ["Good"]


def test_invalid_limits_rejected() -> None:
    with pytest.raises(ValueError):
        AmiFramer(max_frame_bytes=1)
    with pytest.raises(ValueError):
        AmiFramer(max_lines=0)


def unique_stream(n: int) -> bytes:
    return b"".join(
        b"Event: VarSet\r\nUniqueid: 1.%d\r\nVariable: V%d\r\nValue: %d: x\r\n\r\n" % (i, i, i)
        for i in range(n)
    )


def test_line_cache_is_bounded_and_results_do_not_depend_on_it() -> None:
    repeated = b"".join(RAW_FILES[3].read_bytes() for _ in range(3))  # 04 three times
    data = unique_stream(3000) + repeated + unique_stream(6000) + GOOD + repeated
    expected = AmiFramer().feed(data)
    framer = AmiFramer()
    got: list[AmiMessage] = []
    for i in range(0, len(data), 4096):
        got += framer.feed(data[i : i + 4096])
        assert framer.cached_lines <= 4096 + 4096
    assert got == expected
    assert len(got) == 9000 + 57 * 6 + 1
    assert got[1].headers == (
        ("Event", "VarSet"),
        ("Uniqueid", "1.1"),
        ("Variable", "V1"),
        ("Value", "1: x"),
    )
    assert framer.errors == 0


def test_cached_and_uncached_paths_agree_on_odd_lines() -> None:
    odd = b"Event: Odd\r\nKey:value\r\nSpaces:   x\r\nEmpty:\r\nColon: a: b\r\n\r\n"
    framer = AmiFramer()
    first = framer.feed(odd)
    second = framer.feed(odd)  # every line now comes from the cache
    assert first == second
    assert first[0].headers[1:] == (
        ("Key", "value"),
        ("Spaces", "  x"),
        ("Empty", ""),
        ("Colon", "a: b"),
    )


FILTER_STREAM = (
    b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/trunk-1\r\n\r\n"
    b"Event: Cdr\r\nPrivilege: cdr,all\r\nSource: 13800138000\r\n\r\n"
    b"Response: Success\r\nActionID: 7\r\nEventList: start\r\n\r\n"
    b"Event: CoreShowChannel\r\nActionID: 7\r\nChannel: PJSIP/trunk-1\r\n\r\n"
    b"Event: DialBegin\r\nPrivilege: call,all\r\n\r\n"
    b"Event: CoreShowChannelsComplete\r\nActionID: 7\r\nEventList: Complete\r\n\r\n"
)


@given(st.lists(st.integers(min_value=0, max_value=len(FILTER_STREAM)), max_size=12))
@settings(max_examples=60, deadline=None)
def test_unwanted_events_are_dropped_but_never_replies(cuts: list[int]) -> None:
    framer = AmiFramer(events={"Newchannel"})
    names = [m.name for m in feed_all(framer, FILTER_STREAM, cuts)]
    assert names == ["Newchannel", "Success", "CoreShowChannel", "CoreShowChannelsComplete"]
    assert (framer.skipped, framer.frames) == (2, 4)


def test_the_careful_path_filters_too() -> None:
    bad = b"Event: Newchannel\r\nthis line has no colon\r\n\r\n"
    framer = AmiFramer(events={"Newchannel"})
    names = [m.name for m in framer.feed(FILTER_STREAM + bad)]
    assert names == ["Newchannel", "Success", "CoreShowChannel", "CoreShowChannelsComplete"]
    assert framer.errors == 1
    assert framer.skipped == 2


def test_a_dropped_frame_is_not_parsed() -> None:
    framer = AmiFramer(events={"Newchannel"})
    noise = b"Event: Cdr\r\nnot a header line\r\n\r\n"
    assert [m.name for m in framer.feed(noise + FILTER_STREAM[:66])] == ["Newchannel"]
    assert (framer.errors, framer.skipped) == (0, 1)


def _varset(variable: str, value: str = "x", extra: bytes = b"") -> bytes:
    return (
        b"Event: VarSet\r\nPrivilege: dialplan,all\r\nChannel: PJSIP/trunk-1\r\n"
        b"Uniqueid: 1.1\r\n" + extra + b"Variable: " + variable.encode() + b"\r\n"
        b"Value: " + value.encode() + b"\r\n\r\n"
    )


VARSET_STREAM = (
    _varset("BRIDGEPEER")
    + _varset("__CALLCENTER_DID", "4008001234")
    + b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/trunk-1\r\n\r\n"
    + _varset("PLAYBACKSTATUS", "SUCCESS")
    + _varset("AGISTATUS", extra=b"ActionID: 9\r\n")  # part of a reply: never dropped
    + b"Event: VarSet\r\nVariable: MIXMONITOR_FILENAME\r\nChannel: PJSIP/1\r\nValue: /r.wav"
    + b"\r\nUniqueid: 1.1\r\n\r\n"  # Variable elsewhere than next to last
    + b"Event: VarSet\r\nChannel: PJSIP/1\r\n\r\n"  # no Variable at all: dropped
)


def _tracked(name: str) -> bool:
    return name.lstrip("_").startswith("CALLCENTER_") or name == "MIXMONITOR_FILENAME"


@pytest.mark.parametrize("events", [None, {"Newchannel", "VarSet"}])
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(VARSET_STREAM)), max_size=12))
@settings(max_examples=40, deadline=None)
def test_varset_of_unwanted_variables_is_dropped(events: set[str] | None, cuts: list[int]) -> None:
    framer = AmiFramer(events=events, variables=_tracked)
    got = [(m.name, m.get("Variable")) for m in feed_all(framer, VARSET_STREAM, cuts)]
    assert got == [
        ("VarSet", "__CALLCENTER_DID"),
        ("Newchannel", ""),
        ("VarSet", "AGISTATUS"),
        ("VarSet", "MIXMONITOR_FILENAME"),
    ]
    assert framer.skipped == 3


def test_the_careful_path_filters_variables_too() -> None:
    bad = b"Event: Newchannel\r\nthis line has no colon\r\n\r\n"
    framer = AmiFramer(events={"Newchannel", "VarSet"}, variables=_tracked)
    got = [(m.name, m.get("Variable")) for m in framer.feed(VARSET_STREAM + bad)]
    assert [name for name, _ in got] == ["VarSet", "Newchannel", "VarSet", "VarSet"]
    assert (framer.errors, framer.skipped) == (1, 3)


def test_an_oversized_frame_and_a_bad_line_in_one_block_count_once_each() -> None:
    framer = AmiFramer(max_lines=4)
    big = b"Event: Big\r\n" + b"".join(b"L%d: x\r\n" % i for i in range(6)) + b"\r\n"
    bad = b"Event: Bad\r\nno colon here\r\n\r\n"
    good = b"Event: Newchannel\r\nChannel: PJSIP/1\r\n\r\n"
    assert [m.name for m in framer.feed(good + big + bad + good)] == ["Newchannel", "Newchannel"]
    assert framer.errors == 2


def test_lf_framing_is_never_swallowed_by_the_filter() -> None:
    framer = AmiFramer(events={"Newchannel"})
    got = framer.feed(b"Event: Cdr\nX: 1\n\nEvent: Newchannel\nChannel: a\n\n")
    assert [(m.name, m.get("Channel")) for m in got] == [("Newchannel", "a")]
    assert (framer.skipped, framer.errors) == (1, 0)


def test_stray_empty_lines_between_frames_with_a_filter() -> None:
    framer = AmiFramer(events={"Newchannel"})
    data = (
        b"\r\n\r\nEvent: Newchannel\r\nChannel: a\r\n\r\n\r\n\r\n"
        b"Event: Cdr\r\nX: 1\r\n\r\n\r\nEvent: Newchannel\r\nChannel: b\r\n\r\n"
    )
    got = framer.feed(data)
    assert [(m.name, m.get("Channel")) for m in got] == [("Newchannel", "a"), ("Newchannel", "b")]
    assert (framer.skipped, framer.errors) == (1, 0)
