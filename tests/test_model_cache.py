"""ModelCache with real tiny MusicGen engines."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from worker.engine import MusicGenEngine
from worker.models.model_cache import ModelCache
from worker.testing.random_model import build_tiny_musicgen

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


class FakeClock:
    """A clock the test moves by hand: back-off is checked without sleeping."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_load_is_remembered_with_back_off_then_retried(refs, tmp_path):
    from worker.models.model_cache import RETRY_FIRST_SECONDS, ModelUnavailable

    clock, factory = FakeClock(), LoadLog()
    cache = ModelCache(2, factory, clock=clock)
    missing = str(tmp_path / "not-yet-there")
    with pytest.raises(ModelUnavailable) as first:
        cache.get(missing)
    assert first.value.model == missing and missing in first.value.message
    assert cache.failures() == {missing: first.value.reason}
    assert cache.retry_due() == [] and cache.loaded() == []

    # Inside the back-off: the same reason at once, without trying to load again.
    tries = len(factory.loads)
    with pytest.raises(ModelUnavailable):
        cache.get(missing)
    assert len(factory.loads) == tries

    # Past it, a load is tried again; once the folder exists it succeeds and the failure is forgotten.
    clock.now += RETRY_FIRST_SECONDS
    assert cache.retry_due() == [missing]
    build_tiny_musicgen(tmp_path / "not-yet-there")
    assert cache.get(missing).sample_rate > 0
    assert cache.failures() == {} and cache.loaded() == [missing]


def test_back_off_doubles_up_to_its_cap(tmp_path):
    from worker.models.model_cache import RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS, ModelUnavailable

    def offline(model_ref):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
                      "them in the cached files. Check your internet connection.")

    clock = FakeClock()
    cache = ModelCache(1, offline, clock=clock)
    waits = []
    for _ in range(7):
        with pytest.raises(ModelUnavailable) as raised:
            cache.get("facebook/musicgen-small")
        failure = cache._failures["facebook/musicgen-small"]
        waits.append(failure.retry_at - clock.now)
        clock.now = failure.retry_at
    assert waits == [min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** i) for i in range(7)]
    assert waits[-1] == RETRY_MAX_SECONDS
    # The reason says what happened and what to set, in one line.
    assert "hub could not be reached" in raised.value.reason and "SEGUE_MODELS" in raised.value.reason
    assert "\n" not in raised.value.reason


def test_failure_reason_keeps_the_first_sentence():
    from worker.models.model_cache import failure_reason

    assert failure_reason(ValueError("x is a 'bark' checkpoint; supported: musicgen. More text here.")) == \
        "x is a 'bark' checkpoint; supported: musicgen."
    assert failure_reason(OSError("")) == "OSError"
