"""Small audio utilities for arrays shaped (channels, samples), float32.

Encoding goes through soundfile (WAV) and the system ffmpeg (MP3), never a
shell: ffmpeg gets an argument list and the audio on stdin.
"""

from __future__ import annotations

import io
import subprocess

import numpy as np
import soundfile as sf
import soxr

from backend.core.errors import TaskFailure

FFMPEG = "ffmpeg"
FFMPEG_TIMEOUT_S = 120


def _as_2d(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        return audio[np.newaxis, :]
    if audio.ndim != 2:
        raise ValueError(f"audio must be (channels, samples), got shape {audio.shape}")
    return audio


def seconds(audio: np.ndarray, sr: int) -> float:
    return _as_2d(audio).shape[1] / float(sr)


def resample(audio: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    audio = _as_2d(audio)
    if sr_from == sr_to:
        return audio
    # soxr wants (samples, channels); "HQ" is its default quality and plenty
    # for a model that works at 32 kHz.
    out = soxr.resample(np.ascontiguousarray(audio.T), sr_from, sr_to, quality="HQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, audio.shape[0]).T)


def match_channels(audio: np.ndarray, n: int) -> np.ndarray:
    """Down-mix by averaging, up-mix by repeating (mono → stereo copies the channel)."""
    audio = _as_2d(audio)
    have = audio.shape[0]
    if have == n:
        return audio
    if n < 1:
        raise ValueError("channel count must be at least 1")
    if n == 1:
        return audio.mean(axis=0, keepdims=True, dtype=np.float32)
    if have == 1:
        return np.repeat(audio, n, axis=0)
    if have > n:
        # No universal down-mix matrix exists; keep the first n channels,
        # which for the common stereo-or-mono cases never happens.
        return np.ascontiguousarray(audio[:n])
    extra = np.repeat(audio.mean(axis=0, keepdims=True), n - have, axis=0)
    return np.concatenate([audio, extra], axis=0)


def prevent_clipping(audio: np.ndarray) -> np.ndarray:
    """Scale down when the peak exceeds full scale; quiet audio is left alone."""
    audio = _as_2d(audio)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 1.0 or not np.isfinite(peak):
        return audio
    return (audio / peak).astype(np.float32)


def encode_wav(audio: np.ndarray, sr: int) -> bytes:
    """16-bit PCM WAV; samples beyond full scale are clipped by the encoder."""
    audio = _as_2d(audio)
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0).T, sr, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def encode_mp3(audio: np.ndarray, sr: int, bitrate: str = "192k") -> bytes:
    audio = _as_2d(audio)
    channels = audio.shape[0]
    pcm = np.ascontiguousarray(np.clip(audio, -1.0, 1.0).T, dtype="<f4").tobytes()
    command = [
        FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error",
        "-f", "f32le", "-ar", str(int(sr)), "-ac", str(channels), "-i", "pipe:0",
        "-codec:a", "libmp3lame", "-b:a", str(bitrate), "-f", "mp3", "pipe:1",
    ]
    try:
        result = subprocess.run(command, input=pcm, capture_output=True,
                                timeout=FFMPEG_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise TaskFailure("cannot encode MP3: ffmpeg is not installed") from None
    except subprocess.TimeoutExpired:
        raise TaskFailure("encoding MP3 took too long") from None
    if result.returncode != 0 or not result.stdout:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise TaskFailure(f"MP3 encoding failed ({message[-1] if message else 'no output'})")
    return result.stdout
