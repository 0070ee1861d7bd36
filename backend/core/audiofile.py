"""Read audio from bytes or files into float32 arrays shaped (channels, samples).

The API uses it to validate clips sent to ``POST /continue`` (cheaply, with
``probe_audio_bytes``) and the worker to decode them. libsndfile (through
soundfile) reads WAV, FLAC, OGG and MP3 directly; anything else (AAC in MP4,
Opus in WebM, exotic WAV codecs) goes through the system ffmpeg. No torch.
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from backend.core.errors import AudioDecodeError, Busy

FFMPEG = "ffmpeg"
FFMPEG_TIMEOUT_S = 60
# ffmpeg keeps the source's rate and channel count when none are requested;
# asking for a float WAV (rather than raw PCM) carries them back in the header
# instead of having to parse ffmpeg's log.
_FFMPEG_OUTPUT_FORMAT = ("-f", "wav", "-acodec", "pcm_f32le")


#: Retry-After (s) of the 503 when every ffmpeg slot stayed taken: decodes take seconds, not minutes.
FFMPEG_RETRY_AFTER_SECONDS = 5


class FfmpegGate:
    """At most ``limit`` ffmpeg processes at once in this process; a caller waits ``wait_seconds`` for a slot.

    Without it every request whose audio libsndfile cannot read started its
    own ffmpeg, so a burst of 100 MB bodies ran as many decoders as requests and
    starved the host. Past the wait the request is refused with a 503
    ``ffmpeg_busy`` and ``Retry-After``: a bounded queue, not an unbounded one.
    Under gunicorn's gevent worker the semaphore (patched) and the subprocess
    wait are cooperative, so a waiting request holds no thread.
    """

    def __init__(self, limit: int = 0, wait_seconds: float = 10.0):
        self.limit = limit if limit > 0 else (os.cpu_count() or 1)
        self.wait_seconds = max(0.0, wait_seconds)
        self._slots = threading.BoundedSemaphore(self.limit)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.wait_seconds):
            raise Busy(f"every ffmpeg slot ({self.limit}) stayed busy for {self.wait_seconds:g} s; retry shortly",
                       code="ffmpeg_busy", retry_after=FFMPEG_RETRY_AFTER_SECONDS)
        try:
            yield
        finally:
            self._slots.release()


_gate = FfmpegGate()


def configure_ffmpeg(limit: int, wait_seconds: float) -> FfmpegGate:
    """Set this process's ffmpeg cap (``SEGUE_FFMPEG_MAX_CONCURRENT``, ``SEGUE_FFMPEG_WAIT_SECONDS``)."""
    global _gate
    _gate = FfmpegGate(limit, wait_seconds)
    return _gate


def ffmpeg_gate() -> FfmpegGate:
    return _gate


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    duration_seconds: float


def _empty_check(data: bytes) -> None:
    if not data:
        raise AudioDecodeError("the audio is empty")


def _to_channels_first(frames: np.ndarray) -> np.ndarray:
    # soundfile returns (samples, channels); the rest of Segue uses (channels, samples).
    return np.ascontiguousarray(frames.T, dtype=np.float32)


def _decode_with_soundfile(data: bytes) -> tuple[np.ndarray, int]:
    frames, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return _to_channels_first(frames), int(sample_rate)


def _run_ffmpeg_to_wav(args_in: list[str], stdin: bytes | None) -> bytes:
    command = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", *args_in,
               "-vn", "-map", "0:a:0", *_FFMPEG_OUTPUT_FORMAT, "pipe:1"]
    try:
        with _gate.slot():
            result = subprocess.run(command, input=stdin, capture_output=True,
                                    timeout=FFMPEG_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise AudioDecodeError("cannot decode this audio format: ffmpeg is not installed") from None
    except subprocess.TimeoutExpired:
        raise AudioDecodeError("decoding the audio took too long") from None
    if result.returncode != 0 or not result.stdout:
        reason = _last_line(result.stderr) or "no audio stream found"
        raise AudioDecodeError(f"the audio could not be decoded ({reason})")
    return result.stdout


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _decode_wav_from_ffmpeg(wav: bytes) -> tuple[np.ndarray, int]:
    # ffmpeg writes a WAV header with an unknown length when piping; libsndfile
    # copes with that, reading up to the end of the data.
    try:
        return _decode_with_soundfile(wav)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioDecodeError(f"the audio could not be decoded ({exc})") from None


def _checked(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    if audio.shape[-1] == 0:
        raise AudioDecodeError("the audio contains no samples")
    if not np.all(np.isfinite(audio)):
        raise AudioDecodeError("the audio contains invalid (non-finite) samples")
    return audio, sample_rate


def decode_audio_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """Decode any common audio container; returns (float32 (channels, samples), rate)."""
    _empty_check(data)
    try:
        return _checked(*_decode_with_soundfile(data))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    wav = _run_ffmpeg_to_wav(["-i", "pipe:0"], stdin=bytes(data))
    return _checked(*_decode_wav_from_ffmpeg(wav))


def decode_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    """Like ``decode_audio_bytes`` for a file; ffmpeg reads it by path (seekable)."""
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(f"no such audio file: {path.name}")
    if path.stat().st_size == 0:
        raise AudioDecodeError("the audio is empty")
    try:
        frames, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
        return _checked(_to_channels_first(frames), int(sample_rate))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    # "file:" keeps a path that starts with "-" or contains ":" from being
    # read as an option or a protocol.
    wav = _run_ffmpeg_to_wav(["-i", f"file:{path.resolve()}"], stdin=None)
    return _checked(*_decode_wav_from_ffmpeg(wav))


def probe_audio_bytes(data: bytes) -> AudioInfo:
    """Sample rate, channels and duration; reads only the header when libsndfile can."""
    _empty_check(data)
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        info = None
    if info is not None and info.frames > 0 and info.samplerate > 0:
        return AudioInfo(int(info.samplerate), int(info.channels), info.frames / info.samplerate)
    # Formats libsndfile cannot read (or whose length is unknown from the
    # header) are decoded in full: slower, but the only reliable duration.
    audio, sample_rate = decode_audio_bytes(data)
    return AudioInfo(sample_rate, audio.shape[0], audio.shape[1] / sample_rate)
