"""Continuations longer than MusicGen's 30 s window, one window at a time.

MusicGen attends over at most 30 s (prompt included). For a longer result we
do what audiocraft's ``generate_continuation`` does with its
``extend_stride``: generate a window, keep its last ``KEEP_SECONDS`` (30 s
minus the 18 s stride) as the prompt of the next window, and append only
what each later window adds. Every window after the first gets its own seed
(derived from the task's, so a seed still reproduces the whole result).

``WindowedGeneration`` drives one task through its windows; the caller runs
the current window of every unfinished task as one batch, so tasks of
different lengths still share the model's calls. Progress and streamed
chunks are mapped onto the whole task: each window's share is the new audio
it adds, and chunk offsets continue where the previous window stopped.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from backend.core.tasks import MAX_SEED, WINDOW_SECONDS
from worker.engine.requests import GenerationRequest, GenerationResult

STRIDE_SECONDS = 18.0  # audiocraft's default extend_stride
KEEP_SECONDS = WINDOW_SECONDS - STRIDE_SECONDS
SEED_STEP = 1_000_003  # a prime: window seeds stay distinct for neighbouring task seeds


class WindowedGeneration:
    """One task's request split into windows of at most ``WINDOW_SECONDS``."""

    def __init__(self, request: GenerationRequest, sample_rate: int, hop: int):
        self.original = request
        self.sample_rate = sample_rate  # the engine's
        self.hop = hop
        prompt_seconds = request.prompt_audio.shape[-1] / request.prompt_sr
        self.prompt_seconds = prompt_seconds
        self.total_samples = round(request.total_seconds * sample_rate)
        # A prompt within a second of the window still gets a first window that adds audio.
        first_total = min(request.total_seconds, max(WINDOW_SECONDS, prompt_seconds + 1.0))
        self.audio: np.ndarray | None = None  # everything so far at the engine's rate, prompt included
        self.window = 0
        self._first_total = first_total
        self._new_total = max(1e-9, request.total_seconds - prompt_seconds)  # for progress shares
        self._new_before = 0.0  # seconds of new audio made by finished windows
        self._streamed_to = 0  # continuation samples handed to the listener so far
        self._keep_samples = 0

    @property
    def done(self) -> bool:
        return self.audio is not None and self.audio.shape[-1] >= self.total_samples

    @property
    def windows_needed(self) -> int:
        extra = max(0.0, self.original.total_seconds - self._first_total)
        return 1 + int(np.ceil(extra / STRIDE_SECONDS - 1e-9))

    def next_request(self) -> GenerationRequest:
        r = self.original
        if self.audio is None:
            prompt, prompt_sr, total, seed = r.prompt_audio, r.prompt_sr, self._first_total, r.seed
            new_seconds = total - self.prompt_seconds
        else:
            # Whole frames, so the window's prompt reconstruction is exactly the kept samples.
            keep = min(self.audio.shape[-1], round(KEEP_SECONDS * self.sample_rate)) // self.hop * self.hop
            self._keep_samples = keep
            prompt, prompt_sr = self.audio[:, -keep:], self.sample_rate
            remaining = (self.total_samples - self.audio.shape[-1]) / self.sample_rate
            total = min(WINDOW_SECONDS, keep / self.sample_rate + remaining)
            new_seconds = total - keep / self.sample_rate
            seed = (r.seed + SEED_STEP * self.window) % MAX_SEED
        share_start = self._new_before / self._new_total
        share = new_seconds / self._new_total
        self._pending_new = new_seconds
        return dataclasses.replace(
            r, prompt_audio=prompt, prompt_sr=prompt_sr, total_seconds=total, seed=seed,
            on_progress=self._progress(share_start, share), on_audio=self._audio(self._streamed_to))

    def accept(self, result: GenerationResult) -> None:
        if self.audio is None:
            self.audio = result.audio
        else:
            self.audio = np.concatenate([self.audio, result.audio[:, self._keep_samples:]], axis=1)
        self.audio = self.audio[:, : self.total_samples]
        self._new_before += self._pending_new
        self.window += 1

    def result(self) -> GenerationResult:
        return GenerationResult(audio=np.ascontiguousarray(self.audio[:, : self.total_samples]),
                                sample_rate=self.sample_rate)

    def _progress(self, start: float, share: float):
        report = self.original.on_progress
        if report is None:
            return None
        scale = 10_000  # report fractions of the whole task as integer steps

        def on_progress(step: int, total: int) -> None:
            fraction = start + share * (step / total if total else 1.0)
            report(round(min(1.0, fraction) * scale), scale)

        return on_progress

    def _audio(self, base: int):
        """The window's chunk listener: offsets go on from where the previous window's chunks ended."""
        listener = self.original.on_audio
        if listener is None:
            return None

        def on_audio(chunk: np.ndarray, offset: int) -> None:
            listener(chunk, base + offset)
            self._streamed_to = max(self._streamed_to, base + offset + chunk.shape[-1])

        return on_audio
