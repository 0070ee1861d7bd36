import numpy as np
import pytest

from tests.media_server import make_click_track
from worker.pipeline.tempo import DEFAULT_BPM, detect_bpm, estimate_bpm, fold_bpm


@pytest.mark.parametrize("bpm", [90, 120, 140])
@pytest.mark.parametrize("sr, channels", [(44100, 2), (32000, 1)])
def test_click_tracks_are_measured_within_two_bpm(bpm, sr, channels):
    track = make_click_track(bpm, 10.0, sr=sr, channels=channels)
    assert detect_bpm(track, sr) == pytest.approx(bpm, abs=2.0)


def test_tempo_between_lags_is_refined():
    # 95.5 BPM falls between two tempogram lags; the beat fit recovers it.
    assert detect_bpm(make_click_track(95.5, 10.0, sr=32000), 32000) == pytest.approx(95.5, abs=1.0)


def test_result_is_folded_into_the_musical_range():
    # Whatever octave the estimator locks onto, the answer lies in 70-180 BPM
    # and is the true tempo times a power of two.
    for bpm in (50, 200):
        got = detect_bpm(make_click_track(bpm, 10.0, sr=32000), 32000)
        assert 70 <= got <= 180
        ratio = np.log2(got / bpm)
        assert abs(ratio - round(ratio)) < 0.03


@pytest.mark.parametrize("bpm, folded", [(60, 120), (35, 70), (200, 100), (400, 100), (181, 90.5), (70, 70), (180, 180)])
def test_fold_bpm(bpm, folded):
    assert fold_bpm(bpm) == folded


def test_silence_and_short_audio_give_the_default():
    silence = np.zeros((2, 32000 * 5), dtype=np.float32)
    assert estimate_bpm(silence, 32000).measured is False
    assert detect_bpm(silence, 32000) == DEFAULT_BPM
    short = make_click_track(120, 1.0, sr=32000)
    assert estimate_bpm(short, 32000).measured is False
    assert detect_bpm(short, 32000) == DEFAULT_BPM


def test_measured_flag():
    assert estimate_bpm(make_click_track(120, 6.0, sr=32000), 32000).measured is True
