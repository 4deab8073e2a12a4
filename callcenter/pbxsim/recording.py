"""Call recordings: RIFF WAV, 8 kHz, 16-bit, stereo (caller left, agent right).

Speech comes from `callcenter.speech` (espeak-ng, resampled to 8 kHz by sox), rendered in a
worker thread so the event loop keeps its timing. Without those tools a tone/silence pattern is
written instead (a warning is logged once).
"""

from __future__ import annotations

import array
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from callcenter.speech import RATE, Synthesizer, write_pcm_wav

log = logging.getLogger(__name__)

MAX_SECONDS = 900.0


def mix_stereo(
    seconds: float,
    left: Sequence[tuple[float, array.array[int]]],
    right: Sequence[tuple[float, array.array[int]]],
) -> bytes:
    """Interleaved little-endian int16 frames; each clip placed at its start second."""
    n = int(max(0.0, min(seconds, MAX_SECONDS)) * RATE)
    buf = array.array("h", bytes(4 * n))
    for channel, clips in ((0, left), (1, right)):
        for start, clip in clips:
            base = int(start * RATE)
            for i, s in enumerate(clip):
                j = base + i
                if j >= n:
                    break
                buf[2 * j + channel] = s
    if sys.byteorder == "big":
        buf.byteswap()
    return buf.tobytes()


def write_wav(path: Path, frames: bytes) -> None:
    """A stereo recording (interleaved little-endian int16 frames), written whole or not at all."""
    write_pcm_wav(path, frames, channels=2)


class RecordingWriter:
    """Writes one stereo WAV per answered call, off the event loop."""

    def __init__(self, *, synthesizer: Synthesizer | None = None, use_tts: bool = True) -> None:
        self.synth = synthesizer or Synthesizer(use_tts=use_tts)

    def render(
        self,
        path: Path,
        *,
        seconds: float,
        caller_text: str,
        caller_voice: str,
        agent_texts: Sequence[str],
        agent_voice: str,
    ) -> Path:
        """Blocking: agent greets, caller speaks, agent says goodbye at the end."""
        seconds = max(1.0, seconds)
        right: list[tuple[float, array.array[int]]] = []
        left: list[tuple[float, array.array[int]]] = []
        t = 0.3
        if agent_texts:
            greet = self.synth.speak(agent_texts[0], agent_voice)
            right.append((t, greet))
            t += len(greet) / RATE + 0.4
        said = self.synth.speak(caller_text, caller_voice)
        left.append((t, said))
        if len(agent_texts) > 1:
            bye = self.synth.speak(agent_texts[-1], agent_voice)
            right.append((max(t + len(said) / RATE + 0.4, seconds - len(bye) / RATE - 0.2), bye))
        write_wav(path, mix_stereo(seconds, left, right))
        return path

    async def write(
        self,
        path: Path,
        *,
        seconds: float,
        caller_text: str,
        caller_voice: str,
        agent_texts: Sequence[str],
        agent_voice: str,
    ) -> Path | None:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                None,
                lambda: self.render(
                    path,
                    seconds=seconds,
                    caller_text=caller_text,
                    caller_voice=caller_voice,
                    agent_texts=agent_texts,
                    agent_voice=agent_voice,
                ),
            )
        except OSError as exc:
            log.error("could not write recording %s: %s", path, exc)
            return None
