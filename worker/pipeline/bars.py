"""Bar arithmetic: how long the output should be so that it ends on a bar line.

Pure maths, no dependencies. Lengths are in seconds and always include the
prompt, because MusicGen returns the prompt followed by its continuation.
"""

from __future__ import annotations

import math

FRAME_SECONDS = 1.0 / 50.0  # MusicGen's EnCodec runs at 50 frames per second.
_EPSILON = 1e-9  # absorbs float error when a bar count lands exactly on a bound


def bar_seconds(bpm: float, beats_per_bar: int = 4) -> float:
    if not (bpm > 0 and math.isfinite(bpm)):
        raise ValueError(f"bpm must be a positive number, got {bpm!r}")
    if beats_per_bar < 1:
        raise ValueError("beats_per_bar must be at least 1")
    return beats_per_bar * 60.0 / bpm


def target_length(bpm: float, min_s: float, max_s: float, prompt_s: float,
                  limit_s: float = 30.0) -> float:
    """Total output length (prompt included) in seconds.

    Preference order:
    1. the longest whole number of 4/4 bars whose length lies in [min_s, max_s];
    2. otherwise the whole-bar length nearest to that range (ties: the longer);
    and in both cases the length must leave at least one frame of new audio
    (``length >= prompt_s + FRAME_SECONDS``) and must not exceed ``limit_s``
    (the model's window). Bar counts that break those two hard limits are
    never chosen; among the rest, rule 1 then rule 2 applies.

    When no whole number of bars fits between the prompt and the limit (a very
    slow tempo, or a prompt almost as long as the window), the bar grid is
    abandoned: the result is the point of ``[prompt_s + 1 frame, limit_s]``
    closest to the requested range, so the job still produces audio instead
    of failing on a musical nicety. If even that interval is empty (prompt at
    or beyond the limit) a ``ValueError`` is raised; callers validate the
    prompt length before getting here.
    """
    if min_s > max_s:
        raise ValueError(f"min_s ({min_s}) must not exceed max_s ({max_s})")
    bar = bar_seconds(bpm)
    shortest = prompt_s + FRAME_SECONDS
    if shortest > limit_s + _EPSILON:
        raise ValueError(
            f"a {prompt_s:g} s prompt leaves no room for new audio within {limit_s:g} s"
        )

    first = max(1, math.ceil((shortest - _EPSILON) / bar))
    last = math.floor((limit_s + _EPSILON) / bar)
    if first > last:
        return _nearest_in(shortest, limit_s, min_s, max_s)

    in_range = [n for n in range(first, last + 1)
                if min_s - _EPSILON <= n * bar <= max_s + _EPSILON]
    if in_range:
        return _within(max(in_range) * bar, shortest, limit_s)

    def distance(n: int) -> tuple[float, float]:
        length = n * bar
        gap = min_s - length if length < min_s else length - max_s
        return (round(gap, 9), -length)  # nearest first; on a tie, the longer

    return _within(min(range(first, last + 1), key=distance) * bar, shortest, limit_s)


def _within(length: float, low: float, high: float) -> float:
    # Only ever moves a value by float rounding (the bar counts were chosen
    # inside the bounds), so that callers can rely on ``length <= limit_s``.
    return min(max(length, low), high)


def _nearest_in(low: float, high: float, min_s: float, max_s: float) -> float:
    """The point of [low, high] closest to [min_s, max_s] (the longest one when they overlap)."""
    if max_s < low:
        return float(low)
    if min_s > high:
        return float(high)
    return float(min(max_s, high))
