"""Pure parts of the emulator core: ids, clock, callers, dialplan patterns, WAV mixing."""

from __future__ import annotations

import array
import asyncio
import io
import wave
from pathlib import Path

from callcenter.pbxsim.callers import CHINESE_NAMES, CallerFactory, CallerMix, KeyPlan
from callcenter.pbxsim.emulator import Dialplan, Step, exten_matches, to_action_reply
from callcenter.pbxsim.pbx import (
    STATE_RING,
    GlibcRandom,
    Ids,
    Pbx,
    VirtualClock,
    duration_hms,
    wait_any,
)
from callcenter.pbxsim.recording import RecordingWriter, Synthesizer, mix_stereo, write_wav


def test_glibc_random_matches_asterisk_command_ids() -> None:
    r = GlibcRandom(1)
    assert [r.next() for _ in range(5)] == [
        1804289383,
        846930886,
        1681692777,
        1714636915,
        1957747793,
    ]


def test_uniqueid_and_channel_names() -> None:
    events: list[tuple[str, list[tuple[str, str]]]] = []
    pbx = Pbx(
        publish=lambda n, k, f: events.append((n, list(f))),
        clock=VirtualClock(start=1715681702.7),
        ids=Ids(uniqueid_counter=12, channel_counter=255),
    )
    ch = pbx.new_channel(
        endpoint="trunk",
        context="from-trunk",
        exten="5551000",
        state=STATE_RING,
        caller_name="a\nb",
    )
    leg = pbx.new_channel(
        endpoint="1001", context="from-internal", exten="s", state=0, linkedid=ch.linkedid
    )
    assert (ch.name, ch.uniqueid) == ("PJSIP/trunk-000000ff", "1715681702.12")
    assert (leg.name, leg.uniqueid, leg.linkedid) == (
        "PJSIP/1001-00000100",
        "1715681702.13",
        "1715681702.12",
    )
    snap = dict(events[0][1])
    assert snap["CallerIDName"] == "a\\nb" and snap["CallerIDNum"] == "<unknown>"
    assert [k for k, _ in events[0][1]][:3] == ["Channel", "ChannelState", "ChannelStateDesc"]
    assert duration_hms(3723) == "01:02:03"


async def test_virtual_clock_orders_concurrent_sleepers() -> None:
    clock = VirtualClock(start=100.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, d: float) -> None:
        await clock.sleep(d)
        woke.append((name, clock.time()))

    await asyncio.gather(sleeper("b", 10), sleeper("a", 5), sleeper("c", 7.5))
    assert woke == [("a", 105.0), ("c", 107.5), ("b", 110.0)]
    ev = asyncio.Event()
    asyncio.get_running_loop().call_soon(ev.set)
    assert await wait_any(clock, 1000, [ev]) == 0
    assert clock.time() == 110.0
    assert await wait_any(clock, 3, [asyncio.Event()]) is None
    assert clock.time() == 113.0


def test_caller_factory_is_seeded_and_varied() -> None:
    a = [CallerFactory(seed=3).next() for _ in range(1)]
    f1, f2 = CallerFactory(seed=3), CallerFactory(seed=3)
    one = [f1.next() for _ in range(200)]
    two = [f2.next() for _ in range(200)]
    assert [(c.number, c.name, c.keys) for c in one] == [(c.number, c.name, c.keys) for c in two]
    assert a[0].number == one[0].number
    assert any(c.name in CHINESE_NAMES for c in one)
    assert any(c.name and c.name not in CHINESE_NAMES for c in one)
    assert any(c.number.startswith("+") for c in one) and any(c.number.isdigit() for c in one)
    assert any(c.ivr_hangup is not None for c in one)
    assert any(c.patience is not None for c in one)
    assert any(k is None for c in one for k in c.keys)
    vip = CallerFactory(seed=1, mix=CallerMix(vip=1.0, vip_numbers=("13900000001",))).next()
    assert vip.vip and vip.number == "13900000001"
    assert KeyPlan("12", delay=1.0, inter_digit=0.5).times() == [(1.0, "1"), (1.5, "2")]


def test_extension_patterns() -> None:
    assert exten_matches("_1NXXNXXXXXX", "15557654321")
    assert not exten_matches("_1NXXNXXXXXX", "999999")
    assert exten_matches("_1XXX", "1001") and not exten_matches("_1XXX", "10010")
    assert exten_matches("_[2-4]X.", "3123") and exten_matches("600", "600")
    dp = Dialplan()
    dp.add("ctx", "_X.", [Step("NoOp")])
    assert dp.exists("ctx", "42", 1) and not dp.exists("ctx", "42", 2)
    assert not dp.exists("other", "42", 1)


def test_action_reply_conversion() -> None:
    r = to_action_reply(
        [
            [("Response", "Success"), ("ActionID", "x"), ("EventList", "start"), ("Message", "m")],
            [("Event", "A"), ("ActionID", "x")],
        ]
    )
    assert (r.response, r.message, r.event_list) == ("Success", "m", "start")
    assert r.followups == ((("Event", "A"), ("ActionID", "x")),)


def test_stereo_mix_and_wav(tmp_path: Path) -> None:
    left = array.array("h", [1000] * 80)
    right = array.array("h", [-1000] * 40)
    frames = mix_stereo(1.0, [(0.0, left)], [(0.5, right)])
    assert len(frames) == 8000 * 4
    samples = array.array("h")
    samples.frombytes(frames)
    assert samples[0] == 1000 and samples[1] == 0
    assert samples[2 * 4000 + 1] == -1000 and samples[2 * 4000] == 0
    path = tmp_path / "x" / "a.wav"
    write_wav(path, frames)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, 8000, 8000)


def test_recording_without_tts_uses_a_tone(tmp_path: Path) -> None:
    writer = RecordingWriter(synthesizer=Synthesizer(use_tts=False))
    path = writer.render(
        tmp_path / "r.wav",
        seconds=3.0,
        caller_text="你好",
        caller_voice="zh",
        agent_texts=("您好，请问有什么可以帮您", "再见"),
        agent_voice="zh",
    )
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        assert w.getnframes() == 3 * 8000
