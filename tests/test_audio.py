import io

import numpy as np
import pytest
import soundfile as sf

from backend.core.audiofile import decode_audio_bytes
from tests.media_server import make_click_track
from worker.pipeline.audio import encode_mp3, encode_wav, match_channels, prevent_clipping, resample, seconds


def _sine(freq, sr, secs, channels=1, amplitude=0.5):
    t = np.arange(int(sr * secs)) / sr
    return np.repeat((amplitude * np.sin(2 * np.pi * freq * t))[None].astype(np.float32), channels, axis=0)


def _dominant_frequency(mono, sr):
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return np.argmax(spectrum) * sr / len(mono)


@pytest.mark.parametrize("sr_from, sr_to", [(44100, 32000), (48000, 32000), (22050, 32000), (32000, 32000)])
def test_resample_keeps_shape_length_and_pitch(sr_from, sr_to):
    audio = _sine(440.0, sr_from, 2.0, channels=2)
    out = resample(audio, sr_from, sr_to)
    assert out.dtype == np.float32
    assert out.shape == (2, 2 * sr_to)
    assert _dominant_frequency(out[1], sr_to) == pytest.approx(440.0, abs=1.0)


def test_resample_accepts_mono_vector():
    assert resample(np.zeros(44100, dtype=np.float32), 44100, 32000).shape == (1, 32000)


def test_match_channels():
    stereo = np.stack([np.full(10, 0.2), np.full(10, 0.6)]).astype(np.float32)
    mono = match_channels(stereo, 1)
    assert mono.shape == (1, 10) and np.allclose(mono, 0.4)
    up = match_channels(mono, 2)
    assert up.shape == (2, 10) and np.allclose(up, 0.4)
    assert match_channels(stereo, 2) is stereo
    assert match_channels(stereo, 3).shape == (3, 10)
    with pytest.raises(ValueError):
        match_channels(stereo, 0)


def test_prevent_clipping_scales_down_only_when_needed():
    loud = np.array([[0.5, -2.0, 1.0]], dtype=np.float32)
    fixed = prevent_clipping(loud)
    assert np.max(np.abs(fixed)) == pytest.approx(1.0)
    assert fixed[0, 0] == pytest.approx(0.25)  # shape of the waveform kept

    quiet = np.array([[0.1, -0.2]], dtype=np.float32)
    assert np.array_equal(prevent_clipping(quiet), quiet)  # never boosted
    full_scale = np.array([[1.0, -1.0]], dtype=np.float32)
    assert np.array_equal(prevent_clipping(full_scale), full_scale)
    assert prevent_clipping(np.zeros((2, 0), dtype=np.float32)).shape == (2, 0)


def test_encode_wav_is_16_bit_pcm_and_round_trips():
    audio = make_click_track(120, 1.5, sr=32000, channels=2)
    data = encode_wav(audio, 32000)
    info = sf.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", 32000, 2)
    decoded, sr = decode_audio_bytes(data)
    assert decoded.shape == audio.shape
    np.testing.assert_allclose(decoded, audio, atol=1 / 16000)


def test_encode_wav_clips_instead_of_wrapping():
    decoded, _ = decode_audio_bytes(encode_wav(np.array([[1.5, -1.5, 0.0]], dtype=np.float32), 8000))
    assert decoded[0, 0] > 0.99 and decoded[0, 1] < -0.99


def test_encode_mp3_round_trips():
    audio = _sine(440.0, 32000, 2.0, channels=2)
    data = encode_mp3(audio, 32000, bitrate="128k")
    assert data[:3] == b"ID3" or data[0] == 0xFF
    decoded, sr = decode_audio_bytes(data)
    assert sr == 32000 and decoded.shape[0] == 2
    assert seconds(decoded, sr) == pytest.approx(2.0, abs=0.1)
    assert _dominant_frequency(decoded[0], sr) == pytest.approx(440.0, abs=2.0)


def test_seconds():
    assert seconds(np.zeros((2, 48000)), 32000) == 1.5
    assert seconds(np.zeros(16000), 32000) == 0.5
