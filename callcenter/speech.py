"""Speech synthesis: text -> 8 kHz mono 16-bit samples (the telephone rate).

`espeak-ng` speaks, `sox` resamples its output to 8 kHz. Used for the emulator's call recordings
(which fall back to a tone when the tools are missing) and for the IVR's placeholder prompts
(which must not: `synthesise` raises instead).
"""

from __future__ import annotations

import array
import contextlib
import logging
import math
import shutil
import subprocess
import sys
import threading
import wave
from pathlib import Path

log = logging.getLogger(__name__)

RATE = 8000


class SpeechError(RuntimeError):
    """espeak-ng or sox is missing or failed."""


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
        """The samples of `text`; a tone when the tools are missing or fail (logged)."""
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

    def synthesise(self, text: str, voice: str) -> array.array[int]:
        """The samples of `text`, uncached; raises `SpeechError` instead of falling back."""
        if self.espeak is None or self.sox is None:
            raise SpeechError("needs espeak-ng and sox (Debian: apt-get install espeak-ng sox)")
        try:
            return self._run(self.espeak, self.sox, text, voice)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            raise SpeechError(
                f"speech synthesis failed for voice {voice!r}: {exc}"
                + (f": {detail.decode(errors='replace').strip()}" if detail else "")
            ) from exc

    def _synth(self, text: str, voice: str) -> array.array[int]:
        if self.espeak is None or self.sox is None:
            if not self._warned:
                log.warning("espeak-ng/sox not available: recordings use a tone pattern")
                self._warned = True
            return tone(min(4.0, 0.5 + 0.12 * len(text)), 330.0 + (len(voice) % 5) * 60)
        try:
            return self._run(self.espeak, self.sox, text, voice)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("speech synthesis failed (%s): using a tone", exc)
            return tone(min(4.0, 0.5 + 0.12 * len(text)))

    def _run(self, espeak: str, sox: str, text: str, voice: str) -> array.array[int]:
        wav = subprocess.run(
            [espeak, "-v", voice, "--stdout", "--", text],
            capture_output=True,
            check=True,
            timeout=self.timeout,
        ).stdout
        raw = subprocess.run(
            [
                sox,
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
        samples = array.array("h")
        samples.frombytes(raw[: len(raw) // 2 * 2])
        if sys.byteorder == "big":
            samples.byteswap()
        return samples


def write_pcm_wav(path: Path, frames: bytes, *, channels: int) -> None:
    """An 8 kHz 16-bit WAV of little-endian int16 ``frames`` (interleaved when stereo), written
    to a temporary file first so that ``path`` is never seen half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    try:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(frames)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
