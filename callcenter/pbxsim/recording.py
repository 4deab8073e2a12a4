"""Call recordings: RIFF WAV, 8 kHz, 16-bit, stereo (caller left, agent right).

Speech is synthesised with `espeak-ng` and resampled to 8 kHz with `sox`; both run in a worker
thread so the event loop keeps its timing. Without those tools a tone/silence pattern is written
instead (a warning is logged once). Synthesised phrases are cached per (voice, text).
"""

from __future__ import annotations

import array
import asyncio
import logging
import math
import shutil
import subprocess
import sys
import threading
import wave
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

RATE = 8000
MAX_SECONDS = 900.0


def tone(seconds: float, freq: float = 440.0, amplitude: int = 6000) -> array.array[int]:
    """A sine burst of `seconds` at 8 kHz (the fallback 'speech')."""
    n = int(seconds * RATE)
    return array.array(
        "h", (int(amplitude * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n))
    )


class Synthesizer:
    """Text -> 8 kHz mono int16 samples, with a cache. Thread-safe."""

    def __init__(
        self,
        *,
        espeak: str | None = "espeak-ng",
        sox: str | None = "sox",
        use_tts: bool = True,
        timeout: float = 20.0,
    ) -> None:
        self.espeak = shutil.which(espeak) if espeak and use_tts else None
        self.sox = shutil.which(sox) if sox and use_tts else None
        self.timeout = timeout
        self._cache: dict[tuple[str, str], array.array[int]] = {}
        self._lock = threading.Lock()
        self._warned = False

    @property
    def available(self) -> bool:
        return self.espeak is not None and self.sox is not None

    def speak(self, text: str, voice: str) -> array.array[int]:
        key = (voice, text)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        samples = self._synth(text, voice)
        with self._lock:
            if len(self._cache) > 512:
                self._cache.clear()
            self._cache[key] = samples
        return samples

    def _synth(self, text: str, voice: str) -> array.array[int]:
        if self.espeak is None or self.sox is None:
            if not self._warned:
                log.warning("espeak-ng/sox not available: recordings use a tone pattern")
                self._warned = True
            return tone(min(4.0, 0.5 + 0.12 * len(text)), 330.0 + (len(voice) % 5) * 60)
        try:
            wav = subprocess.run(
                [self.espeak, "-v", voice, "--stdout", "--", text],
                capture_output=True,
                check=True,
                timeout=self.timeout,
            ).stdout
            raw = subprocess.run(
                [
                    self.sox,
                    "-t",
                    "wav",
                    "-",
                    "-r",
                    str(RATE),
                    "-c",
                    "1",
                    "-b",
                    "16",
                    "-e",
                    "signed-integer",
                    "-t",
                    "raw",
                    "-",
                ],
                input=wav,
                capture_output=True,
                check=True,
                timeout=self.timeout,
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("speech synthesis failed (%s): using a tone", exc)
            return tone(min(4.0, 0.5 + 0.12 * len(text)))
        samples = array.array("h")
        samples.frombytes(raw[: len(raw) // 2 * 2])
        if sys.byteorder == "big":
            samples.byteswap()
        return samples


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(frames)
    tmp.replace(path)


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
