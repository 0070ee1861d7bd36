"""Real yt-dlp downloads from a real loopback HTTP server (no mocks)."""

import numpy as np
import pytest

from backend.core.errors import FetchError
from tests.media_server import MediaServer, make_noise_track, mp3_bytes, wav_bytes
from worker.pipeline.fetcher import describe_ytdlp_error, fetch_section

SR = 44100
LENGTH_S = 20.0


@pytest.fixture(scope="module")
def track():
    # Seeded noise: any stretch of it identifies where it came from.
    return make_noise_track(LENGTH_S, sr=SR, channels=2, seed=11)


@pytest.fixture(scope="module")
def media(track):
    with MediaServer() as server:
        server.add("/noise.wav", wav_bytes(track, SR), "audio/wav")
        server.add("/noise.mp3", mp3_bytes(track, SR), "audio/mpeg")
        server.add("/garbage.mp3", b"this is not an mp3 file " * 200, "audio/mpeg")
        yield server


def _fetch(url, start, seconds, tmp_path, allow_private=True, **kwargs):
    return fetch_section(url, start, seconds, workdir=tmp_path / "fetch",
                         socket_timeout=5, allow_private=allow_private, **kwargs)


def _offset_seconds(whole: np.ndarray, piece: np.ndarray) -> float:
    """Where ``piece`` starts inside ``whole``, by FFT cross-correlation."""
    size = whole.size + piece.size
    spectrum = np.fft.rfft(whole, size) * np.conj(np.fft.rfft(piece, size))
    lag = int(np.argmax(np.fft.irfft(spectrum, size)))
    if lag > whole.size:  # the piece starts a little before the whole (MP3 encoder delay)
        lag -= size
    return lag / SR


@pytest.mark.parametrize("name, tolerance", [("noise.wav", 0.002), ("noise.mp3", 0.05)])
@pytest.mark.parametrize("start, seconds", [(0.0, 6.0), (7.25, 4.0), (13.0, 6.5)])
def test_section_has_the_right_length_and_start(media, track, tmp_path, name, tolerance, start, seconds):
    fetched = _fetch(media.url(name), start, seconds, tmp_path)

    assert fetched.sample_rate == SR
    assert fetched.audio.dtype == np.float32 and fetched.audio.shape[0] == 2
    assert fetched.seconds == pytest.approx(seconds, abs=0.1)
    assert _offset_seconds(track[0], fetched.audio[0, :SR]) == pytest.approx(start, abs=tolerance)
    assert fetched.media_duration == pytest.approx(LENGTH_S, abs=0.1)
    assert fetched.title == "noise"


def test_section_running_past_the_end_is_cut_short(media, tmp_path):
    fetched = _fetch(media.url("noise.wav"), LENGTH_S - 3.0, 6.0, tmp_path)
    assert fetched.seconds == pytest.approx(3.0, abs=0.05)


def test_wav_section_is_fetched_with_a_range_request(media, tmp_path):
    # ffmpeg seeks inside the file instead of reading it from the start.
    before = len(media.requests)
    _fetch(media.url("noise.wav"), 15.0, 2.0, tmp_path)
    starts = [int(header[6:].split("-")[0]) for _, path, header in media.requests[before:]
              if path == "/noise.wav" and header]
    bytes_per_second = SR * 2 * 2  # 16-bit stereo
    assert max(starts) >= 44 + 15.0 * bytes_per_second - 4096


def test_temporary_files_are_removed(media, tmp_path):
    _fetch(media.url("noise.wav"), 1.0, 2.0, tmp_path)
    with pytest.raises(FetchError):
        _fetch(media.url("noise.wav"), 99.0, 2.0, tmp_path)
    assert list((tmp_path / "fetch").iterdir()) == []


@pytest.mark.parametrize("name", ["noise.wav", "noise.mp3"])
def test_start_past_the_end_is_refused(media, tmp_path, name):
    with pytest.raises(FetchError) as raised:
        _fetch(media.url(name), 25.0, 6.0, tmp_path)
    assert raised.value.message.startswith("currentTime 25 s is past the end of the media (20.0 s)")


