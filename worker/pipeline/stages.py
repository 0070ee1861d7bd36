"""From a task document to finished audio, in two phases around the model.

``prepare`` does everything before MusicGen for one task (download or decode
the input, detect the tempo, choose the length) and returns a ``Prepared``:
the ``GenerationRequest`` plus a ``finish`` step that turns the model's
output into the delivered audio. Splitting it this way lets a worker
prepare several tasks, run them through the model as one batch, and finish
each on its own.

``generate``: a section of the media at the playback position, its tempo, a
bar-exact total length, the prompt continued.
``continue``: the clip's tail is the prompt; a 30 s window is generated and
spliced back onto the clip at the clip's own rate and channel count.
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from backend.core.audiofile import decode_audio_bytes
from backend.core.errors import TaskFailure
from backend.core.tasks import MAX_TOTAL_SECONDS, WINDOW_SECONDS
from worker.engine import GenerationRequest, GenerationResult
from worker.pipeline import audio as audio_ops
from worker.pipeline.bars import target_length
from worker.pipeline.fetcher import fetch_section
from worker.pipeline.tempo import detect_bpm

# Tempo estimates need more than a short prompt: download at least this much.
TEMPO_WINDOW_SECONDS = 15.0
MIN_PROMPT_SECONDS = 1.0


@dataclass
class Outcome:
    audio: np.ndarray  # float32 (channels, samples)
    sample_rate: int
    seed: int
    bpm: float | None = None
    prompt_seconds: float | None = None
    target_seconds: float | None = None


@dataclass
class Prepared:
    request: GenerationRequest
    finish: Callable[[GenerationResult], Outcome]


def _seed(request: dict) -> int:
    seed = request.get("seed")
    return int(seed) if seed is not None else secrets.randbelow(2**31)


def _generation_request(request: dict, prompt: np.ndarray, sr: int, total: float, seed: int) -> GenerationRequest:
    return GenerationRequest(prompt_audio=prompt, prompt_sr=sr, total_seconds=total, text=request.get("prompt"),
                             seed=seed, top_k=request.get("top_k", 250), top_p=request.get("top_p", 0.0),
                             temperature=request.get("temperature", 1.0), cfg_coef=request.get("cfg_coef", 3.0),
                             melody_conditioning=bool(request.get("melody")))


def prepare_generate(request: dict, *, fetch_timeout: float, allow_private: bool,
                     cookies_file: str | None = None, upstream_proxy: str | None = None) -> Prepared:
    prompt_length = float(request["promptLength"])
    with tempfile.TemporaryDirectory(prefix="segue-fetch-") as workdir:
        fetched = fetch_section(request["url"], float(request["currentTime"]),
                                max(prompt_length, TEMPO_WINDOW_SECONDS), workdir=Path(workdir),
                                socket_timeout=fetch_timeout, allow_private=allow_private,
                                cookies_file=cookies_file, upstream_proxy=upstream_proxy)
    sr = fetched.sample_rate
    bpm = round(float(detect_bpm(fetched.audio, sr)), 2)
    prompt = fetched.audio[:, : int(round(prompt_length * sr))]
    prompt_seconds = prompt.shape[1] / sr
    if prompt_seconds < MIN_PROMPT_SECONDS:
        raise TaskFailure(f"only {prompt_seconds:.2f} s of audio found after currentTime; at least "
                          f"{MIN_PROMPT_SECONDS:g} s is needed")
    total = target_length(bpm, float(request["duration_min"]), float(request["duration_max"]), prompt_seconds,
                          limit_s=MAX_TOTAL_SECONDS)
    seed = _seed(request)

    def finish(result: GenerationResult) -> Outcome:
        return Outcome(result.audio, result.sample_rate, seed, bpm=bpm, prompt_seconds=prompt_seconds,
                       target_seconds=total)

    return Prepared(_generation_request(request, prompt, sr, total, seed), finish)


def prepare_continue(request: dict, clip_bytes: bytes) -> Prepared:
    clip, sr = decode_audio_bytes(clip_bytes)
    channels = clip.shape[0]
    clip_seconds = clip.shape[1] / sr
    # A clip shorter than prompt_duration is used whole as the prompt.
    prompt_seconds = min(float(request["prompt_duration"]), clip_seconds)
    split = clip.shape[1] - int(round(prompt_seconds * sr))
    head, prompt = clip[:, :split], clip[:, split:]
    seed = _seed(request)

    def finish(result: GenerationResult) -> Outcome:
        # MusicGen returns its reconstruction of the prompt followed by the
        # continuation; that replaces the clip's tail, in the clip's format.
        generated = audio_ops.match_channels(audio_ops.resample(result.audio, result.sample_rate, sr), channels)
        return Outcome(np.concatenate([head, generated], axis=1).astype(np.float32), sr, seed,
                       prompt_seconds=prompt_seconds)

    # A /continue generates one MusicGen window unless it asks for more.
    window = float(request.get("duration") or WINDOW_SECONDS)
    return Prepared(_generation_request(request, prompt, sr, window, seed), finish)
