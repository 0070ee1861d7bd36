"""The scheduler on a real tiny MusicGen: a seed gives the same audio alone (through the engine), batched,
joining mid-run, in other cache sizes and across windows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.conftest import engine_in_modes, noise
from tests.test_engine_batching import mixed_requests
from worker.engine import GenerationCanceled, GenerationRequest, GenerationResult
from worker.engine.scheduler import Scheduler
from worker.engine.windows import WindowedGeneration

# Every test here runs in float32 and in int8-rows (tests.conftest.ENGINE_MODES).
engine = engine_in_modes()


def audio_of(outcomes: list) -> list[np.ndarray]:
    assert all(isinstance(o, GenerationResult) for o in outcomes), outcomes
    return [o.audio for o in outcomes]


@pytest.fixture(scope="module")
def reference(engine):
    """The audio of each of mixed_requests(), each run alone through the engine (its own loop and cache)."""
    return [audio_of(engine.generate_each([r]))[0] for r in mixed_requests()]


@pytest.fixture
def scheduler(engine):
    return Scheduler(engine, max_rows=8, max_seconds=4.0, max_text=32, prefill_chunk=16)


def test_alone_each_task_sounds_exactly_as_through_the_engine(scheduler, reference):
    for request, expected in zip(mixed_requests(), reference):
        (audio,) = audio_of(scheduler.run([request]))
        assert audio.shape == expected.shape
        np.testing.assert_array_equal(audio, expected)
    assert scheduler.idle and scheduler.rows_in_use == 0


def test_batched_tasks_sound_as_they_do_alone(scheduler, reference):
    # Guided and unguided rows share the batch too.
    requests = mixed_requests()
    requests[2].cfg_coef = 1.0
    expected = list(reference)
    expected[2] = audio_of(scheduler.run([dataclasses.replace(requests[2])]))[0]
    for audio, alone in zip(audio_of(scheduler.run(requests)), expected):
        np.testing.assert_array_equal(audio, alone)


def test_tasks_joining_mid_run_sound_as_they_do_alone(scheduler, reference):
    requests = mixed_requests()
    first = [scheduler.submit(r, i) for i, r in enumerate(requests[:2])]
    for _ in range(12):
        scheduler.step()
    assert all(t.drawn > 0 for t in first)
    later = [scheduler.submit(r, i) for i, r in enumerate(requests[2:], start=2)]
    scheduler.step()
    assert scheduler.rows_in_use == 2 + 2 + 2  # a later task holds its rows while it prefills
    scheduler.run_until_idle()
    for task, alone in zip(first + later, reference):
        np.testing.assert_array_equal(task.outcome.audio, alone)


def test_a_long_prompt_is_prefilled_in_chunks_while_others_keep_decoding(engine, reference):
    scheduler = Scheduler(engine, max_rows=4, max_seconds=4.0, max_text=32, prefill_chunk=8)
    requests = mixed_requests()
    running = scheduler.submit(requests[0], 0)
    while running.drawn == 0:
        scheduler.step()
    long_prompt = scheduler.submit(requests[1], 1)  # 1.2 s: 61 prompt positions, 8 per iteration
    drawn_before = running.drawn
    while long_prompt.drawn == 0:
        scheduler.step()
    # Every prefill iteration also decoded the running task one step.
    assert running.drawn - drawn_before == -(-61 // 8)
    scheduler.run_until_idle()
    np.testing.assert_array_equal(running.outcome.audio, reference[0])
    np.testing.assert_array_equal(long_prompt.outcome.audio, reference[1])


def test_a_task_waits_for_free_rows_and_takes_them_when_one_leaves(engine, reference):
    scheduler = Scheduler(engine, max_rows=4, max_seconds=4.0, max_text=32)
    tasks = [scheduler.submit(r, i) for i, r in enumerate(mixed_requests()[:3])]  # 3 guided tasks, 2 rows each
    scheduler.step()
    scheduler.step()
    assert tasks[2].phase == "waiting" and scheduler.rows_in_use == 4
    scheduler.run_until_idle()
    for task, alone in zip(tasks, reference):
        np.testing.assert_array_equal(task.outcome.audio, alone)


def test_cancel_frees_the_rows_within_one_step_and_leaves_the_others_unchanged(scheduler, reference):
    requests = mixed_requests()
    progress: list[int] = []
    requests[2].on_progress = lambda step, total: progress.append(step)
    requests[2].should_stop = lambda: len(progress) >= 5
    tasks = [scheduler.submit(r, i) for i, r in enumerate(requests)]
    while not tasks[2].done:
        scheduler.step()
    assert progress == [1, 2, 3, 4, 5]
    assert scheduler.rows_in_use == 6  # its two rows are free in the very step it asked
    scheduler.run_until_idle()
    assert isinstance(tasks[2].outcome, GenerationCanceled)
    for i in (0, 1, 3):
        np.testing.assert_array_equal(tasks[i].outcome.audio, reference[i])


def test_a_task_asking_to_stop_before_it_starts_never_takes_rows(scheduler):
    request = mixed_requests()[0]
    request.should_stop = lambda: True
    task = scheduler.submit(request)
    scheduler.step()
    assert task.done and isinstance(task.outcome, GenerationCanceled) and scheduler.rows_in_use == 0


def test_failures_are_their_own_task_only(scheduler, reference):
    requests = mixed_requests()
    requests[1].top_k = 2.5  # passes validation, fails when sampling

    def broken_progress(step: int, total: int) -> None:
        if step == 4:
            raise ConnectionError("redis went away")

    requests[3].on_progress = broken_progress
    requests.append(GenerationRequest(noise(1, 1.0, 32000), 32000, 0.5))  # invalid: fails at submit
    outcomes = scheduler.run(requests)
    assert isinstance(outcomes[1], TypeError) and outcomes[1].__traceback__ is None
    assert isinstance(outcomes[3], ConnectionError)
    assert isinstance(outcomes[4], ValueError) and "total_seconds" in str(outcomes[4])
    for i in (0, 2):
        np.testing.assert_array_equal(outcomes[i].audio, reference[i])
    assert scheduler.rows_in_use == 0


def test_a_request_longer_than_the_cache_fails_alone(scheduler, reference):
    requests = [GenerationRequest(noise(1, 1.0, 32000), 32000, 6.0), mixed_requests()[0]]
    outcomes = scheduler.run(requests)
    assert isinstance(outcomes[0], ValueError) and "positions" in str(outcomes[0])
    np.testing.assert_array_equal(outcomes[1].audio, reference[0])


def test_progress_is_per_task_monotonic_and_reaches_each_total(scheduler):
    requests = mixed_requests()
    calls: dict[int, list[tuple[int, int]]] = {i: [] for i in range(len(requests))}
    for i, request in enumerate(requests):
        request.on_progress = lambda step, total, i=i: calls[i].append((step, total))
    scheduler.run(requests)
    assert len({row[0][1] for row in calls.values()}) > 1
    for row in calls.values():
        total = row[0][1]
        assert row == [(step, total) for step in range(1, total + 1)]


def test_streamed_chunks_are_the_engines_chunks(engine, scheduler):
    def collect():
        chunks: list = []
        return chunks, lambda audio, offset: chunks.append((offset, audio.copy()))

    ours, theirs = collect(), collect()
    make = lambda on_audio: GenerationRequest(noise(1, 1.0, 32000, seed=9), 32000, 3.5, seed=9, on_audio=on_audio)
    (result,) = scheduler.run([make(ours[1])])
    engine.generate([make(theirs[1])])
    assert len(ours[0]) >= 3
    assert [o for o, _ in ours[0]] == [o for o, _ in theirs[0]]
    for (_, a), (_, b) in zip(ours[0], theirs[0]):
        np.testing.assert_array_equal(a, b)
    joined = np.concatenate([a for _, a in ours[0]], axis=1)
    np.testing.assert_array_equal(joined[:, -1000:], result.audio[:, -1000:])


def test_stereo_model_alone_batched_and_as_alone(stereo_engine):
    scheduler = Scheduler(stereo_engine, max_rows=6, max_seconds=4.0, max_text=32)
    requests = mixed_requests()[:3]
    batched = audio_of(scheduler.run(requests))
    for request, audio in zip(requests, batched):
        assert audio.shape == (2, round(request.total_seconds * 32000))
        np.testing.assert_array_equal(audio, audio_of(stereo_engine.generate_each([request]))[0])


def window_by_window(engine, request: GenerationRequest) -> np.ndarray:
    """Past 30 s window by window, each window a separate request through the engine."""
    windows = WindowedGeneration(request, engine.sample_rate, engine.hop_length)
    while not windows.done:
        (result,) = audio_of(engine.generate_each([windows.next_request()]))
        windows.accept(GenerationResult(result, engine.sample_rate))
    return windows.result().audio


def test_past_30_s_a_task_keeps_its_rows_across_windows_and_sounds_as_alone(engine):
    scheduler = Scheduler(engine, max_rows=6, max_text=32, prefill_chunk=128)
    # B's first window ends first (2 s prompt, 28 s new): it prefills its second window in place, in
    # rows 0-1, while A (rows 2-3) keeps decoding its first window.
    b = GenerationRequest(noise(1, 2.0, 32000, seed=6), 32000, 34.0, seed=4)
    a = GenerationRequest(noise(1, 1.0, 32000, seed=5), 32000, 33.0, text="rock", seed=3)
    progress: list[tuple[int, int]] = []
    a.on_progress = lambda step, total: progress.append((step, total))
    b_task, a_task = scheduler.submit(b, 0), scheduler.submit(a, 1)
    in_place_beside_decoding = 0
    while not scheduler.idle:
        scheduler.step()
        for task in (a_task, b_task):
            assert task.phase != "waiting" or task.windows.window == 0  # never queued again between windows
        if (b_task.phase == "prefilling" and b_task.windows.window == 1 and a_task.phase == "decoding"
                and a_task.first_row > b_task.first_row):
            in_place_beside_decoding += 1
    assert in_place_beside_decoding >= 2
    assert a_task.windows.window == b_task.windows.window == 2
    assert a_task.outcome.audio.shape == (1, 33 * 32000)
    # Progress: one scale for the whole task, monotonic, ending at 100 %.
    assert [p for p, _ in progress] == sorted(p for p, _ in progress) and progress[-1] == (10_000, 10_000)
    np.testing.assert_array_equal(a_task.outcome.audio, window_by_window(engine, a))
    np.testing.assert_array_equal(b_task.outcome.audio, window_by_window(engine, b))


def test_a_task_that_breaks_the_batched_pass_fails_alone(scheduler, reference):
    # A poisoned task (a token id outside the embedding, as corrupt state would give) makes the whole
    # batched forward pass raise; each task is then stepped alone and only the poisoned one fails.
    tasks = [scheduler.submit(r, i) for i, r in enumerate(mixed_requests())]
    while not all(t.phase == "decoding" for t in tasks):
        scheduler.step()
    poisoned = tasks[1]
    with torch.inference_mode():
        poisoned.ids[0, poisoned.next_token] = 10_000
    scheduler.step()
    assert poisoned.done and isinstance(poisoned.outcome, IndexError)
    assert scheduler.rows_in_use == 6
    scheduler.run_until_idle()
    for i in (0, 2, 3):
        np.testing.assert_array_equal(tasks[i].outcome.audio, reference[i])


def test_cancel_during_a_long_prefill_frees_the_rows_at_once(engine, reference):
    scheduler = Scheduler(engine, max_rows=4, max_seconds=4.0, max_text=32, prefill_chunk=8)
    stop = []
    request = mixed_requests()[1]  # 61 prompt positions: 8 chunks
    request.should_stop = lambda: bool(stop)
    running = scheduler.submit(mixed_requests()[0], 0)
    long_prompt = scheduler.submit(request, 1)
    while long_prompt.length < 16:
        scheduler.step()
    assert long_prompt.phase == "prefilling" and long_prompt.length < 61
    stop.append(True)
    scheduler.step()
    assert long_prompt.done and isinstance(long_prompt.outcome, GenerationCanceled)
    assert scheduler.rows_in_use == 2
    scheduler.run_until_idle()
    np.testing.assert_array_equal(running.outcome.audio, reference[0])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # gc.get_objects() touches deprecated torch aliases
def test_no_tensors_outlive_a_task(scheduler):
    import gc

    def tensors() -> set[int]:
        gc.collect()
        found = set()
        for o in gc.get_objects():
            try:
                if isinstance(o, torch.Tensor):
                    found.add(id(o))
            except ReferenceError:  # a dead weakref.proxy left by other tests
                pass
        return found

    scheduler.run(mixed_requests())  # warm: lazily built buffers exist from here on
    before = tensors()
    for change in (lambda r: None, lambda r: setattr(r[1], "top_k", 2.5),
                   lambda r: setattr(r[0], "should_stop", lambda: True)):
        requests = mixed_requests()
        change(requests)
        outcomes = scheduler.run(requests)
        del outcomes, requests
        assert tensors() <= before
