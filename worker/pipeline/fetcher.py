"""Download the prompt section of a YouTube video or any http(s) media URL.

yt-dlp does the work through its Python API: it extracts the media info,
downloads only ``[start, start + seconds)`` (its ffmpeg downloader seeks
with HTTP Range requests, so a long video costs a few seconds of transfer)
and converts the result to WAV, which we decode and delete.

Plain http media files (WAV, MP3, ...) go through yt-dlp's generic
extractor. Measured with yt-dlp 2026.10.26 and ffmpeg 5.1 against a loopback
server: the section download of such files is exact for WAV and within one
MP3 encoder delay (~25 ms early) for MP3, provided ``force_keyframes_at_cuts``
is on (without it ffmpeg stream-copies and the cut overshoots by ~40 ms). So
there is no need for a download-then-cut fallback. What the generic
extractor does not report is the duration; ``ffprobe`` reads it from the
file's header (one small Range request) so "past the end" can still be told
apart from other failures.

Address checks (SSRF): the host of the URL given, and the host of every
media URL the extractor chose to download (which may differ, e.g. YouTube's
CDN), are checked with ``check_url_allowed`` before any media byte is
fetched, for a clear early error. The enforcement is ``worker.pipeline.egress_proxy``:
unless ``allow_private`` is set, each fetch starts an ``EgressProxy`` on
loopback and every HTTP(S) connection goes through it: yt-dlp's own requests
(its ``proxy`` option; with it yt-dlp ignores the environment's proxy
settings), the ffmpeg that yt-dlp runs for section downloads (yt-dlp puts
the proxy into ffmpeg's ``http_proxy``; ffmpeg tunnels https with CONNECT)
and the ffprobe duration probe (``-http_proxy``). The proxy resolves each
host itself, refuses non-public addresses and connects to the address it
checked, so redirect hops and DNS rebinding are covered too. ffmpeg honours
a ``no_proxy`` environment variable even with a proxy set, so a guarded
fetch refuses to run while one is set. Not covered: protocols other than
http(s) inside ffmpeg (the ffprobe call whitelists http/https; yt-dlp's
ffmpeg call does not, but the formats are checked to be http(s) first).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from backend.core.audiofile import decode_audio_file
from backend.core.errors import AudioDecodeError, FetchError, UrlRefused
from backend.core.urlguard import check_url_allowed, normalise_media_url
from worker.pipeline.egress_proxy import EgressPolicy, EgressProxy, EgressRefused
from worker.pipeline.ytdlp_refusals import explain_refusal
from worker.pipeline.ytdlp_runtime import ytdlp_options

log = logging.getLogger(__name__)

FFPROBE = "ffprobe"
PROBE_TIMEOUT_S = 30
MIN_SECONDS = 1.0  # the shortest prompt the API accepts


@dataclass(frozen=True)
class FetchedAudio:
    audio: np.ndarray          # float32, (channels, samples)
    sample_rate: int
    title: str
    media_duration: float | None  # seconds, None when the source does not say

    @property
    def seconds(self) -> float:
        return self.audio.shape[1] / float(self.sample_rate)


class _YtDlpLogger:
    """Route yt-dlp's console output to logging; errors reach us as exceptions."""

    def debug(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

    info = debug

    def warning(self, message: str) -> None:
        log.info("yt-dlp: %s", message)

    def error(self, message: str) -> None:
        log.info("yt-dlp: %s", message)


def fetch_section(url: str, start: float, seconds: float, *, workdir: Path,
                  socket_timeout: float, allow_private: bool,
                  min_seconds: float = MIN_SECONDS,
                  egress_policy: EgressPolicy | None = None,
                  cookies_file: str | Path | None = None,
                  upstream_proxy: str | None = None) -> FetchedAudio:
    """Fetch ``seconds`` of audio starting at ``start``; raise ``FetchError`` on failure.

    The result is shorter than ``seconds`` when the media ends first; shorter
    than ``min_seconds`` (nothing usable as a prompt) is a ``FetchError``.
    Unless ``allow_private``, all traffic goes through an ``EgressProxy``
    with ``egress_policy`` (default: the system resolver and urlguard's
    address rules; tests inject their own). ``cookies_file`` (a cookies.txt)
    is handed to yt-dlp as a private copy, so the host's file is never
    rewritten; ``upstream_proxy`` is where the egress guard forwards checked
    connections (or, with ``allow_private``, yt-dlp's own proxy).
    """
    if start < 0 or seconds <= 0:
        raise FetchError("the section to fetch must start at 0 s or later and last more than 0 s")
    try:
        url = normalise_media_url(url)
    except UrlRefused as exc:
        raise FetchError(exc.message) from None
    _check_url(url, allow_private, egress_policy)
    access = _Access(cookies_file, upstream_proxy)
    if allow_private:
        return _fetch(url, start, seconds, workdir, socket_timeout, allow_private,
                      min_seconds, egress_policy, proxy=None, access=access)
    if os.environ.get("no_proxy", "").strip():
        # ffmpeg would connect directly to hosts matching no_proxy.
        raise FetchError("the server is misconfigured: no_proxy is set, so downloads "
                         "could bypass the address checks")
    with EgressProxy(egress_policy, timeout=socket_timeout, upstream=upstream_proxy) as proxy:
        return _fetch(url, start, seconds, workdir, socket_timeout, allow_private,
                      min_seconds, egress_policy, proxy=proxy, access=access)


@dataclass(frozen=True)
class _Access:
    """How the host gets past YouTube's refusals: its cookies and an upstream proxy."""

    cookies_file: str | Path | None = None
    upstream_proxy: str | None = None


def _fetch(url: str, start: float, seconds: float, workdir: Path, socket_timeout: float,
           allow_private: bool, min_seconds: float, egress_policy: EgressPolicy | None,
           proxy: EgressProxy | None, access: _Access) -> FetchedAudio:

    import yt_dlp  # heavy import, and only the worker needs it

    Path(workdir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="fetch-", dir=workdir))
    try:
        options = _options(scratch, start, seconds, socket_timeout)
        if proxy is not None:
            options["proxy"] = proxy.url
        elif access.upstream_proxy:
            options["proxy"] = access.upstream_proxy  # unguarded (allow_private): straight to the upstream
        if access.cookies_file:
            options["cookiefile"] = _private_cookies(Path(access.cookies_file), scratch)
        with yt_dlp.YoutubeDL(options) as ydl:
            try:
                info = ydl.extract_info(url, download=False)
            except yt_dlp.utils.YoutubeDLError as exc:
                raise FetchError(_describe(exc, proxy)) from None
            if info.get("_type") in ("playlist", "multi_video"):
                raise FetchError("this URL points to a playlist, not to a single track")
            if info.get("is_live"):
                raise FetchError("live streams cannot be continued; wait until the recording is available")
            media_urls = _media_urls(info)
            for media_url in media_urls:
                _check_media_url(media_url, allow_private, egress_policy)

            duration = _known_duration(info, media_urls, socket_timeout,
                                       proxy.url if proxy is not None else None)
            if proxy is not None and proxy.refusals:
                raise FetchError(proxy.refusals[0])
            if duration is not None and start >= duration:
                raise FetchError(_past_end(start, duration))
            try:
                ydl.process_ie_result(info, download=True)
            except yt_dlp.utils.YoutubeDLError as exc:
                raise FetchError(_describe(exc, proxy)) from None

        audio, sample_rate = _read_result(scratch, start, duration)
        fetched = FetchedAudio(audio, sample_rate, str(info.get("title") or ""), duration)
        if fetched.seconds < min_seconds:
            raise FetchError(
                f"only {fetched.seconds:.2f} s of audio is left after {start:g} s; "
                f"at least {min_seconds:g} s is needed"
            )
        return fetched
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _private_cookies(source: Path, scratch: Path) -> str:
    """A copy of the host's cookies.txt for this fetch.

    yt-dlp writes its cookie jar back to ``cookiefile`` when it closes; a
    copy keeps the host's file unchanged (it may be read-only) and keeps
    concurrent fetches from overwriting each other's updates.
    """
    if not source.is_file():
        raise FetchError("the server's YouTube cookies file (SEGUE_YTDLP_COOKIES) is missing; "
                         "the host should fix that setting")
    copy = scratch / "cookies.txt"
    shutil.copyfile(source, copy)
    return str(copy)


