"""The unit of work every measurement runs: identical inputs everywhere.

A task continues a 2 s prompt by 1 s of new audio with MusicGen's default
sampling (top-k 250, classifier-free guidance 3.0, which doubles the rows
inside ``generate``). Short generations keep the whole run under ten
minutes on 2 CPU cores while still being dominated by decoding steps.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

SAMPLE_RATE = 32_000  # MusicGen's rate: no resampling anywhere
FRAME_RATE = 50  # EnCodec frames per second of audio
CODEBOOK_DELAY = 3  # 4 codebooks, each one step behind the previous (see worker/engine/delay.py)
TOP_K = 250
CFG_COEF = 3.0


@dataclass(frozen=True)
class Workload:
    prompt_seconds: float = 2.0
    new_seconds: float = 1.0

    @property
    def max_new_tokens(self) -> int:
        # D seconds of new audio need 50*D + 3 steps because of the delay pattern.
        return int(round(FRAME_RATE * self.new_seconds)) + CODEBOOK_DELAY

    @property
    def total_seconds(self) -> float:
        """What Segue's /continue calls ``duration``: seconds generated, prompt included."""
        return self.prompt_seconds + self.new_seconds

    def prompt_wav(self) -> bytes:
        """The prompt as the client sends it: 16-bit mono WAV at 32 kHz."""
        buffer = io.BytesIO()
        sf.write(buffer, click_track(self.prompt_seconds), SAMPLE_RATE, format="WAV", subtype="PCM_16")
        return buffer.getvalue()

    def prompt_b64(self) -> str:
        return base64.b64encode(self.prompt_wav()).decode("ascii")

    def prompt_array(self) -> np.ndarray:
        """The prompt as Segue's worker sees it (after the 16-bit round trip), 1-D float32."""
        audio, _ = sf.read(io.BytesIO(self.prompt_wav()), dtype="float32")
        return audio


def click_track(seconds: float, bpm: float = 120.0) -> np.ndarray:
    """A deterministic music-like signal: a soft chord with a click on every beat."""
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    track = 0.05 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    click = np.exp(-np.arange(int(0.03 * SAMPLE_RATE)) / (0.004 * SAMPLE_RATE))
    for beat, start in enumerate(range(0, n, int(round(60 / bpm * SAMPLE_RATE)))):
        freq, gain = (1760.0, 0.9) if beat % 4 == 0 else (1320.0, 0.5)
        burst = gain * click * np.sin(2 * np.pi * freq * np.arange(click.size) / SAMPLE_RATE)
        end = min(n, start + click.size)
        track[start:end] += burst[: end - start]
    return track.astype(np.float32)
