"""Estimate the tempo of the prompt so the output can end on a bar line.

Method: onset strength of a mono down-mix → librosa's tempogram estimate →
refined with the beat tracker's beat times → folded into a musical range.

Why refine: librosa's tempo estimate is quantised to whole autocorrelation
lags (at 22.05 kHz and a 512-sample hop, 120 BPM falls between lags worth
117.5 and 123 BPM). A bar-length error of 2 % is a quarter of a beat after
four bars, so the slope of a straight line fitted through the tracked beat
times (which sit on onset peaks across the whole prompt) gives the period
far more precisely than any single lag.

Why fold into 70-180 BPM: estimators readily lock onto half or double the
felt tempo (octave errors). Bar maths only needs a beat that produces
musically sensible bar lengths, and nearly all popular music is felt between
70 and 180 BPM, so an estimate outside is doubled or halved until it lands
inside. (The range spans more than an octave; the fold is still
deterministic: halve while above, double while below.)

Silent or very short audio has no tempo to find. Rather than failing a job
whose prompt is, say, a quiet intro, ``detect_bpm`` returns ``DEFAULT_BPM``
(120, the most common tempo in popular music); the bar maths then still
yields a sensible length. Use ``estimate_bpm`` to learn whether the value
was measured or defaulted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_BPM = 70.0
MAX_BPM = 180.0
DEFAULT_BPM = 120.0
MIN_SECONDS = 2.0          # under ~4 beats, any tempo estimate is a guess
_ANALYSIS_RATE = 22050     # librosa's customary rate; tempo needs no more
_HOP = 256                 # ~11.6 ms frames: finer beat positions than the default 512
_SILENCE_RMS = 1e-4        # about -80 dBFS
_MIN_BEATS_TO_REFINE = 6
_REFINE_TOLERANCE = 0.08   # a refinement further than 8 % from the estimate is distrusted


@dataclass(frozen=True)
class TempoEstimate:
    bpm: float
    measured: bool  # False when DEFAULT_BPM was used (silence, too short, no beats)


def fold_bpm(bpm: float, low: float = MIN_BPM, high: float = MAX_BPM) -> float:
    while bpm > high:
        bpm /= 2.0
    while bpm < low:
        bpm *= 2.0
    return bpm


def _mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    return audio if audio.ndim == 1 else audio.mean(axis=0)


def estimate_bpm(audio: np.ndarray, sr: int) -> TempoEstimate:
    # librosa is heavy to import (numba); only the worker pays for it, on first use.
    import librosa

    mono = _mono(audio)
    if mono.size < MIN_SECONDS * sr or not np.all(np.isfinite(mono)):
        return TempoEstimate(DEFAULT_BPM, measured=False)
    if float(np.sqrt(np.mean(np.square(mono, dtype=np.float64)))) < _SILENCE_RMS:
        return TempoEstimate(DEFAULT_BPM, measured=False)

    if sr != _ANALYSIS_RATE:
        mono = librosa.resample(mono, orig_sr=sr, target_sr=_ANALYSIS_RATE, res_type="soxr_hq")
    envelope = librosa.onset.onset_strength(y=mono, sr=_ANALYSIS_RATE, hop_length=_HOP)
    if not np.any(envelope > 0):
        return TempoEstimate(DEFAULT_BPM, measured=False)

    coarse = float(librosa.feature.tempo(onset_envelope=envelope, sr=_ANALYSIS_RATE,
                                         hop_length=_HOP, aggregate=np.median)[0])
    if not coarse > 0:
        return TempoEstimate(DEFAULT_BPM, measured=False)
    bpm = _refine_with_beats(librosa, envelope, coarse) or coarse
    return TempoEstimate(fold_bpm(bpm), measured=True)


def _refine_with_beats(librosa, envelope: np.ndarray, coarse: float) -> float | None:
    _, beat_frames = librosa.beat.beat_track(onset_envelope=envelope, sr=_ANALYSIS_RATE,
                                             hop_length=_HOP, start_bpm=coarse, trim=True)
    if len(beat_frames) < _MIN_BEATS_TO_REFINE:
        return None
    times = librosa.frames_to_time(beat_frames, sr=_ANALYSIS_RATE, hop_length=_HOP)
    # Beats are numbered by their nearest grid slot rather than 0, 1, 2...
    # so a beat the tracker skipped does not bend the line; beats far off the
    # grid (the tracker sometimes adds one at the very end) are dropped.
    grid_period = 60.0 / coarse
    index = np.round((times - times[0]) / grid_period)
    period, offset = np.polyfit(index, times, 1)
    on_grid = np.abs(times - (offset + period * index)) < 0.1 * period
    if on_grid.sum() < _MIN_BEATS_TO_REFINE:
        return None
    period = float(np.polyfit(index[on_grid], times[on_grid], 1)[0])
    if period <= 0:
        return None
    refined = 60.0 / period
    return refined if abs(refined / coarse - 1.0) <= _REFINE_TOLERANCE else None


def warm_up() -> None:
    """Run one estimate on synthetic clicks so librosa's numba functions are
    compiled (or loaded from numba's cache) before the first real job: on a
    fresh install that costs tens of seconds once, a few seconds per process after."""
    sr = _ANALYSIS_RATE
    clicks = np.zeros(4 * sr, dtype=np.float32)
    clicks[:: sr // 2] = 1.0
    estimate_bpm(clicks, sr)


def detect_bpm(audio: np.ndarray, sr: int) -> float:
    """Tempo in BPM within [70, 180]; ``DEFAULT_BPM`` for silent or too-short audio."""
    return estimate_bpm(audio, sr).bpm