def _options(scratch: Path, start: float, seconds: float, socket_timeout: float) -> dict:
    from yt_dlp.utils import download_range_func

    return {
        **ytdlp_options(),  # deno and the EJS solver scripts, nothing remote
        "format": "bestaudio/best",
        "outtmpl": {"default": str(scratch / "section.%(ext)s")},
        "paths": {"home": str(scratch), "temp": str(scratch)},
        "download_ranges": download_range_func(None, [(start, start + seconds)]),
        # Re-encode at the cut instead of stream-copying: copy can only cut on
        # packet/keyframe boundaries and overshoots the requested range.
        "force_keyframes_at_cuts": True,
        "postprocessors": [{"key": "FFmpegExtractAudio", "preferredcodec": "wav"}],
        "socket_timeout": socket_timeout,
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _YtDlpLogger(),
        "cachedir": False,
        "overwrites": True,
        "writethumbnail": False,
        "retries": 2,
        "fragment_retries": 2,
    }


def _media_urls(info: dict) -> list[str]:
    formats = info.get("requested_formats") or [info]
    return [f["url"] for f in formats if isinstance(f.get("url"), str)]


def _check_url(url: str, allow_private: bool, policy: EgressPolicy | None) -> None:
    """The early check; with an injected policy (tests) it replaces urlguard's."""
    try:
        if policy is None or allow_private:
            check_url_allowed(url, allow_private)
        else:
            policy.check(urlsplit(url).hostname or "")
    except UrlRefused as exc:
        raise FetchError(exc.message) from None
    except EgressRefused as exc:
        raise FetchError(exc.message) from None


