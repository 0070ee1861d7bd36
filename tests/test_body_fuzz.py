"""Raw-bytes fuzzing of every route and method: no input gives a 5xx, every error is {"error", "code"}.

``test_fuzz.py`` fuzzes what the OpenAPI document describes; this one ignores
the document and throws bytes at every rule of the app's URL map (pages,
static files and undocumented methods included): deep nesting, numbers that
do not fit a float, duplicate keys, NaN, invalid UTF-8, lone surrogates, huge
strings and key counts, wrong, missing and odd Content-Types, empty bodies,
hostile path segments and query strings, then seeded (derandomized) random
bytes and random JSON from hypothesis. The app is the real one, against real
Redis and MongoDB servers.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, Phase, given, settings as hypothesis_settings, strategies as st

from backend.api.routes.request_body import MAX_DEPTH

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
CONTENT_TYPES = (None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=xyz", "application/json; charset=latin-1", "application/octet-stream")


def _nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


HOSTILE_BODIES: list[bytes] = [
    b"", b"   ", b"\n", b"null", b"true", b"0", b"[]", b"{}", b'"text"', b"{", b"}", b"[" * 10, b"{,}",
    b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000, _nested(5_000), _nested(MAX_DEPTH + 1), _nested(MAX_DEPTH),
    b"1e999", b"-1e999", b"1e-999", b'{"currentTime": 1e999}', b'{"seed": ' + b"9" * 400 + b"}",
    b'{"seed": ' + b"9" * 5_000 + b"}", b'{"promptLength": -0}', b'{"promptLength": 1e308}',
    b'{"seed": -' + b"9" * 400 + b"}", b'{"duration": ' + b"9" * 400 + b"}", b'{"top_k": 1E400}',
    b"NaN", b"Infinity", b"-Infinity", b'{"temperature": NaN}', b'{"cfg_coef": Infinity}',
    b'{"url": "a", "url": "b"}', b'{"a": 1, "a": 1}',
    b'{"url": "\xff\xfe"}', b"\xff\xfe\x00\x00", b"\xfe\xff\x00{", b"\xc3\x28", b"\xef\xbb\xbf{}", b"\x00" * 64,
    b'{"prompt": "\\ud800"}', b'{"\\udfff": 1}', b'{"url": "http://\\u0000.invalid/"}',
    b'{"prompt": "' + b"a" * 5_000_000 + b'"}', b'{"audio": "' + b"A" * 4_000_000 + b'"}',
    b'{"audio": "' + b"\xf0\x9f\x8e\xb5" * 100_000 + b'"}',
    b"{" + b",".join(b'"k%d": %d' % (i, i) for i in range(50_000)) + b"}",
    b'{"url": ["http://a.invalid/"], "audio": {"b": 1}, "duration": [16, 18], "model": 7, "seed": true}',
    b'{"url": "javascript:alert(1)", "duration": "18-16"}', b'{"url": "http://127.0.0.1/a", "currentTime": "1e999"}',
    b'{"audio": "data:audio/wav;base64,AAAA", "prompt_duration": "NaN"}', b'{"output_format": "\\u0000"}',
    b"audioData=1&start=2", b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--xyz--\r\n",
]
HOSTILE_SEGMENTS = ["%ff", "%00", "..%2f..%2fetc%2fpasswd", "a" * 5_000, "%F0%9F%8E%B5", "%ud800", "null", " "]
HOSTILE_QUERIES = ["audio=%ff", "audio=2", "audio=" + "1" * 5_000, "audio", "%ff=%fe", "a=1&a=2", "audio=1&audio=0"]


@pytest.fixture
def fuzz_app(settings):
    from backend.api.app import create_app

    # No rate limits or queued-task cap: they would turn cases into 429s before the body is read.
    app = create_app(settings=settings.with_(rate_limit="off", read_rate_limit="off", max_queued_per_key=0,
                                             allow_private_urls=False))
    app.config["TESTING"] = True
    return app


def _task(client, *, ended: bool) -> str:
    response = client.post("/continue", json={"audio": "not audio"})
    assert response.status_code == 400  # and nothing stored; a real submission follows
    from tests.test_fuzz import REAL_AUDIO

    response = client.post("/continue", json={"audio": REAL_AUDIO, "prompt_duration": 1, "duration": 2})
    assert response.status_code == 202, response.get_json()
    task_id = response.get_json()["task_id"]
    if ended:  # a stream of a task that never runs (no worker here) would never end
        assert client.post(f"/tasks/{task_id}/cancel").status_code == 200
    return task_id


def _paths(app, queued: str, ended: str) -> list[tuple[str, tuple[str, ...]]]:
    """Every URL rule with its parameters filled in, and the methods it declares."""
    out = []
    for rule in app.url_map.iter_rules():
        path = rule.rule
        if "<task_id>" in path:
            live = path.endswith(("/events", "/stream"))
            path = path.replace("<task_id>", ended if live else queued)
        path = path.replace("<path:filename>", "app.js")
        assert "<" not in path, path
        out.append((path, tuple(sorted(rule.methods))))
    return out


def _assert_sane(response, what: str) -> None:
    status = response.status_code
    path = what.split(" ", 2)[1].split("?")[0]
    if path == "/health" and status == 503:  # documented: no worker has reported here; its body is the report
        return
    assert status < 500, f"{what}: {status} {response.get_data()[:300]!r}"
    if status >= 400 and response.request.method != "HEAD":
        assert response.mimetype == "application/json", f"{what}: {status} {response.mimetype}"
        body = response.get_json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], (what, body)
        assert isinstance(body.get("code"), str) and body["code"], (what, body)


def _call(client, method: str, path: str, body: bytes, content_type: str | None, query: str = ""):
    headers = {"Content-Type": content_type} if content_type else {}
    url = f"{path}?{query}" if query else path
    response = client.open(url, method=method, data=body, headers=headers, buffered=True)
    _assert_sane(response, f"{method} {url} [{content_type}] {body[:60]!r}")
    return response


def test_hostile_bodies_on_every_route_and_method(fuzz_app):
    client = fuzz_app.test_client()
    queued, ended = _task(client, ended=False), _task(client, ended=True)
    tasks_before = fuzz_app.extensions["segue"].store.tasks.count_documents({})
    routes = _paths(fuzz_app, queued, ended)
    for path, declared in routes:
        for method in METHODS:
            # Every body on the methods a route declares (with three content types on POST routes);
            # a few on the methods it does not (those are 405s, which must be JSON too).
            bodies = HOSTILE_BODIES if method in declared else HOSTILE_BODIES[:3]
            types = CONTENT_TYPES if method == "POST" and method in declared else ("application/json",)
            for body in bodies:
                for content_type in types[:3] if len(body) > 100_000 else types:
                    response = _call(client, method, path, body, content_type)
                    if path in ("/generate", "/continue"):
                        assert response.status_code != 202, (path, body[:80])
    # Rejected bodies stored nothing (the cancel route's POSTs only ever cancel the one queued task).
    assert fuzz_app.extensions["segue"].store.tasks.count_documents({}) == tasks_before


def test_hostile_paths_and_queries(fuzz_app):
    client = fuzz_app.test_client()
    queued, ended = _task(client, ended=False), _task(client, ended=True)
    for path, declared in _paths(fuzz_app, queued, ended):
        method = "POST" if "POST" in declared else "GET"
        for query in HOSTILE_QUERIES:
            _call(client, method, path, b"{}", "application/json", query)
        for segment in HOSTILE_SEGMENTS:
            for task_id in (queued, ended):
                if task_id in path:
                    _call(client, method, path.replace(task_id, segment), b"{}", "application/json")
            _call(client, method, path.rstrip("/") + "/" + segment, b"", None)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
_field_names = st.sampled_from(["url", "currentTime", "promptLength", "duration", "model", "prompt", "seed",
                                "top_k", "top_p", "temperature", "cfg_coef", "output_format", "webhook",
                                "audio", "task_id", "prompt_duration", "melody"])


def _encode(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


_bodies = st.one_of(
    st.binary(max_size=300),
    _json_values.map(_encode),
    st.dictionaries(_field_names, _json_values, max_size=8).map(_encode),
    st.tuples(st.integers(1, 3000), st.sampled_from([b"[", b'{"a":', b"[{}"])).map(lambda t: t[1] * t[0]),
)


def test_random_bytes_and_json_on_every_route(fuzz_app):
    client = fuzz_app.test_client()
    queued, ended = _task(client, ended=False), _task(client, ended=True)
    routes = _paths(fuzz_app, queued, ended)

    @hypothesis_settings(max_examples=150, deadline=None, database=None, derandomize=True,
                         phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(route=st.sampled_from(routes), method=st.sampled_from(METHODS), body=_bodies,
           content_type=st.sampled_from(CONTENT_TYPES))
    def run(route, method, body, content_type):
        path, declared = route
        if path.endswith("/cancel") and method == "POST":
            return  # would cancel the queued task other cases need
        _call(client, method, path, body, content_type)

    run()
