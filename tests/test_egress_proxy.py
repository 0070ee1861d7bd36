"""The SSRF egress proxy, alone and under the real yt-dlp + ffmpeg fetch path.

Loopback only. The test policy makes ``public.test`` resolve to 127.0.0.2 and
counts that one address as public, so a "public" server can run on
127.0.0.2 while the "private" one on 127.0.0.1 stays refused.
"""

import http.client
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest

from backend.core.errors import FetchError
from tests.media_server import MediaServer, make_click_track, make_noise_track, wav_bytes
from worker.pipeline.egress_proxy import REFUSED_HEADER, EgressPolicy, EgressProxy
from worker.pipeline.fetcher import fetch_section, probe_remote_duration

SR = 44100
PUBLIC_ADDRESS = "127.0.0.2"
_FAKE_DNS = {"public.test": [PUBLIC_ADDRESS], "rebind.test": [PUBLIC_ADDRESS, "127.0.0.1"]}


def _resolve(host):
    if host in _FAKE_DNS:
        return list(_FAKE_DNS[host])
    return [info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]


def _allowed(address):
    return address == PUBLIC_ADDRESS


POLICY = EgressPolicy(resolve=_resolve, allowed=_allowed)


@pytest.fixture(scope="module")
def noise():
    return make_noise_track(12.0, sr=SR, channels=1, seed=5)


@pytest.fixture(scope="module")
def private():
    with MediaServer("127.0.0.1") as server:
        server.add("/click120.wav", wav_bytes(make_click_track(120, 10.0, sr=SR), SR), "audio/wav")
        yield server


@pytest.fixture(scope="module")
def public(private, noise):
    with MediaServer(PUBLIC_ADDRESS) as server:
        server.add("/noise.wav", wav_bytes(noise, SR), "audio/wav")
        server.add_redirect("/redirect.wav", private.url("click120.wav"))
        server.add_redirect("/hop.wav", f"http://public.test:{server.port}/noise.wav")
        yield server


@pytest.fixture
def proxy():
    with EgressProxy(POLICY, timeout=5) as running:
        yield running


def _public_url(public, path):
    return f"http://public.test:{public.port}/{path}"


def _opener(proxy):
    return urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))


def test_allowed_plain_http_request_is_forwarded(public, proxy, noise):
    with _opener(proxy).open(_public_url(public, "noise.wav"), timeout=5) as answer:
        body = answer.read()
    assert answer.status == 200
    assert body == wav_bytes(noise, SR)
    assert proxy.refusals == []


def test_range_request_and_redirect_between_allowed_hosts(public, proxy, noise):
    request = urllib.request.Request(_public_url(public, "hop.wav"), headers={"Range": "bytes=0-99"})
    with _opener(proxy).open(request, timeout=5) as answer:
        assert answer.status == 206
        assert answer.read() == wav_bytes(noise, SR)[:100]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "rebind.test"])
def test_request_to_a_non_public_host_is_refused(private, proxy, host):
    before = len(private.requests)
    with pytest.raises(urllib.error.HTTPError) as raised:
        _opener(proxy).open(f"http://{host}:{private.port}/click120.wav", timeout=5)
    assert raised.value.code == 403
    assert "non-public address" in raised.value.headers[REFUSED_HEADER]
    assert proxy.refusals and host in proxy.refusals[0]
    assert len(private.requests) == before


def test_connect_to_a_refused_host_is_refused(private, proxy):
    host, port = proxy.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.set_tunnel("127.0.0.1", private.port)
    with pytest.raises(OSError, match="403"):
        connection.request("GET", "/click120.wav")
    connection.close()
    assert "127.0.0.1" in proxy.refusals[0]


def _get_through_tunnel(proxy_url, host, port, path):
    """GET ``path`` from ``host:port`` through a CONNECT tunnel of the proxy; (status, body)."""
    proxy_host, proxy_port = proxy_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(proxy_host, int(proxy_port), timeout=5)
    try:
        connection.set_tunnel(host, port)
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_connect_to_an_allowed_host_tunnels(public, proxy, noise):
    assert _get_through_tunnel(proxy.url, "public.test", public.port, "/noise.wav") == (200, wav_bytes(noise, SR))


def test_ffprobe_follows_redirects_through_the_proxy(public, private, proxy):
    before = len(private.requests)
    assert probe_remote_duration(_public_url(public, "noise.wav"), 5, proxy.url) == pytest.approx(12.0, abs=0.05)
    assert probe_remote_duration(_public_url(public, "redirect.wav"), 5, proxy.url) is None
    assert any("127.0.0.1" in reason for reason in proxy.refusals)
    assert len(private.requests) == before


def _fetch(url, start, seconds, tmp_path):
    return fetch_section(url, start, seconds, workdir=tmp_path / "fetch", socket_timeout=5,
                         allow_private=False, egress_policy=POLICY)