def _check_media_url(media_url: str, allow_private: bool, policy: EgressPolicy | None = None) -> None:
    if not media_url.lower().startswith(("http://", "https://")):
        # rtmp, file and friends: nothing a public service should follow.
        raise FetchError("the media behind this URL uses a protocol we do not fetch")
    try:
        _check_url(media_url, allow_private, policy)
    except FetchError as exc:
        raise FetchError(f"the media behind this URL is hosted somewhere we will not fetch from ({exc.message})") from None


def _describe(exc: Exception, proxy: EgressProxy | None) -> str:
    # A refusal by the proxy reaches yt-dlp as an HTTP 403 (or a failed
    # CONNECT, or "ffmpeg exited with code ..."); the proxy knows why.
    if proxy is not None and proxy.refusals:
        return proxy.refusals[0]
    return describe_ytdlp_error(exc)


def _known_duration(info: dict, media_urls: list[str], socket_timeout: float,
                    proxy_url: str | None = None) -> float | None:
    duration = info.get("duration")
    if isinstance(duration, (int, float)) and duration > 0:
        return float(duration)
    # The generic extractor (a plain media file) does not report a duration;
    # the file header does.
    if len(media_urls) == 1 and info.get("extractor_key") == "Generic":
        return probe_remote_duration(media_urls[0], socket_timeout, proxy_url)
    return None


