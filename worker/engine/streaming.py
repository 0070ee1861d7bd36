"""Audio chunks of a continuation while it is being generated.

Each decoding step completes at most one new frame per row (after the delay
pattern's first ``codebooks_per_channel - 1`` steps). Every ``chunk_frames``
new complete frames, ``RowStreamer`` EnCodec-decodes a *window*: the new
frames plus ``context_frames`` before them (prompt frames included), so the
cost of a chunk does not grow with the length generated so far. The decoder
is convolutional with an LSTM, so samples near a window's edges depend on
frames outside it: the left context absorbs the start (the LSTM's memory of
earlier frames fades within a fraction of a second) and the last
``hold_frames`` of each window are held back and re-decoded with the next
one. The final chunk is cut from the full decode the engine makes anyway, so
the concatenated chunks equal the result up to the windowed decodes' small
edge differences (measured in ``tests/test_streaming``).

Those window decodes are the cost of streaming, so they run only while the
listener wants them: an ``on_audio`` callback with a ``wanted()`` method (the
worker's, true while someone follows the task) is asked before each. Until
then the frames wait; when someone arrives, one decode catches up on them,
and whatever was never streamed is handed out from the final decode, cut
into chunks of the usual size.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

# (chunk float32 (channels, samples), offset of its first sample within the continuation)
OnAudio = Callable[[np.ndarray, int], None]

FIRST_CHUNK_FRAMES = 25  # 0.5 s: the first sound a listener hears comes early
CHUNK_FRAMES = 50  # then one chunk per second of audio
CONTEXT_FRAMES = 50
HOLD_FRAMES = 4


class RowStreamer:
    """Decodes and hands out one row's new audio as its frames complete."""

    def __init__(self, on_audio: OnAudio, new_frames: int, continuation_samples: int, hop: int, *,
                 first_chunk_frames: int = FIRST_CHUNK_FRAMES, chunk_frames: int = CHUNK_FRAMES,
                 context_frames: int = CONTEXT_FRAMES, hold_frames: int = HOLD_FRAMES):
        self.on_audio = on_audio
        self.decode: Callable[[torch.Tensor], np.ndarray] | None = None
        self.prompt_codes: torch.Tensor | None = None
        self.new_frames = new_frames
        self.continuation_samples = continuation_samples
        self.hop = hop
        self.first_chunk_frames = first_chunk_frames
        self.chunk_frames = chunk_frames
        self.context_frames = context_frames
        self.hold_frames = hold_frames
        self.emitted_samples = 0  # continuation samples handed out so far
        self.failed = False
        self.wanted: Callable[[], bool] | None = getattr(on_audio, "wanted", None)

    def bind(self, prompt_codes: torch.Tensor, decode: Callable[[torch.Tensor], np.ndarray]) -> None:
        """Attach one generate call's prompt codes and decoder (a retried row is bound again; what was
        already handed out stays handed out: the same seed regenerates the same tokens)."""
        self.prompt_codes = prompt_codes  # (num_codebooks, prompt frames)
        self.decode = decode  # codes (num_codebooks, frames) -> float32 (channels, frames * hop)

    def unbind(self) -> None:
        self.prompt_codes = self.decode = None

    @property
    def _emitted_frames(self) -> int:
        return self.emitted_samples // self.hop

    def advance(self, complete_frames: Callable[[int, int], torch.Tensor], available: int) -> None:
        """``available`` new frames are complete; ``complete_frames(a, b)`` returns new frames [a, b) as codes."""
        if self.failed or self.decode is None:
            return
        available = min(available, self.new_frames)
        due = self.first_chunk_frames if self.emitted_samples == 0 else self.chunk_frames
        if available - self.hold_frames - self._emitted_frames < due:
            return
        if self.wanted is not None and not self.wanted():
            return  # nobody listens: no decode now
        start = self._emitted_frames
        end = available - self.hold_frames  # frames [start, end) are handed out now
        context_new = min(start, self.context_frames)
        context_prompt = min(self.prompt_codes.shape[-1], self.context_frames - context_new)
        codes = complete_frames(start - context_new, available)
        if context_prompt:
            codes = torch.cat([self.prompt_codes[:, -context_prompt:], codes], dim=-1)
        lead = (context_prompt + context_new) * self.hop
        audio = self.decode(codes)[:, lead : lead + (end - start) * self.hop]
        self._emit(audio)

    def finish(self, continuation: np.ndarray) -> None:
        """Hand out the rest from the row's full decode (its exact continuation audio), in chunks of the
        usual size when much is left (nobody listened while it was made)."""
        piece = self.chunk_frames * self.hop
        while not self.failed and self.emitted_samples < self.continuation_samples:
            end = min(self.continuation_samples, self.emitted_samples + piece)
            if self.continuation_samples - end < piece // 2:
                end = self.continuation_samples  # no tiny last chunk
            before = self.emitted_samples
            self._emit(continuation[:, before:end])
            if self.emitted_samples == before:
                return

    def _emit(self, audio: np.ndarray) -> None:
        if audio.shape[-1] == 0:
            return
        try:
            self.on_audio(np.ascontiguousarray(audio, dtype=np.float32), self.emitted_samples)
        except Exception as exc:  # noqa: BLE001 - a listener's failure must not fail the generation
            log.warning("audio chunk callback failed; streaming stops for this row: %r", exc)
            self.failed = True
            return
        self.emitted_samples += audio.shape[-1]
