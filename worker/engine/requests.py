"""What goes into the engine and what comes out: a request, its plan, its result.

Kept apart from the model (``musicgen``) and the scheduler so both can use
them without importing each other.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable

import numpy as np

from worker.engine.sampling import SamplingSettings
from worker.engine.streaming import OnAudio

OnStep = Callable[[int, int], "bool | None"]


def formatted(exc: BaseException) -> str:
    # Logged as text: a LogRecord holding exc_info would keep the frames
    # (and the batch's tensors) alive for as long as a handler keeps records.
    return "".join(traceback.format_exception(exc)).rstrip()


@dataclass
class GenerationRequest:
    prompt_audio: np.ndarray  # float32, shape (channels, samples), any channel count
    prompt_sr: int  # any sample rate
    total_seconds: float  # length of the OUTPUT including the prompt
    text: str | None = None
    seed: int = 0
    top_k: int = 250
    top_p: float = 0.0
    temperature: float = 1.0
    cfg_coef: float = 3.0
    on_progress: Callable[[int, int], None] | None = None  # (this task's step, this task's total steps)
    should_stop: Callable[[], bool] | None = None  # polled every step; True cancels this task only
    # Melody models only: condition on the chroma of the prompt audio.
    melody_conditioning: bool = False
    # Called with chunks of the continuation as they are generated (see worker.engine.streaming).
    on_audio: OnAudio | None = None


@dataclass
class GenerationResult:
    # float32 (model_channels, samples) at the engine's sample rate: the prompt
    # (as MusicGen reconstructs it) followed by the continuation.
    audio: np.ndarray
    sample_rate: int


@dataclass
class Plan:
    """One request, prepared: prompt at the model's rate and the step budget."""

    index: int  # position in the caller's list
    request: GenerationRequest
    prompt: np.ndarray  # (model_channels, whole frames * hop) float32
    total_samples: int
    new_frames: int
    max_new_tokens: int

    @property
    def guided(self) -> bool:
        return self.request.cfg_coef > 1

    def sampling(self) -> SamplingSettings:
        r = self.request
        return SamplingSettings(seed=r.seed, temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                                cfg_coef=r.cfg_coef)
