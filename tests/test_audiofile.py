import io
import subprocess

import numpy as np
import pytest
import soundfile as sf

from backend.api.errorhandlers import status_of
from backend.core.audiofile import AudioInfo, decode_audio_bytes, decode_audio_file, probe_audio_bytes
from backend.core.errors import AudioDecodeError
from tests.media_server import make_click_track, mp3_bytes, wav_bytes

SR = 44100


def _encoded(audio: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio.T, sr, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _ffmpeg_encode(audio: np.ndarray, sr: int, container: str, codec: str) -> bytes:
    pcm = np.ascontiguousarray(audio.T, dtype="<f4").tobytes()
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
               "-f", "f32le", "-ar", str(sr), "-ac", str(audio.shape[0]), "-i", "pipe:0",
               "-codec:a", codec, "-f", container, "pipe:1"]
    return subprocess.run(command, input=pcm, capture_output=True, check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def stereo():
    return make_click_track(120, 3.0, sr=SR, channels=2)


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", None), ("OGG", "VORBIS")])
def test_soundfile_formats_decode_to_channels_first_float32(stereo, fmt, subtype):
    audio, sr = decode_audio_bytes(_encoded(stereo, SR, fmt, subtype))
    assert sr == SR
    assert audio.dtype == np.float32
    assert audio.shape[0] == 2
    assert abs(audio.shape[1] - stereo.shape[1]) <= 2048  # vorbis may pad
    if fmt != "OGG":
        np.testing.assert_allclose(audio, stereo, atol=1e-3)


def test_mp3_decodes(stereo):
    audio, sr = decode_audio_bytes(mp3_bytes(stereo, SR))
    assert sr == SR and audio.shape[0] == 2
    assert abs(audio.shape[1] / SR - 3.0) < 0.1


def test_mono_at_another_rate():
    mono = make_click_track(90, 2.0, sr=22050, channels=1)
    audio, sr = decode_audio_bytes(wav_bytes(mono, 22050))
    assert (sr, audio.shape) == (22050, (1, 44100))


def test_formats_soundfile_cannot_read_go_through_ffmpeg(stereo):
    aac_in_adts = _ffmpeg_encode(stereo, SR, "adts", "aac")
    with pytest.raises(sf.LibsndfileError):
        sf.read(io.BytesIO(aac_in_adts))
    audio, sr = decode_audio_bytes(aac_in_adts)
    assert sr == SR and audio.shape[0] == 2
    assert abs(audio.shape[1] / SR - 3.0) < 0.1
    assert audio.dtype == np.float32


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"not audio at all" * 50, "could not be decoded"),
    (b"RIFF\x00\x00\x00\x00WAVEjunk", "could not be decoded"),
    (bytes(range(256)) * 40, "could not be decoded"),
])
def test_garbage_is_refused_with_a_reason(data, words):
    with pytest.raises(AudioDecodeError) as raised:
        decode_audio_bytes(data)
    assert words in raised.value.message
    assert status_of(raised.value)[0] == 400


def test_wav_without_samples_is_refused():
    empty = _encoded(np.zeros((1, 0), dtype=np.float32), SR, "WAV", "PCM_16")
    with pytest.raises(AudioDecodeError):
        decode_audio_bytes(empty)


def test_probe_reads_the_header(stereo):
    info = probe_audio_bytes(_encoded(stereo, SR, "FLAC"))
    assert info == AudioInfo(SR, 2, stereo.shape[1] / SR)


def test_probe_mp3_and_aac(stereo):
    for data in (mp3_bytes(stereo, SR), _ffmpeg_encode(stereo, SR, "adts", "aac")):
        info = probe_audio_bytes(data)
        assert (info.sample_rate, info.channels) == (SR, 2)
        assert abs(info.duration_seconds - 3.0) < 0.1


def test_probe_garbage_raises():
    with pytest.raises(AudioDecodeError):
        probe_audio_bytes(b"\x00" * 1000)


def test_decode_file(tmp_path, stereo):
    wav = tmp_path / "-odd name:with colon.wav"
    wav.write_bytes(wav_bytes(stereo, SR))
    audio, sr = decode_audio_file(wav)
    assert sr == SR and audio.shape == stereo.shape

    aac = tmp_path / "-clip.aac"
    aac.write_bytes(_ffmpeg_encode(stereo, SR, "adts", "aac"))
    audio, sr = decode_audio_file(aac)
    assert sr == SR and audio.shape[0] == 2


def test_decode_file_errors(tmp_path):
    with pytest.raises(AudioDecodeError):
        decode_audio_file(tmp_path / "nope.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError):
        decode_audio_file(empty)
