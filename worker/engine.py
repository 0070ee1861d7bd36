"""MusicGen continuation engine: the one place MusicGen's quirks live.

How transformers' MusicGen (5.23) continues an audio prompt, and what this
module does about each quirk:

- **Frames.** EnCodec turns audio into frames of ``hop = 640`` samples at
  32 kHz: 50 frames per second. Each frame is ``num_codebooks`` tokens (4 per
  channel; stereo models interleave left/right codebooks, 8 in all). The
  prompt is encoded to frames, so a prompt that is not a whole number of frames
  would end in a frame that is partly padding, and the continuation would
  start after that padding. We drop the incomplete last frame (< 20 ms) of the
  prompt so the continuation starts exactly where the kept prompt ends.
- **Delay pattern.** Codebook ``k`` runs ``k`` steps behind codebook 0, so the
  last frame is only complete ``num_codebooks_per_channel - 1`` steps after its
  first token. Hence ``max_new_tokens = new_frames + (codebooks_per_channel - 1)``
  (``50 * D + 3`` for D seconds): the stereo interleave does not lengthen the
  delay, every channel has 4 codebooks. ``test_engine`` checks the formula
  against the model's raw output.
- **The output includes the prompt.** ``generate`` returns the decoded audio
  of prompt frames followed by new frames: the prompt as EnCodec reconstructs
  it, then the continuation. We return exactly that, trimmed to the requested
  total length.
- **Text is required.** ``text=None`` makes transformers feed the audio BOS id
  (2048) to the T5 embedding, which fails; an empty string is the
  unconditioned prompt.
- **Progress.** ``streamer=`` is useless for MusicGen; a ``StoppingCriteria``
  is called exactly once per decoding step, so it reports progress. To cancel
  it raises: a ``True`` from it would stop mid-delay-pattern and transformers
  would then fail to un-delay the codes.
- **Sampling** uses torch's global RNG, so we seed it right before generate.
"""

from __future__ import annotations

import gc
import math
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import soxr
import torch
from transformers import AutoProcessor, MusicgenForConditionalGeneration, StoppingCriteria, StoppingCriteriaList

from worker.device import pick_device

OnStep = Callable[[int, int], "bool | None"]
TINY_MODEL_PARAMETERS = 50_000_000


class GenerationCanceled(Exception):
    """The ``on_step`` hook asked generation to stop."""


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


@dataclass
class GenerationResult:
    # float32 (model_channels, samples) at the engine's sample rate: the prompt
    # (as MusicGen reconstructs it) followed by the continuation.
    audio: np.ndarray
    sample_rate: int


@dataclass
class _Plan:
    """One request, prepared: prompt at the model's rate and the step budget."""

    index: int  # position in the caller's list
    request: GenerationRequest
    prompt: np.ndarray  # (model_channels, whole frames * hop) float32
    total_samples: int
    new_frames: int
    max_new_tokens: int

    def batch_key(self) -> tuple:
        # Rows of one generate() call must share the prompt length (else the
        # shorter prompts get padding frames before their continuation), the
        # step count and the sampling settings (one generation config per call).
        r = self.request
        return (self.prompt.shape[-1], self.total_samples, r.top_k, r.top_p, r.temperature, r.cfg_coef)


class _StepHook(StoppingCriteria):
    """Calls ``on_step(step, total_steps)`` once per decoding step; True cancels.

    Cancelling raises from inside generate(): stopping it early the ordinary
    way (returning True) leaves the delay pattern incomplete, and transformers'
    post-processing then fails to reshape the codes.
    """

    def __init__(self, on_step: OnStep | None, total_steps: int):
        self.on_step = on_step
        self.total_steps = total_steps
        self.step = 0  # counts across all batches of one generate() call

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.step += 1
        if self.on_step is not None and self.on_step(self.step, self.total_steps):
            raise GenerationCanceled(f"canceled at step {self.step} of {self.total_steps}")
        return torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)


