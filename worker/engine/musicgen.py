"""MusicGen, loaded once: the one place the model's quirks live.

``MusicGenEngine`` loads a checkpoint (weights and layers from transformers'
``MusicgenForConditionalGeneration``), prepares requests and encodes and
decodes audio; engine v2's scheduler (``worker.engine.scheduler``) runs the
decoding itself, on a thread of its own (``worker.engine.loop``), so tasks
join and leave the running batch at every step. ``submit`` hands it a
request from any thread; ``generate`` / ``generate_each`` run a list of
requests in-process and wait for them.

How transformers' MusicGen (5.23) continues an audio prompt, and what this
engine does about each quirk:

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
  delay. ``worker.engine.delay`` lays the sequence out; ``test_engine``
  checks the step formula against the model's raw output.
- **The output includes the prompt.** We return the prompt as EnCodec
  reconstructs it followed by the continuation, trimmed to the requested
  total length.
- **Text is required.** ``None`` would feed the audio start id (2048) to the
  T5 embedding, which fails; an empty string is the unconditioned prompt.
- **Per-request encoding.** Prompts are EnCodec-encoded one by one (its
  convolutions would see the padding of a batch, so codes would depend on
  the neighbours), and each task's text is encoded once.
- **Sampling** is ours (``worker.engine.sampling.draw``): per-task classifier-free
  guidance, temperature, top-k, top-p and a ``torch.Generator`` seeded with
  the request's seed, transformers' formulas in transformers' order, so a
  seed gives the same audio as transformers' own ``generate`` seeded alike
  (tested), whether the task runs alone or beside others.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import threading
from concurrent.futures import Future

import numpy as np
import soxr
import torch
from transformers import AutoProcessor, MusicgenForConditionalGeneration

from worker.device import pick_device
from worker.engine.codec import TiledDecoder
from worker.engine.loop import EngineLoop
from worker.engine.openvino_graph import release_float_weights
from worker.engine.openvino_step import OpenVinoStep
from worker.engine.quantize import COMPILED_MODES, kv_dtype, quantize_decoder, resolve
from worker.engine.requests import GenerationRequest, GenerationResult, OnStep, Plan
from worker.engine.scheduler import Scheduler
from worker.engine.threads import single_threaded
from worker.engine.windows import WINDOW_SECONDS

log = logging.getLogger(__name__)

TINY_MODEL_PARAMETERS = 50_000_000
# The cache holds a 30 s window plus one second: a prompt of up to 30 s still gets a first window that adds
# audio (see worker.engine.windows).
CACHE_SECONDS = WINDOW_SECONDS + 1.0
# The text's T5 tokens the cache holds per task; longer texts are cut (the API's 500-character prompts stay
# well below it, except for text that T5 spells one character per token).
MAX_TEXT_TOKENS = 256

__all__ = ["MusicGenEngine"]


class MusicGenEngine:
    """One MusicGen model and processor, loaded once, continuing prompts.

    ``max_tasks``: guided tasks decoded together (the cache holds two rows
    each, 30 s long). ``quantize``: ``""`` (off), ``"int8-rows"``, ``"int8"``
    or ``"int8-weight-only"`` for the decoder's linear layers on CPU workers,
    or ``"auto"`` (``int8-rows`` for a real-size model on a CPU, else off;
    ``worker.engine.quantize``). ``kv_cache``: the KV cache's dtype, ``"auto"`` (bfloat16
    under a quantized decoder on a CPU, else the model's), ``"float32"``, ``"bfloat16"`` or
    ``"float16"``. ``cuda_graphs``: capture the decoding step
    as CUDA graphs on a GPU (``worker.engine.graphs``).
    """

    MODEL_CLASS = MusicgenForConditionalGeneration

    def __init__(self, model_ref: str, device: str = "auto", half_precision: bool = True,
                 cpu_threads: int = 0, *, max_tasks: int = 8, quantize: str = "", cuda_graphs: bool = True,
                 kv_cache: str = "auto"):
        # Loaded on one CPU thread: the loading thread then keeps no OpenMP team of its own, which would halve
        # the speed of the steps run on the engine's stepping thread (worker.engine.threads).
        self._machine_threads = torch.get_num_threads()
        with single_threaded():
            self._load(model_ref, device, half_precision, cpu_threads, max_tasks=max_tasks, quantize=quantize,
                       cuda_graphs=cuda_graphs, kv_cache=kv_cache)

    def _load(self, model_ref: str, device: str, half_precision: bool, cpu_threads: int, *, max_tasks: int,
              quantize: str, cuda_graphs: bool, kv_cache: str) -> None:
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
        self.cpu_threads = cpu_threads or self._default_cpu_threads()
        self.max_tasks = max(1, max_tasks)
        self.cuda_graphs = cuda_graphs
        # The decoder the scheduler steps, its linear layers in int8 when asked (CPU only: GPUs run half
        # precision), or compiled into an OpenVINO graph. In place either way: nothing else runs the float
        # decoder, so its memory is not kept twice.
        asked = quantize
        quantize = resolve(quantize, torch_device.type, self.num_parameters)  # "auto": CPU_DEFAULT on CPUs
        if quantize and torch_device.type != "cpu":
            log.info("SEGUE_QUANTIZE=%s ignored on %s", quantize, torch_device)
            quantize = ""
        self.quantize = quantize  # as applied
        # SEGUE_QUANTIZE=openvino-int8: the scheduler steps a compiled graph of the float decoder instead.
        self.compiled_decoder = self._compiled(asked) if quantize in COMPILED_MODES else None
        if quantize in COMPILED_MODES and self.compiled_decoder is None:
            quantize = self.quantize = "int8-rows"
        if quantize and self.compiled_decoder is None:
            self.decoder = quantize_decoder(self.model.decoder, quantize, inplace=True)
        else:
            self.decoder = self.model.decoder
        # openvino-int8 keeps its own cache (worker.engine.paged_cache), float16 whatever SEGUE_KV_CACHE says.
        self.kv_dtype = torch.float16 if self.compiled_decoder is not None else kv_dtype(
            kv_cache, torch_device.type, bool(quantize), dtype)
        # EnCodec decodes on CPUs run tiled (worker.engine.codec: the same audio up to float rounding, ~1.6x
        # faster); GPUs keep transformers' decode, unmeasured there.
        self.codec = TiledDecoder(self.model.audio_encoder) if torch_device.type == "cpu" else None
        self._lock = threading.Lock()
        self._loop: EngineLoop | None = None
        self._closing = False

    def _compiled(self, asked: str):
        """openvino-int8's compiled graph of the decoder, its float weights then freed; None where it cannot be
        built here and ``auto`` chose it (the engine then serves int8-rows: auto promises a working worker, not
        a kernel). Asked for by name, a failure is the error it is."""
        try:
            compiled = OpenVinoStep.compiled(self.model.decoder, self.cpu_threads)
        except Exception:  # noqa: BLE001 - whatever OpenVINO cannot build or run on this CPU
            if asked != "auto":
                raise
            log.exception("the compiled decoding step could not be built here; serving int8-rows instead")
            return None
        release_float_weights(self.model.decoder)
        return compiled

    def _load_preprocessing(self, model_ref: str) -> None:
        self.processor = AutoProcessor.from_pretrained(model_ref)

    def _default_cpu_threads(self) -> int:
        # A tiny model's per-step ops are so small that a second CPU thread
        # costs more in synchronisation than it gains (measured ~2x slower on
        # 2 cores); real checkpoints use torch's default, as it was when the engine was made (the
        # stepping thread sets it at every step: it may run several engines).
        if self._torch_device.type == "cpu":
            return 1 if self.num_parameters < TINY_MODEL_PARAMETERS else self._machine_threads
        return 0

    @property
    def closed(self) -> bool:
        return self.model is None or self._closing

    def max_new_tokens(self, new_frames: int) -> int:
        """Decoding steps that yield ``new_frames`` complete frames (see the delay pattern)."""
        return new_frames + self.codebooks_per_channel - 1

    def _delay(self, codebook: int) -> int:
        return codebook // self.channels  # stereo interleaves left/right codebooks

    # -- running -----------------------------------------------------------

    @property
    def loop(self) -> EngineLoop:
        """The scheduler's thread, started on first use (a worker that only loads a model starts none)."""
        with self._lock:
            if self.model is None or self._closing:
                raise RuntimeError(f"engine for {self.model_ref} is closed")
            if self._loop is None:
                scheduler = Scheduler(self, max_rows=2 * self.max_tasks, max_seconds=CACHE_SECONDS,
                                      max_text=MAX_TEXT_TOKENS,
                                      decoder=self.decoder, cuda_graphs=self.cuda_graphs)
                self._loop = EngineLoop(scheduler, name=f"segue-engine-{self.model_ref}"[:60])
            return self._loop

    def submit(self, request: GenerationRequest) -> Future:
        """Start a request from any thread: it joins the running decode at the next step.

        The future holds its ``GenerationResult`` or the exception that ended it (``ValueError`` for
        invalid input, ``GenerationCanceled``, or whatever failed it)."""
        return self.loop.submit(request)

    @property
    def running_tasks(self) -> int:
        """Tasks decoding now, or prefilling to join."""
        loop = self._loop
        return loop.running_tasks if loop is not None else 0

    def generate(self, requests: list[GenerationRequest], on_step: OnStep | None = None) -> list[GenerationResult]:
        """Continue each request's prompt; results come back in request order.

        Invalid input raises ``ValueError`` before anything runs; otherwise the first request that
        failed or was canceled raises its exception once all have ended. ``on_step(step, total)``
        sees the furthest request's step and the largest total; returning True cancels every request.
        """
        for i, request in enumerate(requests):
            self._plan(i, request)  # every request valid before any runs
        outcomes = self.generate_each(requests, on_step)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]

    def generate_each(self, requests: list[GenerationRequest],
                      on_step: OnStep | None = None) -> list[GenerationResult | Exception]:
        """Like ``generate``, but every request gets its own outcome, in request order: its
        ``GenerationResult``, or the exception that ended it."""
        if on_step is not None:
            steps = _CallerSteps(on_step, max((self._steps_of(r) for r in requests), default=1))
            requests = [steps.observe(r) for r in requests]
        futures = [self.submit(r) for r in requests]
        return [f.exception() or f.result() for f in futures]

    def _steps_of(self, request: GenerationRequest) -> int:
        """Decoding steps of a request within one window (0 when it is invalid: it fails at submit)."""
        try:
            return self._plan(0, request).max_new_tokens if request.total_seconds <= WINDOW_SECONDS else 0
        except Exception:  # noqa: BLE001 - reported by submit
            return 0

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

    def _plan(self, index: int, request: GenerationRequest) -> Plan:
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
        return Plan(index, request, prompt, total_samples, new_frames, self.max_new_tokens(new_frames))

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
        tokens = self.processor.tokenizer([text], return_tensors="pt", truncation=True,
                                          max_length=MAX_TEXT_TOKENS).to(self._torch_device)
        return self.model.text_encoder(**tokens).last_hidden_state[0]

    def _decode(self, codes: torch.Tensor, scales: list) -> np.ndarray:
        channels = [codes] if self.channels == 1 else [codes[0::2], codes[1::2]]
        if self.codec is not None and all(scale is None for scale in scales):
            # One batch: a stereo result's two channels share each read of the LSTM's weights.
            return self.codec.decode(torch.stack(channels))[:, 0].float().cpu().numpy()
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
        """Finish what was submitted (new submits are refused meanwhile), then release the model's memory;
        the engine cannot generate afterwards."""
        with self._lock:
            if self.model is None or self._closing:
                return
            self._closing = True
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.close()
        with self._lock:
            self.model = self.decoder = None
            self.processor = None
        self._release_memory()


class _CallerSteps:
    """``generate``'s caller-wide hook over requests that run side by side.

    ``on_step(step, total)``: ``total`` is the longest request's step count (known before anything runs),
    ``step`` how far the furthest request got on that scale, reported each time it grows; once the hook
    returned True, every request stops at its next step."""

    def __init__(self, on_step: OnStep, total: int):
        self.on_step = on_step
        self.total = max(1, total)
        self.step = 0
        self.canceled = False
        self._lock = threading.Lock()

    def observe(self, request: GenerationRequest) -> GenerationRequest:
        progress, stop = request.on_progress, request.should_stop

        def on_progress(step: int, total: int) -> None:
            if progress is not None:
                progress(step, total)
            with self._lock:
                reached = min(self.total, round(self.total * step / total)) if total else self.total
                if reached <= self.step:
                    return
                self.step = reached
                if self.on_step(reached, self.total):
                    self.canceled = True

        def should_stop() -> bool:
            return self.canceled or (stop is not None and bool(stop()))

        return dataclasses.replace(request, on_progress=on_progress, should_stop=should_stop)
