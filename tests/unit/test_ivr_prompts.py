"""The IVR's prompt files: which ones the flows play, their words (prompts.yaml, validated with
file and line), and placeholder WAVs made from them."""

from __future__ import annotations

import array
import random
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callcenter.ivr.engine import (
    Ack,
    Digits,
    GetData,
    HoursCheck,
    Lookup,
    LookupResult,
    Play,
    Reply,
    WaitDigit,
    run_flow,
)
from callcenter.ivr.loader import (
    CALENDAR_FILE,
    PROMPTS_FILE,
    FlowError,
    PromptTexts,
    check_flows,
    flow_files,
    load_calendar,
    load_flow,
    load_prompt_texts,
    parse_flow,
    parse_prompt_texts,
)
from callcenter.ivr.model import Flow
from callcenter.ivr.prompts import PAUSE_SECONDS, PromptAudio, plan_prompts, write_prompts
from callcenter.speech import RATE, SpeechError, Synthesizer

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "ivr_flows"

FLOW = """\
start: lang
language: zh
languages: [zh, en]
nodes:
  lang:
    type: language
    prompt: t/choose
    options: {"1": zh, "2": en}
    default: zh
    next: main
  main:
    type: menu
    prompt: t/menu
    options: {"1": q}
    invalid_prompt: t/invalid
  q:
    type: queue
    queue: general
    prompt: t/hold
"""

TEXTS = """\
voices: {zh: cmn}
prompts:
  t/choose: {zh: 请按1, en: press 2}
  t/menu: {zh: 菜单, en: menu}
  t/invalid: {zh: 无效, en: invalid}
  t/hold: {zh: 请稍候, en: please hold}
"""


def flow(text: str = FLOW) -> Flow:
    parsed, errors = parse_flow(text, source="t.yaml", default_name="t")
    assert parsed is not None, errors
    return parsed


def texts(text: str = TEXTS) -> PromptTexts:
    parsed, errors = parse_prompt_texts(text, source="prompts.yaml")
    assert parsed is not None, errors
    return parsed


def errors_of(text: str) -> list[FlowError]:
    parsed, errors = parse_prompt_texts(text, source="prompts.yaml")
    assert parsed is None and errors
    assert all(e.file == "prompts.yaml" for e in errors)
    return errors


def test_the_shipped_flows_have_words_for_every_prompt_they_play() -> None:
    flows = [load_flow(p) for p in flow_files(FLOWS)]
    audio, problems = plan_prompts(flows, load_prompt_texts(FLOWS / PROMPTS_FILE))
    assert problems == []
    names = {a.name for a in audio}
    # the language question is one bilingual file; every other prompt one file per language
    assert "hotline/choose-language" in names
    choose = next(a for a in audio if a.name == "hotline/choose-language")
    assert [lang for lang, _ in choose.parts] == ["zh", "en"]
    prefixed = names - {"hotline/choose-language"}
    assert {n.split("/", 1)[0] for n in prefixed} == {"zh", "en"}
    for lang in ("zh", "en"):
        assert {"welcome", "main-menu", "please-hold", "goodbye"} <= {
            n.rsplit("/", 1)[1] for n in prefixed if n.startswith(f"{lang}/")
        }
    assert len(prefixed) % 2 == 0  # the same prompts in both languages


def test_plan_gives_each_language_its_file_and_the_language_question_one() -> None:
    audio, problems = plan_prompts([flow()], texts())
    assert problems == []
    assert [(a.name, a.parts) for a in audio] == [
        ("en/t/hold", (("en", "please hold"),)),
        ("en/t/invalid", (("en", "invalid"),)),
        ("en/t/menu", (("en", "menu"),)),
        ("t/choose", (("zh", "请按1"), ("en", "press 2"))),
        ("zh/t/hold", (("zh", "请稍候"),)),
        ("zh/t/invalid", (("zh", "无效"),)),
        ("zh/t/menu", (("zh", "菜单"),)),
    ]


def test_a_flow_without_languages_plays_bare_names_in_its_language() -> None:
    single = FLOW.replace("languages: [zh, en]\n", "").replace("language: zh", "language: en")
    audio, problems = plan_prompts([flow(single)], texts())
    assert problems == []
    assert ("t/menu", (("en", "menu"),)) in [(a.name, a.parts) for a in audio]
    assert not any(a.name.startswith(("zh/", "en/")) for a in audio)


