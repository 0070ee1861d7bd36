"""Shared fixtures: real servers, a tiny real MusicGen, a loopback media host.

- One Valkey (Redis protocol) and one SecantusDB (MongoDB protocol) server per
  test session, on free ports; every test gets a fresh database name and a
  flushed Redis, so tests never see each other's tasks.
- A tiny random MusicGen folder built offline and cached between runs.
- A loopback HTTP server with click tracks at known tempos, for yt-dlp.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from backend.core.settings import Settings
from backend.dev.embedded import start_mongo, start_redis

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SEGUE_TEST_CACHE", ROOT / ".cache" / "test-models"))
ARTIFACTS = ROOT / "test-artifacts"

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = start_redis(tmp_path_factory.mktemp("redis"), persist=False, stdout=subprocess.DEVNULL)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_server():
    server = start_mongo(None, stdout=subprocess.DEVNULL)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from worker.testing.random_model import build_tiny_musicgen

    return build_tiny_musicgen(CACHE / "tiny-mono")


@pytest.fixture(scope="session")
def tiny_stereo_model() -> Path:
    from worker.testing.random_model import build_tiny_musicgen

    return build_tiny_musicgen(CACHE / "tiny-stereo", stereo=True)


@pytest.fixture(scope="session")
def engine_float(tiny_model):
    """The tiny model's float32 engine, one per session (``engine``; reachable under this name from
    modules that override ``engine`` with ``engine_in_modes``)."""
    from worker.engine import MusicGenEngine

    engine = MusicGenEngine(str(tiny_model), device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def engine(engine_float):
    return engine_float


# The precision modes the engine guarantee tests run in (per-step joining and leaving, a seed's audio the
# same alone, batched and joining mid-run, cancel, failures, windows, melody, streaming): float32, and
# the CPU workers' default (worker.engine.quantize.CPU_DEFAULT). A module opts in with
# `engine = engine_in_modes()` (and `melody`'s equivalent), which re-runs its tests in each mode.
ENGINE_MODES = ("", "int8-rows", "openvino-int8")


def engine_in_modes(build=None, name: str = "engine"):
    """A module-scoped fixture replacing ``engine``: the session's float engine, then one in each other mode.

    ``build(mode)``: a different engine (e.g. a melody one) per mode, closed after the module; ``name``:
    the fixture's name."""

    @pytest.fixture(scope="module", params=ENGINE_MODES, ids=lambda mode: mode or "float32", name=name)
    def engine(request, tiny_model):
        mode = request.param
        if build is None and mode == "":
            yield request.getfixturevalue("engine_float")
            return
        if build is not None:
            made = build(mode)
        else:
            from worker.engine import MusicGenEngine

            made = MusicGenEngine(str(tiny_model), device="cpu", quantize=mode)
        assert made.quantize == mode
        # A quantized CPU decoder runs over a bfloat16 KV cache (SEGUE_KV_CACHE=auto), openvino-int8 over its
        # float16 paged one: tested as they are served.
        import torch

        expected = {"": torch.float32, "openvino-int8": torch.float16}.get(mode, torch.bfloat16)
        assert made.kv_dtype == expected
        yield made
        made.close()

    return engine


@pytest.fixture(scope="session")
def stereo_engine(tiny_stereo_model):
    from worker.engine import MusicGenEngine

    engine = MusicGenEngine(str(tiny_stereo_model), device="cpu")
    yield engine
    engine.close()


def noise(channels: int, seconds: float, sample_rate: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((channels, round(seconds * sample_rate)))).astype(np.float32)


@pytest.fixture(scope="session")
def media_server():
    from tests.media_server import MediaServer, make_click_track
    from worker.pipeline.audio import encode_mp3, encode_wav

    with MediaServer() as server:
        for bpm in (100, 120, 128):
            track = make_click_track(bpm, 40.0, sr=44100, channels=2)
            server.add(f"/click{bpm}.wav", encode_wav(track, 44100), "audio/wav")
        server.add("/click120.mp3", encode_mp3(make_click_track(120, 40.0, sr=44100), 44100), "audio/mpeg")
        yield server


@pytest.fixture
def settings(redis_server, mongo_server, tiny_model, tmp_path) -> Settings:
    """Settings for one test: its own database, a flushed Redis, the tiny model offered."""
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    db = f"segue_test_{os.getpid()}_{next(_db_counter)}"
    yield Settings(redis_url=redis_server.url, mongo_url=mongo_server.url, mongo_db=db,
                   models=(str(tiny_model),), device="cpu", data_dir=tmp_path / "var",
                   allow_private_urls=True, heartbeat_seconds=2, job_timeout=300)
    import pymongo

    pymongo.MongoClient(mongo_server.url).drop_database(db)


@pytest.fixture
def app(settings):
    from backend.api.app import create_app

    app = create_app(settings=settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def services(app):
    return app.extensions["segue"]


_MODEL_CACHES: dict = {}


@pytest.fixture
def run_worker(settings):
    """Run a real Segue worker (an RQ SimpleWorker feeding the engine) in this process until the queue is empty."""
    from worker.serving import runtime
    from worker.serving.continuous_worker import ContinuousWorker

    def run(settings: Settings = settings) -> None:
        rt = runtime.init(settings, worker_id=f"test-worker-{os.getpid()}")
        # Keep loaded engines across tests, as a long-lived worker would.
        rt.models = _MODEL_CACHES.setdefault(settings.models, rt.models)
        worker = ContinuousWorker([rt.services.queue.queue], connection=rt.services.redis, name=rt.worker_id,
                                  max_tasks=settings.max_batch)
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING")

    return run


@contextmanager
def serve_app(app, join_timeout: float = 10.0):
    """Serve a Flask app over real HTTP from a thread on a free loopback port; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(join_timeout)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
