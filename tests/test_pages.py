"""The HTML pages and their static files, without a browser: routes, public access with keys on, the config
rendered into the page, every referenced asset and ES module import served, and the scripts' syntax and pure
helpers checked with Node."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from backend.api.app import create_app

STATIC = Path(__file__).resolve().parent.parent / "backend" / "api" / "static"
ASSET = re.compile(r'(?:src|href)="(/static/[^"]+)"')
IMPORT = re.compile(r'^import .* from "(\./[^"]+)";$', re.M)
CONFIG = re.compile(r'<script type="application/json" id="segue-config">(.*?)</script>', re.S)


def page_config(html: str) -> dict:
    return json.loads(CONFIG.search(html).group(1))


def test_webapp_page_has_the_controls_and_the_deployment_config(client, settings):
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert re.search(r'<input id="url" name="url" type="url"', html)
    assert re.search(r'<button type="submit" id="generate"[^>]*>.*?Generate\s*</button>', html, re.S)
    assert '<audio id="audio" controls' in html and '<canvas id="wave-canvas">' in html
    assert 'role="progressbar"' in html
    config = page_config(html)
    # The sidecar is addressed by this request's hostname and the configured sidecar port.
    assert config == {"sidecarUrl": f"http://localhost:{settings.express_port}", "authRequired": False,
                      "heartbeatSeconds": settings.heartbeat_seconds}


def test_sidecar_url_follows_the_host_the_browser_used(client, settings):
    for host, expected in (("studio.example:8001", "http://studio.example"), ("[::1]:8001", "http://[::1]"),
                           ("10.1.2.3", "http://10.1.2.3")):
        html = client.get("/", headers={"Host": host}).get_data(as_text=True)
        assert page_config(html)["sidecarUrl"] == f"{expected}:{settings.express_port}"


def test_status_page_is_served(client):
    response = client.get("/status")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "/static/js/status.js" in html
    for component in ("api", "mongodb", "redis", "pytorch", "sidecar"):
        assert f'data-component="{component}"' in html


@pytest.mark.parametrize("path", ["/", "/status"])
def test_every_asset_and_module_import_is_served(client, path):
    html = client.get(path).get_data(as_text=True)
    pending = ASSET.findall(html)
    assert pending, "the page references no static assets"
    seen = set()
    while pending:
        url = pending.pop()
        if url in seen:
            continue
        seen.add(url)
        response = client.get(url)
        assert response.status_code == 200, url
        expected = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}[Path(url).suffix]
        assert response.mimetype == expected, (url, response.mimetype)
        if url.endswith(".js"):
            base = url.rsplit("/", 1)[0]
            pending += [f"{base}/{name[2:]}" for name in IMPORT.findall(response.get_data(as_text=True))]
    assert any(url.endswith("/api.js") for url in seen)  # imports were followed, not just the entry module


def test_pages_are_public_when_api_keys_are_on(settings):
    digest = hashlib.sha256(b"a-key").hexdigest()
    client = create_app(settings=settings.with_(api_keys=(digest,))).test_client()
    for path in ("/", "/status", "/static/js/webapp.js", "/static/css/base.css", "/static/favicon.svg"):
        assert client.get(path).status_code == 200, path
    assert page_config(client.get("/").get_data(as_text=True))["authRequired"] is True
    # The API behind the page is not: the page's calls must carry the key.
    assert client.get("/tasks/SomeTaskId0123456789abcdef").status_code == 401
    assert client.get("/tasks/SomeTaskId0123456789abcdef", headers={"Authorization": "Bearer a-key"}).status_code == 404


def test_missing_static_file_is_a_json_404(client):
    response = client.get("/static/js/nope.js")
    assert response.status_code == 404 and response.get_json()["code"] == "not_found"


def node(script: str) -> str:
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_scripts_parse_as_es_modules():
    scripts = sorted(STATIC.glob("js/*.js"))
    assert len(scripts) >= 5
    for script in scripts:
        result = subprocess.run(["node", "--experimental-default-type=module", "--check", str(script)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


def test_youtube_links_are_recognised():
    out = node(f"""
        import {{ youtubeInfo }} from "{STATIC / 'js' / 'youtube.js'}";
        const cases = ["https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42", "https://youtu.be/dQw4w9WgXcQ?t=1m30s",
          "https://music.youtube.com/watch?v=dQw4w9WgXcQ", "https://www.youtube.com/shorts/dQw4w9WgXcQ",
          "https://m.youtube.com/watch?v=dQw4w9WgXcQ&start=7", "https://www.youtube.com/watch?v=short",
          "https://example.com/watch?v=dQw4w9WgXcQ", "http://127.0.0.1:8000/a.wav", "not a url"];
        console.log(JSON.stringify(cases.map(youtubeInfo)));
    """)
    results = json.loads(out)
    video = "dQw4w9WgXcQ"
    assert results[:5] == [{"id": video, "start": 42}, {"id": video, "start": 90}, {"id": video, "start": None},
                           {"id": video, "start": None}, {"id": video, "start": 7}]
    assert results[5:] == [None, None, None, None]


def test_time_format_and_wav_encoding():
    out = node(f"""
        import {{ formatTime }} from "{STATIC / 'js' / 'waveform.js'}";
        import {{ encodeWav }} from "{STATIC / 'js' / 'wav.js'}";
        const buffer = {{ numberOfChannels: 2, sampleRate: 44100, length: 3,
          getChannelData: (c) => Float32Array.from(c ? [0, -1, 2] : [0.5, 1, -0.5]) }};
        const bytes = new Uint8Array(await encodeWav(buffer).arrayBuffer());
        console.log(JSON.stringify({{ times: [formatTime(0), formatTime(62.25), formatTime(9.96, 0), formatTime(-1), formatTime(59.96)],
          wav: Array.from(bytes) }}));
    """)
    data = json.loads(out)
    assert data["times"] == ["0:00.0", "1:02.3", "0:10", "0:00.0", "1:00.0"]
    wav = bytes(data["wav"])
    import io

    import numpy as np
    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(wav), dtype="int16")
    assert rate == 44100 and audio.shape == (3, 2)
    # Interleaved L/R, clipped to [-1, 1], scaled to 16 bits.
    assert audio.tolist() == [[16383, 0], [32767, -32768], [-16384, 32767]]
    assert np.asarray(audio).dtype == np.int16