def test_too_little_audio_left_is_refused(media, tmp_path):
    with pytest.raises(FetchError) as raised:
        _fetch(media.url("noise.wav"), LENGTH_S - 0.5, 6.0, tmp_path)
    assert "at least 1 s is needed" in raised.value.message


def test_http_404(media, tmp_path):
    with pytest.raises(FetchError) as raised:
        _fetch(media.url("missing"), 0.0, 4.0, tmp_path)
    assert raised.value.message == "the media URL returned HTTP 404"


def test_html_page_without_media(media, tmp_path):
    with pytest.raises(FetchError) as raised:
        _fetch(media.url("page.html"), 0.0, 4.0, tmp_path)
    assert raised.value.message == "no audio found at this URL"


def test_bytes_that_are_not_audio(media, tmp_path):
    with pytest.raises(FetchError) as raised:
        _fetch(media.url("garbage.mp3"), 0.0, 4.0, tmp_path)
    assert raised.value.message == "the media at this URL could not be decoded as audio"


def test_connection_refused(tmp_path):
    with MediaServer() as server:
        url = server.url("gone.wav")
    with pytest.raises(FetchError) as raised:
        _fetch(url, 0.0, 4.0, tmp_path)
    assert raised.value.message == "could not connect to the media host"


def test_loopback_refused_without_allow_private(media, tmp_path):
    before = len(media.requests)
    with pytest.raises(FetchError) as raised:
        _fetch(media.url("noise.wav"), 0.0, 4.0, tmp_path, allow_private=False)
    assert "non-public address" in raised.value.message
    assert len(media.requests) == before  # refused before any request was made


@pytest.mark.parametrize("url, words", [
    ("ftp://example.com/a.mp3", "http"),
    ("http://no-such-host.invalid/a.mp3", "could not resolve host"),
])
def test_bad_urls_fail_before_any_download(tmp_path, url, words):
    with pytest.raises(FetchError) as raised:
        _fetch(url, 0.0, 4.0, tmp_path)
    assert words in raised.value.message


def test_invalid_section_is_refused(media, tmp_path):
    with pytest.raises(FetchError):
        _fetch(media.url("noise.wav"), -1.0, 4.0, tmp_path)
    with pytest.raises(FetchError):
        _fetch(media.url("noise.wav"), 0.0, 0.0, tmp_path)


def test_error_descriptions_strip_ytdlp_noise():
    from yt_dlp.utils import DownloadError, ExtractorError

    wrapped = DownloadError("ERROR: [generic] abc: The media server is warming up. Please report this issue on "
                            "https://github.com/yt-dlp/yt-dlp/issues")
    assert describe_ytdlp_error(wrapped) == "The media server is warming up"
    assert describe_ytdlp_error(ExtractorError("Unable to extract title (caused by X)")) == "Unable to extract title"
    # YouTube's own refusals read as sentences for musicians (tests/test_ytdlp_refusals.py has them all).
    private = DownloadError("ERROR: [youtube] dQw4w9WgXcQ: Video unavailable. This video is private.")
    assert describe_ytdlp_error(private).startswith("This video is private on YouTube")


def test_cookies_file_is_sent_and_never_rewritten(media, tmp_path):
    # SEGUE_YTDLP_COOKIES: yt-dlp sends the host's cookies and works on a private copy of the file.
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n"
                       "127.0.0.1\tFALSE\t/\tFALSE\t4102444800\tSID\tsecret-session\n")
    cookies.chmod(0o444)  # a read-only mount must work too
    before = (cookies.read_bytes(), cookies.stat().st_mtime_ns)
    fetched = _fetch(media.url("noise.wav"), 2.0, 3.0, tmp_path, cookies_file=cookies)
    assert fetched.seconds == pytest.approx(3.0, abs=0.05)
    assert any("SID=secret-session" in header for header in media.cookies)
    assert (cookies.read_bytes(), cookies.stat().st_mtime_ns) == before
    assert list((tmp_path / "fetch").iterdir()) == []  # the copy went with the scratch folder


def test_missing_cookies_file_is_a_clear_failure(media, tmp_path):
    with pytest.raises(FetchError, match="SEGUE_YTDLP_COOKIES"):
        _fetch(media.url("noise.wav"), 0.0, 3.0, tmp_path, cookies_file=tmp_path / "absent.txt")
