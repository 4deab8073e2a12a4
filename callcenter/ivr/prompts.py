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


@dataclass(frozen=True, slots=True)
class PlayedPrompt:
    """A prompt a flow plays: at ``node``, as the bare name (one file holding ``languages`` in
    turn) or as ``<lang>/<prompt>`` (one file per language)."""

    prompt: str
    node: str
    bare: bool
    languages: tuple[str, ...]


def played_prompts(flow: Flow) -> list[PlayedPrompt]:
    """Every prompt the flow plays (node fields named ``*prompt``/``*prompts``). With the flow's
    ``languages`` a prompt is played as ``<lang>/<prompt>``, without them as the bare name in
    the flow's language; the language question is always played bare and holds the words of
    each language it offers."""
    own = flow.languages or (flow.language,)
    out: list[PlayedPrompt] = []
    for node in flow.nodes.values():
        if isinstance(node, LanguageNode):
            offered = tuple(dict.fromkeys(node.options.values()))
            out.append(PlayedPrompt(node.prompt, node.id, True, offered))
            continue
        for f in fields(node):
            if not f.name.endswith(("prompt", "prompts")):
                continue
            value = getattr(node, f.name)
            for prompt in value if isinstance(value, tuple) else (value,):
                if prompt is not None:
                    out.append(PlayedPrompt(prompt, node.id, not flow.languages, own))
    return out


def plan_prompts(flows: Iterable[Flow], texts: PromptTexts) -> tuple[list[PromptAudio], list[str]]:
    """The sound files the flows need, made from ``texts``; and the problems (a prompt without
    words in a language it is played in, a name that is not a relative file name, one file
    that two uses would fill with different words)."""
    files: dict[str, tuple[PromptAudio, str]] = {}
    problems: list[str] = []
    for flow in flows:
        for played in played_prompts(flow):
            prompt = played.prompt
            where = f"{flow.source or flow.name}: {played.node}"
            if not is_prompt_name(prompt):
                problems.append(f"{where}: {prompt!r} is not a sound file name")
                continue
            words = texts.words.get(prompt, {})
            missing = [lang for lang in played.languages if lang not in words]
            if missing:
                entry = texts.source or "the prompts file"
                if prompt in texts.lines:
                    entry = f"{entry}:{texts.lines[prompt]}"
                problems.append(
                    f"{where}: prompt {prompt!r} has no words in {', '.join(missing)} in {entry}"
                )
                continue
            if played.bare:
                wanted = [(prompt, tuple((lang, words[lang]) for lang in played.languages))]
            else:
                wanted = [(f"{lang}/{prompt}", ((lang, words[lang]),)) for lang in played.languages]
            for name, parts in wanted:
                first = files.setdefault(name, (PromptAudio(name, parts), where))
                if first[0].parts != parts:
                    langs = "+".join(lang for lang, _ in parts)
                    problems.append(
                        f"{where}: {name!r} is played in {langs} here but differently at "
                        f"{first[1]}: one file cannot hold both"
                    )
    audio = sorted((a for a, _ in files.values()), key=lambda a: a.name)
    return audio, sorted(set(problems))


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
    """Speak each prompt into ``out/<name>.wav``: (written, kept). A prompt already there in
    any format (a recording: ``welcome.wav``, ``welcome.gsm``...) is kept unless ``force``.
    Blocking. Raises ``SpeechError`` when espeak-ng or sox is missing or fails, ``OSError``
    when a file cannot be written (files written before stay; none is left half-written)."""
    written: list[Path] = []
    kept: list[Path] = []
    pause = array.array("h", bytes(2 * int(PAUSE_SECONDS * RATE)))
    for item in audio:
        if not is_prompt_name(item.name):
            raise ValueError(f"not a sound file name: {item.name!r}")
        path = out / f"{item.name}.wav"
        if not force:
            there = _existing(path)
            if there is not None:
                kept.append(there)
                continue
        samples = array.array("h")
        for i, (language, words) in enumerate(item.parts):
            if i:
                samples.extend(pause)
            samples.extend(synth.synthesise(words, voice_of(language, texts)))
        if sys.byteorder == "big":
            samples.byteswap()
        write_pcm_wav(path, samples.tobytes(), channels=1)
        written.append(path)
    return written, kept


def _existing(path: Path) -> Path | None:
    """The prompt's file in any format Asterisk could play instead of ours, if there is one."""
    if path.exists():
        return path
    if not path.parent.is_dir():
        return None
    for other in path.parent.iterdir():
        if other.stem == path.stem and other.suffix not in ("", ".part") and other.is_file():
            return other
    return None