def probe_remote_duration(media_url: str, socket_timeout: float,
                          proxy_url: str | None = None) -> float | None:
    """Duration from the media header via ffprobe, or None when it cannot tell.

    With ``proxy_url`` every connection (https through CONNECT) goes through
    that proxy.
    """
    command = [
        FFPROBE, "-v", "error",
        "-rw_timeout", str(int(socket_timeout * 1_000_000)),
        # Only plain http(s): a playlist format must not lead ffprobe elsewhere.
        "-protocol_whitelist", "http,https,tcp,tls",
        "-show_entries", "format=duration", "-of", "default=noprint_wrappers=1:nokey=1",
    ]
    env = None
    if proxy_url is not None:
        # https through a proxy is ffmpeg's "httpproxy" protocol (CONNECT).
        command[command.index("http,https,tcp,tls")] = "http,https,tcp,tls,httpproxy"
        command += ["-http_proxy", proxy_url]
        # ffmpeg connects directly to hosts named in no_proxy, proxy or not.
        env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    command.append(media_url)
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env,
                                timeout=PROBE_TIMEOUT_S, check=False)
        value = float(result.stdout.strip())
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _read_result(scratch: Path, start: float, duration: float | None) -> tuple[np.ndarray, int]:
    produced = sorted(scratch.glob("section.*"))
    wav = next((p for p in produced if p.suffix == ".wav"), produced[0] if produced else None)
    if wav is None:
        raise FetchError("the download produced no audio")
    try:
        return decode_audio_file(wav)
    except AudioDecodeError:
        # An empty section is what ffmpeg writes when asked to seek past the end.
        if duration is None or start >= duration - 0.05:
            raise FetchError(_past_end(start, duration)) from None
        raise FetchError("the downloaded media contains no decodable audio") from None


def _past_end(start: float, duration: float | None) -> str:
    if duration is None:
        return f"currentTime {start:g} s is past the end of the media"
    return f"currentTime {start:g} s is past the end of the media ({duration:.1f} s)"


_PREFIX = re.compile(r"^(ERROR:\s*)?(\[[^\]]+\]\s*)?([\w-]+:\s+)?")
_CAUSE = re.compile(r"\s*\(caused by .*\)\s*$", re.S)
_BUG_REPORT = re.compile(r"[;.]?\s*please report this issue.*$", re.S | re.I)


def describe_ytdlp_error(exc: Exception) -> str:
    """A short sentence for the task's error field from any yt-dlp exception."""
    from yt_dlp.networking.exceptions import HTTPError, NoSupportingHandlers, TransportError
    from yt_dlp.utils import UnsupportedError

    refusal = explain_refusal(exc)
    if refusal is not None:
        return refusal

    cause = exc
    # DownloadError wraps the original exception in exc_info (bounded: never trust a chain).
    for _ in range(5):
        inner = (getattr(cause, "exc_info", None) or (None, None))[1]
        if not isinstance(inner, Exception) or inner is cause:
            break
        cause = inner
    original = getattr(cause, "cause", None) or getattr(cause, "orig_msg", None)

    for candidate in (cause, original):
        if isinstance(candidate, HTTPError):
            return f"the media URL returned HTTP {candidate.status}"
    if isinstance(cause, UnsupportedError):
        return "no audio found at this URL"
    if isinstance(cause, NoSupportingHandlers) or isinstance(original, NoSupportingHandlers):
        return "this kind of URL cannot be downloaded"
    for candidate in (cause, original):
        if isinstance(candidate, TransportError):
            text = str(candidate).lower()
            if "timed out" in text or "timeout" in text:
                return "the media host did not answer in time"
            if "resolve" in text or "name or service" in text:
                return "could not resolve the media host"
            return "could not connect to the media host"

    text = str(exc)
    if "ffmpeg exited with code" in text or "ffprobe" in text.lower():
        return "the media at this URL could not be decoded as audio"
    if "Requested format is not available" in text:
        return "no audio found at this URL"
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    # yt-dlp appends its bug-report plea after the cause: strip it first, then the cause.
    text = _CAUSE.sub("", _BUG_REPORT.sub("", _PREFIX.sub("", first_line)))
    return (text[:200].rstrip(". ") or "the media could not be downloaded")
