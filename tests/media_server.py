"""Test helpers: synthetic music-like audio and a real loopback HTTP media server.

Not a test module. yt-dlp and ffmpeg talk to ``MediaServer`` exactly as they
would to a CDN: GET and HEAD, with HTTP Range requests answered by 206.
"""

from __future__ import annotations

import io
import re
import subprocess
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import soundfile as sf

HTML_PAGE = (b"<!doctype html><html><head><title>Just a page</title></head>"
             b"<body><p>No media here, only words.</p></body></html>")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def make_click_track(bpm: float, seconds: float, sr: int = 44100, channels: int = 1) -> np.ndarray:
    """A click on every beat (the downbeat of each 4/4 bar louder and higher)
    over a soft sustained chord, so it behaves like music rather than a pulse
    train. Returns float32 (channels, samples), peak below 1.0."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    track = 0.05 * (np.sin(2 * np.pi * 220.0 * t) + np.sin(2 * np.pi * 277.2 * t)
                    + np.sin(2 * np.pi * 329.6 * t)) / 3.0
    click_len = int(0.03 * sr)
    envelope = np.exp(-np.arange(click_len) / (0.004 * sr))
    beat = 60.0 / bpm
    for index in range(int(seconds / beat) + 1):
        start = int(round(index * beat * sr))
        if start >= n:
            break
        downbeat = index % 4 == 0
        freq, gain = (1760.0, 0.9) if downbeat else (1320.0, 0.5)
        burst = gain * envelope * np.sin(2 * np.pi * freq * np.arange(click_len) / sr)
        end = min(n, start + click_len)
        track[start:end] += burst[: end - start]
    return np.repeat(track[np.newaxis, :].astype(np.float32), channels, axis=0)


def make_noise_track(seconds: float, sr: int = 44100, channels: int = 1, seed: int = 7) -> np.ndarray:
    """Seeded noise: every stretch is unique, so cross-correlating a cut-out
    section against the whole reveals exactly where the section started."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-0.5, 0.5, size=int(round(seconds * sr))).astype(np.float32)
    return np.repeat(noise[np.newaxis, :], channels, axis=0)


def wav_bytes(audio: np.ndarray, sr: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(audio).T, sr, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def mp3_bytes(audio: np.ndarray, sr: int, bitrate: str = "192k") -> bytes:
    audio = np.ascontiguousarray(np.asarray(audio, dtype="<f4").T)
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
               "-f", "f32le", "-ar", str(sr), "-ac", str(audio.shape[1]), "-i", "pipe:0",
               "-codec:a", "libmp3lame", "-b:a", bitrate, "-f", "mp3", "pipe:1"]
    result = subprocess.run(command, input=audio.tobytes(), capture_output=True, timeout=60, check=True)
    return result.stdout


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_HEAD(self):
        self._answer(send_body=False)

    def do_GET(self):
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        self.server.requests.append((self.command, path, self.headers.get("Range")))
        if self.headers.get("Cookie"):
            self.server.cookies.append(self.headers["Cookie"])
        location = self.server.redirects.get(path)
        if location is not None:
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        entry = self.server.payloads.get(path)
        if entry is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain", send_body)
            return
        body, content_type = entry
        wanted = self.headers.get("Range")
        if not wanted:
            self._send(HTTPStatus.OK, body, content_type, send_body)
            return
        span = _parse_range(wanted, len(body))
        if span is None:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        first, last = span
        self._send(HTTPStatus.PARTIAL_CONTENT, body[first:last + 1], content_type, send_body,
                   content_range=f"bytes {first}-{last}/{len(body)}")

    def _send(self, status, body: bytes, content_type: str, send_body: bool,
              content_range: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()
        if send_body:
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # clients (ffmpeg) hang up once they have read enough


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    match = _RANGE.match(header.strip())
    if not match or size == 0:
        return None
    first_text, last_text = match.groups()
    if not first_text:  # suffix range: the last N bytes
        if not last_text or int(last_text) == 0:
            return None
        return max(0, size - int(last_text)), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first >= size or last < first:
        return None
    return first, min(last, size - 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    payloads: dict[str, tuple[bytes, str]]
    redirects: dict[str, str]
    requests: list[tuple[str, str, str | None]]

    def handle_error(self, request, client_address):
        # ffmpeg and yt-dlp drop connections as soon as they have what they
        # need; that is normal client behaviour, not a server failure.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class MediaServer:
    """A loopback HTTP server on a random free port.

    >>> with MediaServer() as media:
    ...     media.add("/song.wav", wav_bytes(audio, 44100), "audio/wav")
    ...     url = media.url("/song.wav")
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._server = _Server((host, 0), _Handler)
        self._server.payloads = {"/page.html": (HTML_PAGE, "text/html; charset=utf-8")}
        self._server.redirects = {}
        self._server.requests = []
        self._server.cookies = []
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        """(method, path, Range header) of every request served, in order."""
        return self._server.requests

    @property
    def cookies(self) -> list[str]:
        """The Cookie header of every request that sent one, in order."""
        return self._server.cookies

    def add(self, path: str, body: bytes, content_type: str) -> str:
        if not path.startswith("/"):
            path = "/" + path
        self._server.payloads[path] = (bytes(body), content_type)
        return self.url(path)

    def add_redirect(self, path: str, location: str) -> str:
        """Answer ``path`` with 302 Found to ``location``; returns the URL of ``path``."""
        if not path.startswith("/"):
            path = "/" + path
        self._server.redirects[path] = location
        return self.url(path)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{path.lstrip('/')}"

    def start(self) -> "MediaServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name="media-server",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "MediaServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