def test_a_prompt_without_words_in_a_language_is_named_with_its_node() -> None:
    partial = TEXTS.replace("  t/menu: {zh: 菜单, en: menu}\n", "  t/menu: {zh: 菜单}\n").replace(
        "  t/hold: {zh: 请稍候, en: please hold}\n", ""
    )
    _audio, problems = plan_prompts([flow()], texts(partial))
    assert problems == [
        "t.yaml: main: prompt 't/menu' has no words in en in prompts.yaml:4",
        "t.yaml: q: prompt 't/hold' has no words in zh, en in prompts.yaml",
    ]


def test_prompt_texts_errors_give_the_line() -> None:
    errors = errors_of(
        "prompts:\n"
        "  ../etc/passwd: {zh: x}\n"  # line 2: not a relative sound file name
        "  t/a: {zh: '  '}\n"  # line 3: empty words
        "  t/b: {Chinese: x}\n"  # line 4: not a language code
        "  t/c: {zh: x}\n"
        "  t/c: {en: y}\n"  # line 6: duplicate prompt
        "colour: red\n"  # line 7: unknown field
    )
    found = {(e.line, e.code) for e in errors}
    assert found == {
        (2, "bad_value"),
        (3, "bad_value"),
        (4, "bad_value"),
        (6, "duplicate_key"),
        (7, "unknown_field"),
    }, errors
    assert any("../etc/passwd" in str(e) for e in errors)
    assert [e.line for e in errors_of("prompts: [a\n")] == [2]  # YAML syntax error
    assert "no 'prompts'" in str(errors_of("voices: {zh: cmn}\n")[0])


