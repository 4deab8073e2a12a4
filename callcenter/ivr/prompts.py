"""IVR prompt audio: which sound files the flows play, and spoken placeholders for them.

Asterisk plays a prompt from its sounds directory by name: ``<lang>/<prompt>`` in a flow with
languages (``zh/hotline/welcome``), the bare ``<prompt>`` for the language question (one
bilingual file) and in a flow without languages. ``prompts.yaml`` beside the flows gives each
prompt's words per language; ``callcenter flows prompts`` speaks them into 8 kHz 16-bit mono WAV
files (Asterisk's ``wav`` format) under one output directory laid out like the sounds
directory. They are placeholders: a file already there (a recorded prompt) is kept unless
``force`` is given.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from callcenter.ivr.loader import PromptTexts, is_prompt_name
from callcenter.ivr.model import Flow, LanguageNode
from callcenter.speech import RATE, Synthesizer, write_pcm_wav

#: espeak-ng voices of the languages whose code is not a voice name of its own
DEFAULT_VOICES = {"zh": "cmn"}
#: silence between the languages of a bilingual prompt
PAUSE_SECONDS = 0.4


@dataclass(frozen=True, slots=True)
class PromptAudio:
    """One sound file to make: ``name`` without extension, under the sounds directory, and what
    it says: (language, words) in the order spoken."""

    name: str
    parts: tuple[tuple[str, str], ...]


def played_prompts(flow: Flow) -> list[tuple[str, tuple[str, ...], str]]:
    """(prompt, languages it is needed in, node id) for every prompt the flow plays. A prompt
    played with a language prefix is needed in each of the flow's languages; a bilingual one
    (the language question) holds all of them in one file."""
    languages = flow.languages or (flow.language,)
    out: list[tuple[str, tuple[str, ...], str]] = []
    for node in flow.nodes.values():
        for f in fields(node):
            if not f.name.endswith(("prompt", "prompts")):
                continue
            value = getattr(node, f.name)
            for prompt in value if isinstance(value, tuple) else (value,):
                if prompt is not None:
                    out.append((prompt, languages, node.id))
    return out


def plan_prompts(flows: Iterable[Flow], texts: PromptTexts) -> tuple[list[PromptAudio], list[str]]:
    """The sound files the flows need, made from ``texts``; and the problems (a prompt without
    words in a language it is played in, a name that is not a relative file name)."""
    files: dict[str, PromptAudio] = {}
    problems: list[str] = []
    for flow in flows:
        bilingual = {node.prompt for node in flow.nodes.values() if isinstance(node, LanguageNode)}
        for prompt, languages, node in played_prompts(flow):
            where = f"{flow.source or flow.name}: {node}"
            if not is_prompt_name(prompt):
                problems.append(f"{where}: {prompt!r} is not a sound file name")
                continue
            words = texts.words.get(prompt, {})
            missing = [lang for lang in languages if lang not in words]
            if missing:
                entry = texts.source or "the prompts file"
                if prompt in texts.lines:
                    entry = f"{entry}:{texts.lines[prompt]}"
                problems.append(
                    f"{where}: prompt {prompt!r} has no words in {', '.join(missing)} in {entry}"
                )
                continue
            if prompt in bilingual or not flow.languages:
                wanted = [(prompt, tuple((lang, words[lang]) for lang in languages))]
            else:
                wanted = [(f"{lang}/{prompt}", ((lang, words[lang]),)) for lang in languages]
            for name, parts in wanted:
                files.setdefault(name, PromptAudio(name, parts))
    return sorted(files.values(), key=lambda a: a.name), sorted(set(problems))


def voice_of(language: str, texts: PromptTexts) -> str:
    return texts.voices.get(language) or DEFAULT_VOICES.get(language, language)


def write_prompts(
    audio: Iterable[PromptAudio],
    out: Path,
    synth: Synthesizer,
    texts: PromptTexts,
    *,
    force: bool = False,
) -> tuple[list[Path], list[Path]]:
    """Speak each prompt into ``out/<name>.wav``: (written, kept as they were). Blocking.
    Raises ``SpeechError`` when espeak-ng or sox is missing or fails (files written before
    stay; each file is written whole or not at all)."""
    written: list[Path] = []
    kept: list[Path] = []
    root = out.resolve()
    for item in audio:
        path = (root / f"{item.name}.wav").resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"prompt {item.name!r} would be written outside {out}")
        if path.exists() and not force:
            kept.append(path)
            continue
        samples = array.array("h")
        pause = array.array("h", bytes(2 * int(PAUSE_SECONDS * RATE)))
        for i, (language, words) in enumerate(item.parts):
            if i:
                samples.extend(pause)
            samples.extend(synth.synthesise(words, voice_of(language, texts)))
        if sys.byteorder == "big":
            samples.byteswap()
        write_pcm_wav(path, samples.tobytes(), channels=1)
        written.append(path)
    return written, kept