class MusicGenEngine:
    """One MusicGen model and processor, loaded once, continuing prompts."""

    def __init__(self, model_ref: str, device: str = "auto", half_precision: bool = True,
                 cpu_threads: int = 0):
        self.model_ref = model_ref
        torch_device, dtype = pick_device(device, half_precision)
        self._torch_device = torch_device
        self._dtype = dtype
        self.device = str(torch_device)
        # EnCodec has no attention and rejects a blanket "sdpa", so name the
        # submodels that have attention.
        self.model = MusicgenForConditionalGeneration.from_pretrained(
            model_ref, dtype=dtype, attn_implementation={"decoder": "sdpa", "text_encoder": "sdpa"}
        ).to(torch_device).eval()
        self.processor = AutoProcessor.from_pretrained(model_ref)

        audio_config = self.model.config.audio_encoder
        self.sample_rate: int = int(audio_config.sampling_rate)
        self.channels: int = int(self.model.config.decoder.audio_channels)
        self.hop_length: int = int(audio_config.hop_length)
        self.frame_rate: float = self.sample_rate / self.hop_length
        self.codebooks_per_channel: int = self.model.config.decoder.num_codebooks // self.channels
        self.num_parameters: int = sum(p.numel() for p in self.model.parameters())
        self._lock = threading.Lock()  # generate() seeds the global RNG; one call at a time
        self.cpu_threads = cpu_threads or self._default_cpu_threads()

    def _default_cpu_threads(self) -> int:
        # A tiny model's per-step ops are so small that a second CPU thread
        # costs more in synchronisation than it gains (measured ~2x slower on
        # 2 cores); real checkpoints use torch's default.
        if self._torch_device.type == "cpu" and self.num_parameters < TINY_MODEL_PARAMETERS:
            return 1
        return 0

    @property
    def closed(self) -> bool:
        return self.model is None

    def max_new_tokens(self, new_frames: int) -> int:
        """Decoding steps that yield ``new_frames`` complete frames (see the delay pattern)."""
        return new_frames + self.codebooks_per_channel - 1

    # -- preparation -------------------------------------------------------

    def _prompt_at_model_rate(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        if self.channels == 1 or audio.shape[0] != self.channels:
            audio = audio.mean(axis=0, keepdims=True)
            audio = np.repeat(audio, self.channels, axis=0)  # stereo model: same signal both sides
        if sample_rate != self.sample_rate:
            # soxr works on (samples, channels)
            audio = soxr.resample(audio.T, sample_rate, self.sample_rate).T
        whole_frames = audio.shape[1] // self.hop_length
        if whole_frames < 1:
            raise ValueError(f"prompt is shorter than one MusicGen frame ({1000 / self.frame_rate:.0f} ms)")
        return np.ascontiguousarray(audio[:, : whole_frames * self.hop_length], dtype=np.float32)

    def _plan(self, index: int, request: GenerationRequest) -> _Plan:
        audio = np.asarray(request.prompt_audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None, :]
        if audio.ndim != 2 or audio.shape[0] < 1 or audio.shape[1] < 1:
            raise ValueError(f"prompt_audio must have shape (channels, samples), got {audio.shape}")
        if not np.all(np.isfinite(audio)):
            raise ValueError("prompt_audio contains NaN or infinite samples")
        if request.prompt_sr <= 0:
            raise ValueError(f"prompt_sr must be positive, got {request.prompt_sr}")
        if request.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {request.temperature}")
        if request.top_k < 0 or not 0.0 <= request.top_p <= 1.0:
            raise ValueError("top_k must be >= 0 and top_p within [0, 1]")
        prompt_seconds = audio.shape[1] / request.prompt_sr
        if request.total_seconds <= prompt_seconds:
            raise ValueError(
                f"total_seconds ({request.total_seconds:g}) must exceed the prompt length ({prompt_seconds:g} s)"
            )
        prompt = self._prompt_at_model_rate(audio, request.prompt_sr)
        total_samples = round(request.total_seconds * self.sample_rate)
        new_frames = max(1, math.ceil((total_samples - prompt.shape[1]) / self.hop_length))
        return _Plan(index, request, prompt, total_samples, new_frames, self.max_new_tokens(new_frames))

    # -- generation --------------------------------------------------------

    def generate(self, requests: list[GenerationRequest], on_step: OnStep | None = None) -> list[GenerationResult]:
        """Continue each request's prompt; results come back in request order.

        Requests that share prompt length, total length and sampling settings
        run as one batch, seeded with the first one's seed (the same batch
        gives the same audio); other requests run one batch after another.
        ``on_step(step, total_steps)`` counts steps over all batches of this
        call; returning True cancels and raises ``GenerationCanceled``.
        """
        if not requests:
            return []
        plans = [self._plan(i, r) for i, r in enumerate(requests)]
        batches: dict[tuple, list[_Plan]] = {}
        for plan in plans:
            batches.setdefault(plan.batch_key(), []).append(plan)

        hook = _StepHook(on_step, total_steps=sum(b[0].max_new_tokens for b in batches.values()))
        results: list[GenerationResult | None] = [None] * len(plans)
        with self._lock:
            if self.closed:
                raise RuntimeError(f"engine for {self.model_ref} is closed")
            threads_before = torch.get_num_threads()
            if self.cpu_threads:
                torch.set_num_threads(self.cpu_threads)
            try:
                for batch in batches.values():
                    for plan, audio in zip(batch, self._generate_batch(batch, hook)):
                        results[plan.index] = GenerationResult(audio=audio, sample_rate=self.sample_rate)
            finally:
                torch.set_num_threads(threads_before)
        return results  # type: ignore[return-value]

    def _generate_batch(self, batch: list[_Plan], hook: _StepHook) -> list[np.ndarray]:
        first = batch[0]
        settings = first.request
        # The feature extractor wants mono examples 1-D and stereo ones (2, samples).
        prompts = [p.prompt[0] if self.channels == 1 else p.prompt for p in batch]
        inputs = self.processor(
            audio=prompts,
            sampling_rate=self.sample_rate,
            text=[p.request.text or "" for p in batch],
            padding=True,
            return_tensors="pt",
        )
        inputs = {
            name: value.to(self._torch_device, dtype=self._dtype if value.is_floating_point() else None)
            for name, value in inputs.items()
        }
        sampling = dict(do_sample=True, top_k=settings.top_k, temperature=settings.temperature)
        if settings.top_p > 0:
            sampling["top_p"] = settings.top_p
        steps_before = hook.step

        with torch.inference_mode():
            torch.manual_seed(settings.seed)  # seeds CUDA too
            audio = self.model.generate(
                **inputs,
                **sampling,
                max_new_tokens=first.max_new_tokens,
                guidance_scale=settings.cfg_coef,
                stopping_criteria=StoppingCriteriaList([hook]),
            )
            if hook.step - steps_before != first.max_new_tokens:
                raise RuntimeError(
                    f"MusicGen ran {hook.step - steps_before} steps instead of {first.max_new_tokens}"
                )
            audio = audio.float().cpu().numpy()
        del inputs
        return [self._fit_length(row, first.total_samples) for row in audio]

    def _fit_length(self, audio: np.ndarray, total_samples: int) -> np.ndarray:
        missing = total_samples - audio.shape[-1]
        if missing >= self.hop_length:
            raise RuntimeError(f"MusicGen returned {audio.shape[-1]} samples, {missing} short of {total_samples}")
        if missing > 0:
            # Mirror the last few ms: continuous at the join, unlike zeros.
            audio = np.pad(audio, ((0, 0), (0, missing)), mode="reflect")
        return np.ascontiguousarray(audio[:, :total_samples], dtype=np.float32)

    def close(self) -> None:
        """Release the model's memory; the engine cannot generate afterwards."""
        with self._lock:
            if self.model is None:
                return
            self.model = None
            self.processor = None
        gc.collect()
        if self._torch_device.type == "cuda":
            torch.cuda.empty_cache()
