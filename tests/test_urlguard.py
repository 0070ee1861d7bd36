import socket

import pytest

from backend.api.errorhandlers import status_of
from backend.core.errors import UrlRefused
from backend.core.urlguard import check_url_allowed, normalise_media_url

VIDEO = "dQw4w9WgXcQ"
CANONICAL = f"https://www.youtube.com/watch?v={VIDEO}"


@pytest.mark.parametrize("url", [
    f"https://www.youtube.com/watch?v={VIDEO}",
    f"  https://www.youtube.com/watch?v={VIDEO}\n",
    f"http://youtube.com/watch?v={VIDEO}",
    f"https://m.youtube.com/watch?v={VIDEO}&t=42s",
    f"https://music.youtube.com/watch?v={VIDEO}&list=RDAMVM{VIDEO}",
    f"https://www.youtube.com/watch?feature=share&v={VIDEO}&list=PL123&index=4",
    f"https://youtu.be/{VIDEO}",
    f"https://youtu.be/{VIDEO}?t=30&si=abcdef",
    f"https://www.youtube.com/shorts/{VIDEO}",
    f"https://www.youtube.com/embed/{VIDEO}?start=10",
    f"https://www.youtube.com/live/{VIDEO}?feature=share",
    f"https://WWW.YouTube.com/watch?v={VIDEO}",
])
def test_youtube_links_are_normalised(url):
    assert normalise_media_url(url) == CANONICAL


@pytest.mark.parametrize("url", [
    "https://www.youtube.com/watch?v=short",
    "https://www.youtube.com/watch?v=dQw4w9WgXcQQ",
    "https://youtu.be/bad$id$here",
    "https://www.youtube.com/watch",
    "https://www.youtube.com/playlist?list=PL123",
    "https://www.youtube.com/@somechannel",
    "https://youtu.be/",
])
def test_youtube_links_without_a_single_video_are_refused(url):
    with pytest.raises(UrlRefused):
        normalise_media_url(url)


@pytest.mark.parametrize("url", [
    "https://example.com/song.mp3",
    "http://cdn.example.org:8080/a/b.wav?token=x&y=1",
    "https://soundcloud.com/artist/track",
])
def test_other_urls_are_returned_unchanged(url):
    assert normalise_media_url(f"  {url} ") == url


@pytest.mark.parametrize("url, words", [
    ("", "empty"),
    ("   ", "empty"),
    ("ftp://example.com/a.mp3", "http"),
    ("file:///etc/passwd", "http"),
    ("javascript:alert(1)", "http"),
    ("example.com/a.mp3", "http"),
    ("https://", "host"),
    ("http:///path-only", "host"),
    ("http://example.com:notaport/a.mp3", "malformed"),
    ("http://[::1/a.mp3", "malformed"),
])
def test_bad_urls_are_refused_with_a_sentence(url, words):
    with pytest.raises(UrlRefused) as raised:
        normalise_media_url(url)
    assert words in raised.value.message
    assert status_of(raised.value)[0] == 400


def test_non_string_is_refused():
    with pytest.raises(UrlRefused):
        normalise_media_url(None)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/a.wav",
    "http://127.8.9.10:8000/a.wav",
    "http://localhost/a.wav",
    "http://10.1.2.3/a.wav",
    "http://172.16.0.1/a.wav",
    "http://192.168.1.1/a.wav",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.1.1/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://100.64.0.1/",
    "http://[::1]/a.wav",
    "http://[fd00:ec2::254]/latest/",
    "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::]/",
    "http://2130706433/",  # 127.0.0.1 written as one integer
])
def test_non_public_addresses_are_refused(url):
    with pytest.raises(UrlRefused) as raised:
        check_url_allowed(url, allow_private=False)
    assert "non-public address" in raised.value.message


def test_allow_private_lets_loopback_through():
    check_url_allowed("http://127.0.0.1:9/a.wav", allow_private=True)
    check_url_allowed("http://localhost/a.wav", allow_private=True)


def test_public_address_is_allowed():
    check_url_allowed("http://8.8.8.8/a.wav", allow_private=False)
    check_url_allowed("https://[2606:4700:4700::1111]/a.wav", allow_private=False)


def test_unresolvable_host_is_refused():
    with pytest.raises(UrlRefused) as raised:
        check_url_allowed("http://no-such-host.invalid/a.wav", allow_private=True)
    assert raised.value.message == "could not resolve host no-such-host.invalid"


def test_every_resolved_address_is_checked(monkeypatch):
    # A name answering with one public and one private address must be refused.
    answers = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 80)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)
    with pytest.raises(UrlRefused) as raised:
        check_url_allowed("http://mixed.example/a.wav", allow_private=False)
    assert "10.0.0.5" in raised.value.message


def test_url_without_host_is_refused():
    with pytest.raises(UrlRefused):
        check_url_allowed("http:///a.wav", allow_private=True)
