"""ModelCache with real tiny MusicGen engines."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from worker.engine import MusicGenEngine
from worker.model_cache import ModelCache
from worker.random_model import build_tiny_musicgen

CACHE = Path(os.environ.get("SEGUE_TEST_CACHE") or Path(__file__).resolve().parents[1] / ".cache" / "test-models")


@pytest.fixture(scope="module")
def refs() -> list[str]:
    return [
        str(build_tiny_musicgen(CACHE / "tiny-mono")),
        str(build_tiny_musicgen(CACHE / "tiny-stereo", stereo=True)),
        str(build_tiny_musicgen(CACHE / "tiny-mono-seed1", seed=1)),
    ]


class LoadLog:
    """A real engine factory that remembers what it loaded."""

    def __init__(self):
        self.loads: list[str] = []

    def __call__(self, model_ref: str) -> MusicGenEngine:
        self.loads.append(model_ref)
        return MusicGenEngine(model_ref, device="cpu")


def test_get_loads_once_and_reuses(refs):
    factory = LoadLog()
    cache = ModelCache(2, factory)
    first = cache.get(refs[0])
    assert cache.get(refs[0]) is first
    assert factory.loads == [refs[0]]
    assert first.sample_rate == 32000
    cache.close()


def test_least_recently_used_is_evicted_and_closed(refs):
    a, b, c = refs
    cache = ModelCache(2, LoadLog())
    engine_a, engine_b = cache.get(a), cache.get(b)
    cache.get(a)  # a is now more recent than b
    engine_c = cache.get(c)

    assert cache.loaded() == [a, c]
    assert engine_b.closed
    assert not engine_a.closed and not engine_c.closed
    cache.close()
    assert engine_a.closed and engine_c.closed
    assert cache.loaded() == []


def test_evicted_model_is_reloaded_on_demand(refs):
    a, b, _ = refs
    factory = LoadLog()
    cache = ModelCache(1, factory)
    first_a = cache.get(a)
    cache.get(b)
    second_a = cache.get(a)
    assert second_a is not first_a and first_a.closed
    assert factory.loads == [a, b, a]
    assert cache.loaded() == [a]
    cache.close()


def test_concurrent_gets_load_a_model_once(refs):
    factory = LoadLog()
    cache = ModelCache(2, factory)
    engines: list[MusicGenEngine] = []
    threads = [threading.Thread(target=lambda: engines.append(cache.get(refs[0]))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert factory.loads == [refs[0]]
    assert len(engines) == 4 and all(engine is engines[0] for engine in engines)
    cache.close()


def test_failed_load_leaves_the_cache_usable(refs, tmp_path):
    cache = ModelCache(1, LoadLog())
    with pytest.raises(Exception):
        cache.get(str(tmp_path / "no-such-model"))
    assert cache.loaded() == []
    assert cache.get(refs[0]).channels == 1
    cache.close()


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        ModelCache(0, LoadLog())
