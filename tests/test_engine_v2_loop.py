"""Engine v2's loop thread: requests submitted from other threads, mid-run, as the worker will."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.conftest import engine_in_modes, noise
from tests.test_engine_batching import mixed_requests
from worker.engine import GenerationCanceled, GenerationRequest
from worker.engine.loop import EngineLoop
from worker.engine.scheduler import Scheduler

# Every test here runs in float32 and in int8-rows (tests.conftest.ENGINE_MODES).
engine = engine_in_modes()


@pytest.fixture
def loop(engine):
    loop = EngineLoop(Scheduler(engine, max_rows=8, max_seconds=4.0, max_text=32))
    yield loop
    loop.close(timeout=60)


def test_requests_from_several_threads_arriving_mid_run_sound_as_alone(engine, loop):
    requests = mixed_requests()
    first = loop.submit(requests[0])
    started = threading.Event()
    requests[1].on_progress = lambda step, total: started.set()
    second = loop.submit(requests[1])
    assert started.wait(60)  # the first two are running
    later: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: later.__setitem__(i, loop.submit(requests[i]))) for i in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    futures = [first, second, later[2], later[3]]
    for future, request in zip(futures, requests):
        np.testing.assert_array_equal(future.result(timeout=120).audio,
                                      engine.generate_each([request])[0].audio)


def test_free_tasks_counts_guided_tasks_that_fit(loop):
    assert loop.free_tasks == 4
    hold = threading.Event()
    request = mixed_requests()[0]
    request.should_stop = lambda: hold.is_set()
    future = loop.submit(request)
    assert loop.free_tasks == 3
    hold.set()
    with pytest.raises(GenerationCanceled):
        future.result(timeout=60)
    assert loop.free_tasks == 4


def test_invalid_input_fails_its_future_at_once_and_close_finishes_the_rest(engine):
    loop = EngineLoop(Scheduler(engine, max_rows=4, max_seconds=4.0, max_text=32))
    bad = loop.submit(GenerationRequest(noise(1, 1.0, 32000), 32000, 0.5))
    with pytest.raises(ValueError, match="total_seconds"):
        bad.result(timeout=1)
    good = loop.submit(mixed_requests()[0])
    loop.close(timeout=120)
    assert good.done() and good.result().audio.shape == (1, 48000)
    with pytest.raises(RuntimeError, match="closed"):
        loop.submit(mixed_requests()[0])


def test_every_loop_in_the_process_steps_on_one_thread_and_a_broken_one_stops_alone(engine):
    """Two engines' loops share the stepping thread (one OpenMP team: worker.engine.loop); a loop whose
    scheduler breaks fails its own tasks and leaves the other running."""
    healthy = EngineLoop(Scheduler(engine, max_rows=4, max_seconds=4.0, max_text=32))
    broken_scheduler = Scheduler(engine, max_rows=4, max_seconds=4.0, max_text=32)
    broken = EngineLoop(broken_scheduler)
    stepped_on: set[str] = set()
    request, other = mixed_requests()[:2]
    request.on_progress = lambda step, total: stepped_on.add(threading.current_thread().name)
    other.on_progress = lambda step, total: stepped_on.add(threading.current_thread().name)

    def explode():
        raise RuntimeError("the cache is gone")

    broken_scheduler._decode = explode
    doomed = broken.submit(other)
    done = healthy.submit(request)
    with pytest.raises(RuntimeError, match="the engine loop stopped"):
        doomed.result(timeout=120)
    assert done.result(timeout=120).audio.shape[1] > 0
    assert stepped_on == {"segue-engine"}  # both loops' callbacks ran on the one stepping thread
    with pytest.raises(RuntimeError, match="stopped"):
        broken.submit(mixed_requests()[0])
    healthy.close(timeout=60)
    broken.close(timeout=5)


def test_single_threaded_restores_the_thread_count():
    import torch

    from worker.engine.threads import single_threaded

    before = torch.get_num_threads()
    with single_threaded():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
