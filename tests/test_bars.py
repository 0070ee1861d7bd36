import math

import pytest

from worker.pipeline.bars import FRAME_SECONDS, bar_seconds, target_length


@pytest.mark.parametrize("bpm, beats, expected", [
    (120, 4, 2.0),
    (60, 4, 4.0),
    (90, 4, 8 / 3),
    (128, 4, 1.875),
    (120, 3, 1.5),
    (240, 1, 0.25),
])
def test_bar_seconds(bpm, beats, expected):
    assert bar_seconds(bpm, beats) == pytest.approx(expected)


@pytest.mark.parametrize("bpm", [0, -120, float("nan"), float("inf")])
def test_bar_seconds_rejects_impossible_tempi(bpm):
    with pytest.raises(ValueError):
        bar_seconds(bpm)


# (bpm, min_s, max_s, prompt_s, limit_s, expected, why)
CASES = [
    (120, 16, 18, 6, 30, 18.0, "9 bars of 2 s: the longest in range"),
    (100, 16, 18, 6, 30, 16.8, "7 bars of 2.4 s"),
    (128, 16, 18, 6, 30, 16.875, "9 bars of 1.875 s; 10 would be 18.75"),
    (90, 16, 18, 6, 30, 16.0, "6 bars of 2.667 s land exactly on min"),
    (60, 16, 18, 6, 30, 16.0, "4 bars of 4 s on the lower bound"),
    (70, 16, 18, 6, 30, 120 / 7, "5 bars of 3.43 s"),
    (120, 18, 18, 6, 30, 18.0, "a single-point range hit exactly"),
    (120, 1, 30, 6, 30, 30.0, "the whole window when the range allows it"),
    (80, 16, 17, 6, 30, 18.0, "none fits: 15 and 18 are equally near, the longer wins"),
    (75, 16.5, 17, 6, 30, 16.0, "none fits: 16 is nearer than 19.2"),
    (110, 29.5, 30, 6, 30, 13 * 240 / 110, "none fits under the 30 s window: 13 bars"),
    (120, 4, 6, 6, 30, 8.0, "3 bars equal the prompt, leaving no new audio: 4 bars"),
    (120, 4, 5, 5.99, 30, 8.0, "3 bars leave 10 ms, less than one 20 ms frame: 4 bars"),
    (120, 1, 2, 29.0, 30, 30.0, "only 15 bars fit between prompt and window"),
    (120, 16, 18, 6, 10, 10.0, "a smaller model window caps the length"),
    (60, 16, 18, 27, 30, 28.0, "7 bars of 4 s are the only choice above the prompt"),
]


@pytest.mark.parametrize("bpm, min_s, max_s, prompt_s, limit_s, expected, why", CASES,
                         ids=[case[-1] for case in CASES])
def test_target_length_table(bpm, min_s, max_s, prompt_s, limit_s, expected, why):
    assert target_length(bpm, min_s, max_s, prompt_s, limit_s) == pytest.approx(expected, abs=1e-9)


# No whole number of bars fits between the prompt and the window: the bar grid
# is abandoned and the point of [prompt + 1 frame, limit] nearest the range wins.
@pytest.mark.parametrize("bpm, min_s, max_s, prompt_s, expected", [
    (60, 16, 18, 28.5, 28.5 + FRAME_SECONDS),  # range below: as short as allowed
    (60, 29, 30, 28.5, 30.0),                  # range overlaps: its longest point
    (20, 16, 18, 25, 25 + FRAME_SECONDS),      # 12 s bars: only 24 s or 36 s exist
    (20, 26, 27, 25, 27.0),
    (1, 16, 18, 6, 18.0),                      # a 4-minute bar never fits the window
])
def test_target_length_falls_back_off_the_bar_grid(bpm, min_s, max_s, prompt_s, expected):
    assert target_length(bpm, min_s, max_s, prompt_s) == pytest.approx(expected)


def test_prompt_filling_the_window_is_an_error():
    with pytest.raises(ValueError):
        target_length(120, 16, 18, 30)
    with pytest.raises(ValueError):
        target_length(120, 16, 18, 29.99)


def test_inverted_range_is_an_error():
    with pytest.raises(ValueError):
        target_length(120, 18, 16, 6)


def _reference(bpm, min_s, max_s, prompt_s, limit_s=30.0):
    """Brute force over bar counts, written independently of the module."""
    bar = 240.0 / bpm
    feasible = [n * bar for n in range(1, 200)
                if n * bar >= prompt_s + FRAME_SECONDS - 1e-9 and n * bar <= limit_s + 1e-9]
    if not feasible:
        return None
    inside = [x for x in feasible if min_s - 1e-9 <= x <= max_s + 1e-9]
    if inside:
        return max(inside)
    return sorted(feasible, key=lambda x: (round(max(min_s - x, x - max_s), 9), -x))[0]


def test_target_length_matches_brute_force_over_a_grid():
    checked = 0
    for bpm in [40, 55, 63.5, 70, 72, 85, 90, 97.3, 100, 110, 120, 128, 140, 150, 165, 174, 180, 200]:
        for min_s in [1, 4, 8, 12, 16, 20, 25, 29, 30]:
            for max_s in [min_s, min_s + 0.5, min_s + 2, 30]:
                if max_s > 30:
                    continue
                for prompt_s in [1, 3, 6, 10, 15, 20, 27.5, 29.9]:
                    got = target_length(bpm, min_s, max_s, prompt_s)
                    assert prompt_s + FRAME_SECONDS - 1e-9 <= got <= 30.0
                    expected = _reference(bpm, min_s, max_s, prompt_s)
                    if expected is None:  # off-grid fallback
                        continue
                    assert got == pytest.approx(expected, abs=1e-9), (bpm, min_s, max_s, prompt_s)
                    bars = got / bar_seconds(bpm)
                    assert math.isclose(bars, round(bars), abs_tol=1e-9)
                    checked += 1
    assert checked > 4000
