"""`callcenter flows prompts`: the shipped flows' prompts spoken by the real espeak-ng and sox."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import pytest

from callcenter.cli import EXIT_FAILED, EXIT_OK, main
from callcenter.ivr.loader import PROMPTS_FILE

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "ivr_flows"


def _loudness(path: Path) -> int:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        frames = w.readframes(w.getnframes())
    return max(
        abs(int.from_bytes(frames[i : i + 2], "little", signed=True))
        for i in range(0, len(frames), 2)
    )


def test_every_prompt_of_the_shipped_flows_is_spoken(
    speech_tools: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sounds"
    assert main(["flows", "prompts", str(FLOWS), "--out", str(out)]) == EXIT_OK
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert "hotline/choose-language.wav" in files
    assert {"zh/hotline/welcome.wav", "en/hotline/welcome.wav", "zh/hotline/main-menu.wav"} <= set(
        files
    )
    assert f"{len(files)} prompt file(s) written, 0 kept" in capsys.readouterr().out
    for name in ("zh/hotline/welcome.wav", "en/hotline/goodbye.wav", "hotline/choose-language.wav"):
        assert _loudness(out / name) > 1000  # speech, not silence

    # a recorded prompt put in place is kept
    (out / "zh/hotline/welcome.wav").write_bytes(b"recorded")
    assert main(["flows", "prompts", str(FLOWS), "--out", str(out)]) == EXIT_OK
    assert (out / "zh/hotline/welcome.wav").read_bytes() == b"recorded"
    assert f"0 prompt file(s) written, {len(files)} kept" in capsys.readouterr().out


def test_missing_words_fail_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(FLOWS, flows)
    text = (flows / PROMPTS_FILE).read_text(encoding="utf-8")
    (flows / PROMPTS_FILE).write_text(
        text.replace("    en: Thank you for calling. Goodbye.\n", ""), encoding="utf-8"
    )
    out = tmp_path / "sounds"
    assert main(["flows", "prompts", str(flows), "--out", str(out)]) == EXIT_FAILED
    assert "goodbye: prompt 'hotline/goodbye' has no words in en" in capsys.readouterr().out
    assert not out.exists()
    (flows / PROMPTS_FILE).unlink()
    assert main(["flows", "prompts", str(flows), "--out", str(out)]) == EXIT_FAILED
    assert "prompts.yaml: no such file" in capsys.readouterr().out


def test_an_output_that_cannot_be_written_is_a_clear_error(
    speech_tools: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sounds"
    out.write_text("a file, not a folder")
    assert main(["flows", "prompts", str(FLOWS), "--out", str(out)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert f"callcenter: prompts not all written to {out}:" in err and "Traceback" not in err
