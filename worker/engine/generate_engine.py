"""MusicGen continuation engine: the one place MusicGen's quirks live.

How transformers' MusicGen (5.23) continues an audio prompt, and what this
module does about each quirk:

- **Frames.** EnCodec turns audio into frames of ``hop = 640`` samples at
  32 kHz: 50 frames per second. Each frame is ``num_codebooks`` tokens (4 per
  channel; stereo models interleave left/right codebooks, 8 in all). A prompt
  that is not a whole number of frames would end in a frame that is partly
  padding, and the continuation would start after that padding. We drop the
  incomplete last frame (< 20 ms) so the continuation starts exactly where the
  kept prompt ends.
- **Delay pattern.** Codebook ``k`` of a channel runs ``k`` steps behind
  codebook 0, so the last frame is only complete ``codebooks_per_channel - 1``
  steps after its first token. Hence ``max_new_tokens = new_frames + 3``
  (``50 * D + 3`` for D seconds); the stereo interleave does not lengthen the
  delay. In sequence position terms (position 0 is the start token ``2048``,
  which is also the pad token): prompt frame ``f`` of codebook ``k`` sits at
  ``1 + k + f`` and the delay pattern pads the last ``k`` positions of
  codebook ``k`` with ``2048``. ``test_engine`` checks the formula against the
  model's raw output.
- **The output includes the prompt.** We return the prompt as EnCodec
  reconstructs it followed by the continuation, trimmed to the requested
  total length.
- **Text is required.** ``text=None`` would feed the audio start id (2048) to
  the T5 embedding, which fails; an empty string is the unconditioned prompt.
- **Progress and stopping.** ``streamer=`` is useless for MusicGen; a
  ``StoppingCriteria`` is called exactly once per decoding step. Returning
  True from it stops mid-delay-pattern and transformers then fails to
  un-delay the codes, so to stop it *raises* (``batching.BatchOver``), keeping
  the token ids it was given. That also skips transformers' un-delay and
  EnCodec decoding: we un-delay and decode each row ourselves, from its own
  frames only.

How rows of different requests share one ``generate`` call (``generate_each``):

- **Sampling** is ours (``worker.sampling.RowSampler``): per-row classifier-
  free guidance, temperature, top-k, top-p and a per-row ``torch.Generator``
  seeded with the request's seed; generate runs greedy and keeps the drawn
  token. Classifier-free guidance is also ours: we pass the text encoder
  states doubled (conditional rows, then zeros with a zero mask, exactly what
  transformers builds for ``guidance_scale > 1``) and the decoder ids doubled,
  with ``guidance_scale=1`` so transformers adds nothing. Rows with
  ``cfg_coef <= 1`` need no unconditional half, so they run in calls of their
  own: ``cfg_coef > 1`` is the only batch key.
- **Prompt and text encoding** run per row (EnCodec's convolutions see the
  padding of a right-padded batch, so batched prompt codes would depend on the
  neighbours); text states are zero-padded to the longest with a mask.
- **Different prompt lengths: left padding.** Rows are left-padded to the
  longest prompt with the pad token 2048 and a ``decoder_attention_mask``
  (transformers 5.23 passes it through generate and extends it each step).
  Two things the mask does not fix: (1) the decoder's sinusoidal positions are
  ``arange(seq) + past_length`` for every row, ignoring the mask, so a padded
  row's prompt would start at position ``pad`` instead of 0 - a forward hook on
  ``embed_positions`` shifts each row's positions back by its padding;
  (2) the token ids in front of a row must be 2048, not an arbitrary id,
  because its first positions mix the start token into the delayed codebooks.
  With both, a padded row computes what it computes alone, up to floating-
  point rounding of differently shaped kernels: on CPU float32 its logits
  differ from the alone run's by ~1e-7 and the sampled tokens, hence the
  audio, came out identical in every test. A token could still flip if a
  draw lands within that rounding of a probability boundary; GPU half
  precision has not been measured.
- **Different totals: generate to the longest.** Each row's result takes its
  own frames; its end-of-pattern padding is forced into the decoder input by a
  pre-hook (``batching.PaddedRows``), because alone its last delayed codebooks
  are predicted from 2048 in the earlier codebooks, not from further frames.
- **Progress and cancellation** are per row (``batching.StepMonitor``): a row
  stops counting at its own total; ``should_stop`` cancels that row only; the
  call ends as soon as no row is still running.
- **Failures.** Invalid input fails its row at planning. If a whole call
  raises unexpectedly, its running rows are retried one by one, so one
  poisoned row cannot fail the others.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import soxr
import torch
from transformers import (
    AutoProcessor,
    GenerationConfig,
    LogitsProcessorList,
    MusicgenForConditionalGeneration,
    StoppingCriteriaList,
)
from transformers.modeling_outputs import BaseModelOutput

from worker.batching import (
    CANCELED,
    DONE,
    FAILED,
    RUNNING,
    BatchOver,
    GenerationCanceled,
    PaddedRows,
    RowState,
    StepMonitor,
)
from worker.device import pick_device
from worker.sampling import RowSampler, SamplingSettings
from worker.streaming import OnAudio, RowStreamer

log = logging.getLogger(__name__)

OnStep = Callable[[int, int], "bool | None"]
TINY_MODEL_PARAMETERS = 50_000_000

__all__ = ["GenerationCanceled", "GenerationRequest", "GenerationResult", "MusicGenEngine"]


def _formatted(exc: BaseException) -> str:
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
    on_progress: Callable[[int, int], None] | None = None  # (this row's step, this row's total steps)
    should_stop: Callable[[], bool] | None = None  # polled every step; True cancels this row only
    # Melody models only: condition on the chroma of the prompt audio.
    melody_conditioning: bool = False
    # Called with chunks of the continuation as they are generated (see worker.streaming).
    on_audio: OnAudio | None = None


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

    @property
    def guided(self) -> bool:
        return self.request.cfg_coef > 1

    def sampling(self) -> SamplingSettings:
        r = self.request
        return SamplingSettings(seed=r.seed, temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                                cfg_coef=r.cfg_coef)


class MusicGenEngine:
    """One MusicGen model and processor, loaded once, continuing prompts."""

    MODEL_CLASS = MusicgenForConditionalGeneration

    def __init__(self, model_ref: str, device: str = "auto", half_precision: bool = True,
                 cpu_threads: int = 0):
        self.model_ref = model_ref
        torch_device, dtype = pick_device(device, half_precision)
        self._torch_device = torch_device
        self._dtype = dtype
        self.device = str(torch_device)
        # EnCodec has no attention and rejects a blanket "sdpa", so name the
        # submodels that have attention.
        self.model = self.MODEL_CLASS.from_pretrained(
            model_ref, dtype=dtype, attn_implementation={"decoder": "sdpa", "text_encoder": "sdpa"}
        ).to(torch_device).eval()
        self._load_preprocessing(model_ref)

        audio_config = self.model.config.audio_encoder
        self.sample_rate: int = int(audio_config.sampling_rate)
        self.channels: int = int(self.model.config.decoder.audio_channels)
        self.hop_length: int = int(audio_config.hop_length)
        self.frame_rate: float = self.sample_rate / self.hop_length
        self.num_codebooks: int = int(self.model.config.decoder.num_codebooks)
        self.codebooks_per_channel: int = self.num_codebooks // self.channels
        self.pad_token: int = int(self.model.generation_config.pad_token_id)
        self.num_parameters: int = sum(p.numel() for p in self.model.parameters())
        self._lock = threading.Lock()  # hooks are installed per call; one call at a time
        self.cpu_threads = cpu_threads or self._default_cpu_threads()

    def _load_preprocessing(self, model_ref: str) -> None:
        self.processor = AutoProcessor.from_pretrained(model_ref)

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

    def _delay(self, codebook: int) -> int:
        return codebook // self.channels  # stereo interleaves left/right codebooks

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
        if not request.temperature > 0:
            raise ValueError(f"temperature must be positive, got {request.temperature}")
        if request.top_k < 0 or not 0.0 <= request.top_p <= 1.0:
            raise ValueError("top_k must be >= 0 and top_p within [0, 1]")
        if request.text is not None and not isinstance(request.text, str):
            raise ValueError(f"text must be a string, got {type(request.text).__name__}")
        if not math.isfinite(request.cfg_coef):
            raise ValueError(f"cfg_coef must be finite, got {request.cfg_coef}")
        prompt_seconds = audio.shape[1] / request.prompt_sr
        if not request.total_seconds > prompt_seconds:
            raise ValueError(
                f"total_seconds ({request.total_seconds:g}) must exceed the prompt length ({prompt_seconds:g} s)"
            )
        prompt = self._prompt_at_model_rate(audio, request.prompt_sr)
        total_samples = round(request.total_seconds * self.sample_rate)
        new_frames = max(1, math.ceil((total_samples - prompt.shape[1]) / self.hop_length))
        return _Plan(index, request, prompt, total_samples, new_frames, self.max_new_tokens(new_frames))

    # -- public API --------------------------------------------------------

    def generate(self, requests: list[GenerationRequest], on_step: OnStep | None = None) -> list[GenerationResult]:
        """Continue each request's prompt; results come back in request order.

        Invalid input raises ``ValueError`` before anything runs; the first
        row that fails or is canceled raises its exception after the call.
        ``on_step(step, total_steps)`` counts steps over all generate calls of
        this batch; returning True cancels every row (``GenerationCanceled``).
        """
        plans = [self._plan(i, r) for i, r in enumerate(requests)]
        outcomes = self._run(plans, len(requests), on_step)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]

    def generate_each(self, requests: list[GenerationRequest],
                      on_step: OnStep | None = None) -> list[GenerationResult | Exception]:
        """Like ``generate``, but every row gets its own outcome, in request order.

        A row's slot holds its ``GenerationResult``, or the exception that
        ended it: ``ValueError`` for invalid input, ``GenerationCanceled``,
        or whatever failed it (a failed batch is retried row by row first).
        """
        plans: list[_Plan] = []
        invalid: dict[int, Exception] = {}
        for i, request in enumerate(requests):
            try:
                plans.append(self._plan(i, request))
            except Exception as exc:  # noqa: BLE001 - bad input fails its own row
                invalid[i] = exc
        outcomes = self._run(plans, len(requests), on_step)
        for i, exc in invalid.items():
            outcomes[i] = exc
        return outcomes

    # -- generation --------------------------------------------------------

    def _row_states(self, plans: list[_Plan]) -> dict[int, RowState]:
        states = {p.index: RowState(p.index, p.max_new_tokens, p.request.on_progress, p.request.should_stop)
                  for p in plans}
        for p in plans:
            if p.request.on_audio is not None:
                states[p.index].streamer = RowStreamer(p.request.on_audio, p.new_frames,
                                                       p.total_samples - p.prompt.shape[1], self.hop_length)
        return states

    @contextmanager
    def _session(self, on_step: OnStep | None):
        """One generate call at a time, at this engine's CPU thread count; yields the caller-wide step hook
        (once ``on_step`` returned True it keeps answering True, so later groups are canceled too)."""
        with self._lock:
            if self.closed:
                raise RuntimeError(f"engine for {self.model_ref} is closed")
            threads_before = torch.get_num_threads()
            if self.cpu_threads:
                torch.set_num_threads(self.cpu_threads)
            canceled: list[int] = []

            def step_hook(step: int, total: int) -> bool:
                if on_step is not None and on_step(step, total):
                    canceled.append(step)
                return bool(canceled)

            step_hook.canceled = canceled  # type: ignore[attr-defined]
            try:
                yield step_hook
            finally:
                torch.set_num_threads(threads_before)

    def _run(self, plans: list[_Plan], count: int, on_step: OnStep | None) -> list:
        outcomes: list = [None] * count
        if not plans:
            return outcomes
        groups: dict[bool, list[_Plan]] = {}
        for plan in plans:
            groups.setdefault(plan.guided, []).append(plan)
        steps_overall = sum(max(p.max_new_tokens for p in group) for group in groups.values())
        states = self._row_states(plans)
        with self._session(on_step) as step_hook:
            steps_before = 0
            for group in groups.values():
                rows = [states[p.index] for p in group]
                if step_hook.canceled:
                    for row in rows:
                        row.cancel(0)
                audio = self._run_group(group, rows, step_hook, steps_before, steps_overall)
                steps_before += max(p.max_new_tokens for p in group)
                for plan, row in zip(group, rows):
                    if row.status == DONE:
                        outcomes[plan.index] = GenerationResult(audio=audio[plan.index], sample_rate=self.sample_rate)
                    else:
                        outcomes[plan.index] = row.error
        return outcomes

    def _run_group(self, group: list[_Plan], rows: list[RowState], on_step: OnStep | None,
                   steps_before: int, steps_overall: int) -> dict[int, np.ndarray]:
        """Generates one group in one call; if that call fails, each row alone."""
        try:
            return self._generate_rows(group, rows, on_step, steps_before, steps_overall)
        except Exception as exc:  # noqa: BLE001 - retried row by row below
            if len(group) == 1:
                self._fail(rows[0], exc)
                return {}
            log.warning("batch of %d failed; retrying its rows one by one:\n%s", len(group), _formatted(exc))
            exc.__traceback__ = None  # its frames hold the batch's tensors
        self._release_memory()
        audio: dict[int, np.ndarray] = {}
        for plan, row in zip(group, rows):
            if row.status in (CANCELED, FAILED):
                continue
            row.status = RUNNING
            try:
                audio.update(self._generate_rows([plan], [row], on_step, steps_before, steps_overall))
            except Exception as exc:  # noqa: BLE001 - this row's own failure
                self._fail(row, exc)
        return audio

    @staticmethod
    def _fail(row: RowState, exc: Exception) -> None:
        log.warning("generation of row %d failed:\n%s", row.index, _formatted(exc))
        # Keep the message, not the frames: they hold the call's tensors.
        chained: BaseException | None = exc
        while chained is not None:
            chained.__traceback__ = None
            chained = chained.__cause__ or chained.__context__
        row.fail(exc)

    def _generate_rows(self, group: list[_Plan], rows: list[RowState], on_step: OnStep | None,
                       steps_before: int, steps_overall: int) -> dict[int, np.ndarray]:
        for row in rows:
            row.poll_stop(0)
        live = [i for i, row in enumerate(rows) if row.status == RUNNING]
        if not live:
            return {}
        group, rows = [group[i] for i in live], [rows[i] for i in live]
        guided = group[0].guided
        steps = max(p.max_new_tokens for p in group)
        with torch.inference_mode():
            prompts = [self._encode_prompt(p.prompt) for p in group]  # (codes (K, frames), scales)
            texts = [self._encode_text(p.request.text or "") for p in group]
            inputs, left_pad = self._batch_inputs([codes for codes, _ in prompts], texts, guided)
            del texts
            longest = max(codes.shape[-1] for codes, _ in prompts)
            pad_from = [self._pad_from(longest, p.max_new_tokens, k) for p in group for k in range(self.num_codebooks)]
            sampler = RowSampler([p.sampling() for p in group], self.num_codebooks, guided, self._torch_device)
            monitor = StepMonitor(rows, sampler, on_step, steps_before, steps_overall,
                                  on_ids=self._stream_hook(rows, prompts, 1 + longest))
            # Unset fields would be filled from the checkpoint's generation
            # config (guidance_scale=3, top_k=250); these neutral values keep
            # transformers from adding CFG or warning about sampling flags.
            config = GenerationConfig(
                max_new_tokens=steps, do_sample=False, guidance_scale=1.0, top_k=50, use_cache=True,
                decoder_start_token_id=self.pad_token, bos_token_id=self.pad_token, pad_token_id=self.pad_token,
            )
            try:
                with PaddedRows(self.model.decoder, left_pad, pad_from, self.pad_token):
                    self.model.generate(
                        **inputs, generation_config=config,
                        logits_processor=LogitsProcessorList([sampler]),
                        stopping_criteria=StoppingCriteriaList([monitor]),
                    )
            except BatchOver:
                pass
            else:
                raise RuntimeError(f"MusicGen stopped after {monitor.step} of {steps} steps with rows still running")
            del inputs
            final_ids = monitor.final_ids
            monitor.final_ids = None
            audio = {}
            for r, (plan, row, (codes, scales)) in enumerate(zip(group, rows, prompts)):
                if row.status == DONE:
                    new = self._frame_range(final_ids, r, 1 + longest, 0, plan.new_frames)
                    audio[plan.index] = self._fit_length(self._decode(torch.cat([codes, new], -1), scales),
                                                         plan.total_samples)
                    if row.streamer is not None:
                        row.streamer.finish(audio[plan.index][:, plan.prompt.shape[1]:])
                if row.streamer is not None:
                    row.streamer.unbind()
            return audio

    def _stream_hook(self, rows: list[RowState], prompts: list, start: int):
        """The per-step hook that hands streaming rows their newly completed frames (None if none streams)."""
        streaming = [(r, row) for r, row in enumerate(rows) if row.streamer is not None]
        if not streaming:
            return None
        for r, row in streaming:
            codes, scales = prompts[r]
            row.streamer.bind(codes, lambda c, scales=scales: self._decode(c, scales))
        delay = self.codebooks_per_channel - 1

        def on_ids(step: int, ids: torch.Tensor) -> None:
            for r, row in streaming:
                if row.status in (RUNNING, DONE):
                    row.streamer.advance(lambda a, b, r=r: self._frame_range(ids, r, start, a, b), step - delay)

        return on_ids

    def _encode_prompt(self, prompt: np.ndarray) -> tuple[torch.Tensor, list]:
        """EnCodec codes ``(num_codebooks, frames)`` of one prompt, channels interleaved, and their scales."""
        audio = torch.from_numpy(prompt).to(self._torch_device, dtype=self._dtype)
        codes, scales = [], []
        for channel in audio:  # stereo MusicGen encodes left and right separately
            encoded = self.model.audio_encoder.encode(channel[None, None])
            codes.append(encoded.audio_codes[0, 0])
            scales.append(encoded.audio_scales[0])
        return torch.stack(codes, dim=1).reshape(self.num_codebooks, -1), scales

    def _encode_text(self, text: str) -> torch.Tensor:
        tokens = self.processor.tokenizer([text], return_tensors="pt").to(self._torch_device)
        return self.model.text_encoder(**tokens).last_hidden_state[0]

    def _batch_inputs(self, codes: list[torch.Tensor], texts: list[torch.Tensor], guided: bool) -> tuple[dict, list[int]]:
        """Left-padded decoder ids and mask, zero-padded text states and mask; doubled for CFG."""
        rows, k = len(codes), self.num_codebooks
        longest = max(c.shape[-1] for c in codes)
        # Position 0 is the start token; pads in front of a row are the same id (see the docstring).
        ids = torch.full((rows * k, 1 + longest), self.pad_token, dtype=torch.long, device=self._torch_device)
        ids_mask = torch.ones((rows, 1 + longest), dtype=torch.long, device=self._torch_device)
        left_pad = []
        for r, c in enumerate(codes):
            pad = longest - c.shape[-1]
            ids[r * k : (r + 1) * k, 1 + pad :] = c
            ids_mask[r, :pad] = 0
            left_pad.append(pad)
        text_length = max(t.shape[0] for t in texts)
        states = texts[0].new_zeros((rows, text_length, texts[0].shape[-1]))
        states_mask = torch.zeros((rows, text_length), dtype=torch.long, device=self._torch_device)
        for r, t in enumerate(texts):
            states[r, : t.shape[0]] = t
            states_mask[r, : t.shape[0]] = 1
        if guided:  # unconditional half: no text at all, as transformers builds it
            ids, ids_mask = ids.repeat(2, 1), ids_mask.repeat(2, 1)
            states = torch.cat([states, torch.zeros_like(states)])
            states_mask = torch.cat([states_mask, torch.zeros_like(states_mask)])
        inputs = dict(encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=states_mask,
                      decoder_input_ids=ids, decoder_attention_mask=ids_mask)
        return inputs, left_pad

    def _pad_from(self, longest_prompt: int, max_new_tokens: int, codebook: int) -> int:
        # Alone, a row's sequence is 1 + prompt + max_new_tokens long and the
        # delay pattern pads codebook k from length - K + 1 + delay(k) on;
        # left padding shifts that by (longest - prompt), so the prompt cancels.
        length = 1 + longest_prompt + max_new_tokens
        return length - self.codebooks_per_channel + 1 + self._delay(codebook)

    def _frame_range(self, ids: torch.Tensor, row: int, start: int, first: int, end: int) -> torch.Tensor:
        """New frames [first, end) of one row, codebooks un-delayed: (num_codebooks, end - first).

        New frame f of codebook k sits at start + delay(k) + f (start = 1 + longest prompt)."""
        k = self.num_codebooks
        return torch.stack([
            ids[row * k + c, start + self._delay(c) + first : start + self._delay(c) + end] for c in range(k)
        ])

    def _decode(self, codes: torch.Tensor, scales: list) -> np.ndarray:
        channels = [codes] if self.channels == 1 else [codes[0::2], codes[1::2]]
        audio = [self.model.audio_encoder.decode(c[None, None], [s]).audio_values[0] for c, s in zip(channels, scales)]
        return torch.cat(audio).float().cpu().numpy()

    def _fit_length(self, audio: np.ndarray, total_samples: int) -> np.ndarray:
        missing = total_samples - audio.shape[-1]
        if missing >= self.hop_length:
            raise RuntimeError(f"MusicGen returned {audio.shape[-1]} samples, {missing} short of {total_samples}")
        if missing > 0:
            # Mirror the last few ms: continuous at the join, unlike zeros.
            audio = np.pad(audio, ((0, 0), (0, missing)), mode="reflect")
        return np.ascontiguousarray(audio[:, :total_samples], dtype=np.float32)

    def _release_memory(self) -> None:
        gc.collect()
        if self._torch_device.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Release the model's memory; the engine cannot generate afterwards."""
        with self._lock:
            if self.model is None:
                return
            self.model = None
            self.processor = None
        self._release_memory()