def test_fetch_refuses_a_redirect_to_a_private_address(public, private, tmp_path):
    before = len(private.requests)
    with pytest.raises(FetchError) as raised:
        _fetch(_public_url(public, "redirect.wav"), 0.0, 4.0, tmp_path)
    assert raised.value.message == (
        "refusing to fetch from 127.0.0.1: it resolves to a non-public address (127.0.0.1)")
    assert len(private.requests) == before
    assert list((tmp_path / "fetch").iterdir()) == []


def test_fetch_through_the_proxy_downloads_the_section(public, noise, tmp_path):
    # public.test exists only in the proxy's resolver: yt-dlp, ffprobe and
    # ffmpeg can only reach it through the proxy.
    before = len(public.requests)
    fetched = _fetch(_public_url(public, "noise.wav"), 5.0, 3.0, tmp_path)
    assert fetched.seconds == pytest.approx(3.0, abs=0.05)
    assert fetched.media_duration == pytest.approx(12.0, abs=0.05)
    start = int(5.0 * SR)
    assert np.allclose(fetched.audio[0, :SR], noise[0, start:start + SR], atol=2e-4)
    assert any(header for _, path, header in public.requests[before:] if path == "/noise.wav")


def test_ffprobe_https_goes_through_connect(private, proxy):
    # No TLS server here: what matters is that ffprobe asked the proxy (CONNECT) and was refused.
    assert probe_remote_duration(f"https://127.0.0.1:{private.port}/click120.wav", 5, proxy.url) is None
    assert proxy.refusals == [
        "refusing to fetch from 127.0.0.1: it resolves to a non-public address (127.0.0.1)"]


def test_guarded_fetch_refuses_to_run_with_no_proxy_set(public, tmp_path, monkeypatch):
    # ffmpeg would connect directly to hosts matching no_proxy, proxy or not.
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    with pytest.raises(FetchError, match="no_proxy"):
        _fetch(_public_url(public, "noise.wav"), 0.0, 2.0, tmp_path)


# -- an upstream proxy (SEGUE_YTDLP_PROXY) behind the guard ----------------------------------

@pytest.fixture
def upstream():
    """A forward proxy standing in for the host's upstream, recording every host it is asked for.

    It resolves with the system resolver only: ``public.test`` exists in the
    guard's resolver alone, so the upstream can serve a fetch only if the
    guard hands it the address it checked.
    """
    asked: list[str] = []

    def resolve(host):
        asked.append(host)
        return [info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]

    with EgressProxy(EgressPolicy(resolve=resolve, allowed=lambda address: True), timeout=5) as running:
        running.asked = asked
        yield running


def test_fetch_through_an_upstream_proxy_asks_it_for_checked_addresses_only(public, noise, upstream, tmp_path):
    fetched = fetch_section(_public_url(public, "noise.wav"), 5.0, 3.0, workdir=tmp_path / "fetch",
                            socket_timeout=5, allow_private=False, egress_policy=POLICY,
                            upstream_proxy=upstream.url)
    assert fetched.seconds == pytest.approx(3.0, abs=0.05)
    start = int(5.0 * SR)
    np.testing.assert_allclose(fetched.audio[0, :1000], noise[0, start:start + 1000], atol=1e-4)
    assert upstream.asked and set(upstream.asked) == {PUBLIC_ADDRESS}


def test_upstream_proxy_never_hears_of_a_refused_host(public, private, upstream, tmp_path):
    before = len(private.requests)
    with pytest.raises(FetchError, match="non-public address"):
        fetch_section(_public_url(public, "redirect.wav"), 0.0, 4.0, workdir=tmp_path / "fetch",
                      socket_timeout=5, allow_private=False, egress_policy=POLICY,
                      upstream_proxy=upstream.url)
    assert "127.0.0.1" not in upstream.asked and "localhost" not in upstream.asked
    assert len(private.requests) == before


def test_connect_through_the_upstream_names_the_checked_address(public, noise, upstream):
    with EgressProxy(POLICY, timeout=5, upstream=upstream.url) as guard:
        assert _get_through_tunnel(guard.url, "public.test", public.port, "/noise.wav") == \
            (200, wav_bytes(noise, SR))
    assert upstream.asked == [PUBLIC_ADDRESS]


def test_upstream_proxy_url_parsing():
    from worker.pipeline.egress_proxy import Upstream

    plain = Upstream.parse("http://proxy.example:3128")
    assert (plain.host, plain.port, plain.authorization) == ("proxy.example", 3128, None)
    secret = Upstream.parse("http://us%40er:p%3Ass@10.0.0.5:8080")
    assert secret.host == "10.0.0.5" and secret.authorization == "Basic dXNAZXI6cDpzcw=="  # us@er:p:ss
    for bad in ("socks5://proxy:1080", "proxy:3128", "http://"):
        with pytest.raises(ValueError):
            Upstream.parse(bad)