def test_the_prompts_file_is_checked_with_the_flows_and_is_not_a_flow(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(FLOW, encoding="utf-8")
    (tmp_path / PROMPTS_FILE).write_text(TEXTS, encoding="utf-8")
    assert flow_files(tmp_path) == [tmp_path / "t.yaml"]
    assert check_flows(tmp_path) == []
    (tmp_path / PROMPTS_FILE).write_text("prompts:\n  t/a: {zh: ''}\n", encoding="utf-8")
    [error] = check_flows(tmp_path)
    assert (error.file, error.line, error.node) == (str(tmp_path / PROMPTS_FILE), 2, "t/a")


class FakeSpeech(Synthesizer):
    """One second of a constant per voice: no espeak-ng needed."""

    def __init__(self) -> None:
        super().__init__(use_tts=False)
        self.voices: list[str] = []

    def synthesise(self, text: str, voice: str) -> array.array[int]:
        self.voices.append(voice)
        return array.array("h", [len(voice) * 100] * RATE)


def read_wav(path: Path) -> tuple[int, int, int, int]:
    with wave.open(str(path)) as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()


def test_write_prompts_makes_8khz_mono_files_and_keeps_what_is_there(tmp_path: Path) -> None:
    audio, _ = plan_prompts([flow()], texts())
    speech = FakeSpeech()
    written, kept = write_prompts(audio, tmp_path, speech, texts())
    assert kept == [] and len(written) == len(audio) == 7
    assert read_wav(tmp_path / "zh" / "t" / "menu.wav") == (RATE, 1, 2, RATE)
    # the bilingual prompt: both languages with a pause between
    pause = int(PAUSE_SECONDS * RATE)
    assert read_wav(tmp_path / "t" / "choose.wav") == (RATE, 1, 2, 2 * RATE + pause)
    assert sorted(set(speech.voices)) == ["cmn", "en"]  # zh speaks with the voice given

    recorded = tmp_path / "en" / "t" / "menu.wav"
    recorded.write_bytes(b"a recorded prompt")
    written, kept = write_prompts(audio, tmp_path, FakeSpeech(), texts())
    assert recorded in kept and recorded.read_bytes() == b"a recorded prompt"
    assert len(written) == 0 and len(kept) == 7
    written, kept = write_prompts(audio, tmp_path, FakeSpeech(), texts(), force=True)
    assert len(written) == 7 and kept == []
    assert read_wav(recorded) == (RATE, 1, 2, RATE)
    assert not list(tmp_path.rglob("*.part"))


def test_write_prompts_stays_inside_its_directory(tmp_path: Path) -> None:
    out = tmp_path / "sounds"
    with pytest.raises(ValueError, match="not a sound file name"):
        write_prompts([PromptAudio("../escaped", (("en", "x"),))], out, FakeSpeech(), texts())
    assert not (tmp_path / "escaped.wav").exists()


def test_a_recording_in_another_format_is_kept(tmp_path: Path) -> None:
    audio, _ = plan_prompts([flow()], texts())
    recorded = tmp_path / "zh" / "t" / "menu.gsm"
    recorded.parent.mkdir(parents=True)
    recorded.write_bytes(b"gsm frames")
    written, kept = write_prompts(audio, tmp_path, FakeSpeech(), texts())
    assert kept == [recorded] and len(written) == 6
    assert not (tmp_path / "zh" / "t" / "menu.wav").exists()  # Asterisk could pick ours


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    audio, _ = plan_prompts([flow()], texts())
    (tmp_path / "zh").write_text("a file where a folder should be")

    class Failing(FakeSpeech):
        def synthesise(self, text: str, voice: str) -> array.array[int]:
            if voice == "en":
                raise SpeechError("espeak-ng: no such voice")
            return super().synthesise(text, voice)

    with pytest.raises(OSError):
        write_prompts(audio, tmp_path, FakeSpeech(), texts())
    with pytest.raises(SpeechError):
        write_prompts(audio, tmp_path / "other", Failing(), texts())
    assert not list(tmp_path.rglob("*.part"))


def test_the_language_question_holds_the_languages_it_offers() -> None:
    # a flow without `languages` still asks in both; a prompt of the question used elsewhere
    # is played there with the flow's own prefix rules
    single = FLOW.replace("languages: [zh, en]\n", "")
    audio, problems = plan_prompts([flow(single)], texts())
    assert problems == []
    parts = {a.name: a.parts for a in audio}
    assert parts["t/choose"] == (("zh", "请按1"), ("en", "press 2"))
    assert parts["t/menu"] == (("zh", "菜单"),)
    reused = FLOW.replace("prompt: t/hold", "prompt: t/choose")
    audio, problems = plan_prompts([flow(reused)], texts())
    assert problems == []
    names = {a.name for a in audio}
    assert {"t/choose", "zh/t/choose", "en/t/choose"} <= names


def test_one_file_wanted_with_different_words_is_a_problem() -> None:
    zh = FLOW.replace("languages: [zh, en]\n", "")
    en = zh.replace("language: zh", "language: en")
    f_zh, _ = parse_flow(zh, source="zh.yaml", default_name="zh")
    f_en, _ = parse_flow(en, source="en.yaml", default_name="en")
    assert f_zh is not None and f_en is not None
    _audio, problems = plan_prompts([f_zh, f_en], texts())
    assert "en.yaml: main: 't/menu' is played in en here but differently at zh.yaml: main" in (
        " ".join(problems)
    )


def test_every_file_the_engine_plays_is_planned() -> None:
    """The shipped flows driven by the real engine with random keys, hours states, lookups and
    preferred languages: the files it plays are exactly the planned ones."""
    flows = [load_flow(p) for p in flow_files(FLOWS)]
    audio, _ = plan_prompts(flows, load_prompt_texts(FLOWS / PROMPTS_FILE))
    calendar = load_calendar(FLOWS / CALENDAR_FILE)
    played: set[str] = set()
    rng = random.Random(7)
    moments = [datetime(2026, 11, 30, 2, tzinfo=UTC), datetime(2026, 11, 29, 2, tzinfo=UTC)]
    moments.append(datetime(2026, 10, 1, 2, tzinfo=UTC))  # open, closed, holiday
    for f in flows:
        for _ in range(3000):
            engine = run_flow(
                f,
                calendar=calendar,
                caller=rng.choice([None, "13800138000"]),
                default_queue="general",
                operator_queue="operator",
                language=rng.choice([None, None, "zh", "en"]),
            )
            try:
                cmd = next(engine)
                while True:
                    reply: Reply = Ack()
                    if isinstance(cmd, Play | GetData):
                        played.add(cmd.file)
                    if isinstance(cmd, Play):
                        reply = Digits(rng.choice(["", *cmd.escape_digits]))
                    elif isinstance(cmd, WaitDigit):
                        reply = Digits(rng.choice(["", *"0123456789*#"]), timed_out=False)
                    elif isinstance(cmd, GetData):
                        reply = rng.choice([Digits("12345678"), Digits("1"), Digits("", True)])
                    elif isinstance(cmd, HoursCheck):
                        reply = rng.choice(moments)
                    elif isinstance(cmd, Lookup):
                        reply = LookupResult(None, failed=rng.random() < 0.2)
                    cmd = engine.send(reply)
            except StopIteration:
                pass
    assert played == {a.name for a in audio}
