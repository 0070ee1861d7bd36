"""From a task document to finished audio: the two kinds of work Segue does.

``generate``: download a section of the media at the playback position,
detect its tempo, choose a bar-exact total length, continue the prompt.
``continue``: take the client's clip, use its tail as the prompt, generate a
30 s window and splice it back onto the clip at the clip's own rate.
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from backend.audiofile import decode_audio_bytes
from backend.errors import TaskFailure

from . import audio as audio_ops
from .bars import target_length
from .engine import GenerationRequest, MusicGenEngine
from .fetcher import fetch_section
from .progress_reporter import ProgressReporter
from .tempo import detect_bpm

# Tempo estimates need more than a short prompt: download at least this much.
TEMPO_WINDOW_SECONDS = 15.0
# MusicGen's context: prompt + continuation must fit in this many seconds.
MODEL_WINDOW_SECONDS = 30.0
MIN_PROMPT_SECONDS = 1.0

# Where each stage sits on the 0-100 progress bar.
FETCH_DONE, TEMPO_DONE, GENERATE_DONE = 10.0, 12.0, 96.0


@dataclass
class Outcome:
    audio: np.ndarray  # float32 (channels, samples)
    sample_rate: int
    seed: int
    bpm: float | None = None
    prompt_seconds: float | None = None
    target_seconds: float | None = None


def _sampling_request(request: dict, prompt: np.ndarray, sr: int, total: float, seed: int) -> GenerationRequest:
    return GenerationRequest(prompt_audio=prompt, prompt_sr=sr, total_seconds=total, text=request.get("prompt"),
                             seed=seed, top_k=request.get("top_k", 250), top_p=request.get("top_p", 0.0),
                             temperature=request.get("temperature", 1.0), cfg_coef=request.get("cfg_coef", 3.0))


def _seed(request: dict) -> int:
    seed = request.get("seed")
    return int(seed) if seed is not None else secrets.randbelow(2**31)


def run_generate(engine: MusicGenEngine, request: dict, reporter: ProgressReporter, *,
                 fetch_timeout: float, allow_private: bool, should_stop: Callable[[], bool] | None = None) -> Outcome:
    prompt_length = float(request["promptLength"])
    with tempfile.TemporaryDirectory(prefix="segue-fetch-") as workdir:
        fetched = fetch_section(request["url"], float(request["currentTime"]),
                                max(prompt_length, TEMPO_WINDOW_SECONDS), workdir=Path(workdir),
                                socket_timeout=fetch_timeout, allow_private=allow_private)
    reporter.report(FETCH_DONE)
    sr = fetched.sample_rate
    section = fetched.audio
    bpm = detect_bpm(section, sr)
    prompt = section[:, : int(round(prompt_length * sr))]
    prompt_seconds = prompt.shape[1] / sr
    if prompt_seconds < MIN_PROMPT_SECONDS:
        raise TaskFailure(f"only {prompt_seconds:.2f} s of audio found after currentTime; at least "
                          f"{MIN_PROMPT_SECONDS:g} s is needed")
    total = target_length(bpm, float(request["duration_min"]), float(request["duration_max"]), prompt_seconds,
                          limit_s=MODEL_WINDOW_SECONDS)
    reporter.report(TEMPO_DONE)
    seed = _seed(request)
    result = engine.generate([_sampling_request(request, prompt, sr, total, seed)],
                             on_step=_steps(reporter, TEMPO_DONE, GENERATE_DONE, should_stop))[0]
    return Outcome(result.audio, result.sample_rate, seed, bpm=round(float(bpm), 2),
                   prompt_seconds=prompt_seconds, target_seconds=total)


def run_continue(engine: MusicGenEngine, request: dict, clip_bytes: bytes, reporter: ProgressReporter, *,
                 should_stop: Callable[[], bool] | None = None) -> Outcome:
    clip, sr = decode_audio_bytes(clip_bytes)
    channels = clip.shape[0]
    clip_seconds = clip.shape[1] / sr
    # A clip shorter than prompt_duration is used whole as the prompt.
    prompt_seconds = min(float(request["prompt_duration"]), clip_seconds)
    split = clip.shape[1] - int(round(prompt_seconds * sr))
    head, prompt = clip[:, :split], clip[:, split:]
    reporter.report(FETCH_DONE)
    seed = _seed(request)
    result = engine.generate([_sampling_request(request, prompt, sr, MODEL_WINDOW_SECONDS, seed)],
                             on_step=_steps(reporter, FETCH_DONE, GENERATE_DONE, should_stop))[0]
    # MusicGen returns its own reconstruction of the prompt followed by the
    # continuation; that replaces the clip's tail, back at the clip's format.
    generated = audio_ops.match_channels(audio_ops.resample(result.audio, result.sample_rate, sr), channels)
    return Outcome(np.concatenate([head, generated], axis=1).astype(np.float32), sr, seed,
                   prompt_seconds=prompt_seconds)


def _steps(reporter: ProgressReporter, start: float, end: float, should_stop: Callable[[], bool] | None):
    to_progress = reporter.stage(start, end)

    def on_step(done: int, total: int) -> bool:
        to_progress(done, total)
        return bool(should_stop and should_stop())

    return on_step
