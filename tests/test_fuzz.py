"""Property-based fuzzing of every documented operation with schemathesis, in-process (WSGI).

The generated OpenAPI document drives the fuzzer: positive cases (bodies and
path parameters that fit the schemas) and negative ones (that do not). For
every response: no 5xx (except /health's documented 503 while no worker has
reported), every 4xx/5xx is JSON ``{"error", "code"}``, and the status code,
content type and body conform to the document.

No worker runs here, so no URL is ever fetched; but ``POST /generate`` resolves
the URL's host (the SSRF guard). Generated hostnames would make that slow or
flaky where DNS times out, so the guard's resolver is replaced by a fake one
with no network: IP literals resolve to themselves (so private/loopback ones
are still refused), ``*.invalid`` names fail to resolve, and every other name
resolves to one public address so that submissions get through to the queue.

Random bytes never decode as audio, so half of the positive ``POST /continue``
cases carry a real 2 s WAV instead of the generated ``audio``; half of the
task-route cases use the id of a real (queued) task instead of a generated one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import types

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings as hypothesis_settings, strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from backend.api.openapi import build_openapi
from backend.api.routes import docs
from backend.core import urlguard
from backend.core.settings import Settings

MAX_EXAMPLES = 25
PUBLIC_ADDRESS = ipaddress.ip_address("93.184.215.14")  # any global address; nothing connects to it

# (METHOD, path) of every documented operation; the document does not depend on connections.
_DOC = build_openapi(Settings())
OPERATIONS = [(method.upper(), path) for path, item in _DOC["paths"].items() for method in item
              if method != "parameters"]
# Negative cases need an input to get wrong: a body or a parameter.
CASES = [pytest.param(method, path, mode, id=f"{method} {path} {mode}")
         for method, path in OPERATIONS
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode == GenerationMode.POSITIVE or "{" in path or "requestBody" in _DOC["paths"][path][method.lower()]]


def no_server_error(ctx, response, case):
    """No 5xx, except /health's documented 503 (its report says which part is down; here: no worker)."""
    if response.status_code >= 500 and not (case.operation.path == "/health" and response.status_code == 503):
        raise AssertionError(f"server error {response.status_code}: {response.text[:500]}")
    return None


def error_body_check(ctx, response, case):
    """Every 4xx/5xx answer is JSON {"error": str, "code": str} (/health's 503 is its report instead)."""
    if response.status_code < 400:
        return None
    if case.operation.path == "/health" and response.status_code == 503:
        body = response.json()
        assert body["status"] != "live", body
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("code"), str), body
    assert body["error"] and body["code"], body
    return None


# negative_data_rejection: a request that violates the document must get a 4xx, never a 2xx.
# (positive_data_acceptance is left out on purpose: bounds inside numeric strings and the cross-field
# rules — duration MAX > promptLength, prompt_duration < duration — cannot be said in JSON Schema.)
CHECKS = [no_server_error, error_body_check, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]


class _Resolver:
    """Stand-in for the socket module inside backend.core.urlguard: numeric hosts and localhost only."""

    SOCK_STREAM = socket.SOCK_STREAM
    gaierror = socket.gaierror

    def getaddrinfo(self, host, port, *args, **kwargs):
        try:
            address = ipaddress.ip_address(str(host).split("%", 1)[0])
        except ValueError:
            if str(host).lower().rstrip(".").endswith(".invalid"):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            address = PUBLIC_ADDRESS
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (str(address), port))]


def _wav_base64(seconds: float = 2.0, sr: int = 8000) -> str:
    import base64
    import io

    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


REAL_AUDIO = _wav_base64()


def _with_real_audio(pair):
    case, use_real = pair
    if use_real and isinstance(case.body, dict):
        case.body["audio"] = REAL_AUDIO
    return case


def _queued_task(app, *, ended: bool = False) -> str:
    response = app.test_client().post("/generate", json={"url": "https://media.example.org/a.mp3"})
    assert response.status_code == 202, response.get_json()
    task_id = response.get_json()["task_id"]
    if ended:  # a live stream of a task that never runs (no worker here) would not end
        assert app.test_client().post(f"/tasks/{task_id}/cancel").status_code == 200
    return task_id


@pytest.fixture
def fuzz_app(settings, monkeypatch):
    """The test app with the tiny model, the SSRF guard on (allow_private_urls=False) and the docs routes."""
    from backend.api.app import create_app

    # No rate limits or queued-task cap (when this Settings has them): they would turn fuzz cases into 429s.
    known = {f.name for f in dataclasses.fields(settings)}
    relaxed = {k: v for k, v in {"rate_limit": "off", "read_rate_limit": "off", "max_queued_per_key": 0}.items()
               if k in known}
    strict = create_app(settings=settings.with_(allow_private_urls=False, **relaxed))
    strict.config["TESTING"] = True
    if "docs" not in strict.blueprints:  # until backend/api/app.py registers it
        strict.register_blueprint(docs.bp)
    resolver = _Resolver()
    monkeypatch.setattr(urlguard, "socket", types.SimpleNamespace(
        getaddrinfo=resolver.getaddrinfo, SOCK_STREAM=socket.SOCK_STREAM, gaierror=socket.gaierror))
    return strict


@pytest.mark.parametrize("method,path,mode", CASES)
def test_fuzz_operation(fuzz_app, method, path, mode):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    operation = schema[path][method]
    seen: list[int] = []
    strategy = operation.as_strategy(generation_mode=mode)
    if "{task_id}" in path:
        strategy = st.one_of(strategy, operation.as_strategy(generation_mode=mode,
                                                             path_parameters={"task_id": _queued_task(
                                                                 fuzz_app, ended=path.endswith(("/events", "/stream")))}))
    elif path == "/continue" and mode == GenerationMode.POSITIVE:
        strategy = st.tuples(strategy, st.booleans()).map(_with_real_audio)

    @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                         phases=[Phase.generate, Phase.shrink],
                         suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        response = case.call_and_validate(checks=CHECKS)
        seen.append(response.status_code)

    run()
    assert seen, "no case was generated"
    if path in ("/generate", "/continue") and mode == GenerationMode.POSITIVE:
        assert 202 in seen, f"no generated submission was accepted: {sorted(set(seen))}"
