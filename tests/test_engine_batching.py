"""Tasks of different users batched by the engine (continuous batching), against a real tiny MusicGen."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from worker.engine import GenerationCanceled, GenerationRequest, GenerationResult, MusicGenEngine
from tests.conftest import engine_in_modes, noise

# Every test here runs in float32 and in int8-rows (tests.conftest.ENGINE_MODES).
engine = engine_in_modes()


def mixed_requests() -> list[GenerationRequest]:
    """Four users: different prompts, prompt lengths, rates, totals, texts and sampling settings."""
    return [
        GenerationRequest(noise(1, 0.5, 32000, 1), 32000, 1.5, text="rock", seed=1),
        GenerationRequest(noise(1, 1.2, 32000, 2), 32000, 2.0, text="a much longer jazz description",
                          seed=2, temperature=0.7, top_k=50),
        GenerationRequest(noise(2, 0.31, 44100, 3), 44100, 1.05, seed=3, temperature=1.3, top_k=0, top_p=0.9),
        GenerationRequest(noise(1, 0.8, 16000, 4), 16000, 1.7, text="lofi", seed=4, top_k=10, cfg_coef=5.0),
    ]


def audio_of(outcomes: list) -> list[np.ndarray]:
    assert all(isinstance(o, GenerationResult) for o in outcomes), outcomes
    return [o.audio for o in outcomes]


def test_heterogeneous_batch_returns_exact_lengths_in_one_call(engine):
    requests = mixed_requests()
    steps: list[tuple[int, int]] = []
    outcomes = engine.generate_each(requests, on_step=lambda step, total: steps.append((step, total)))
    for request, audio in zip(requests, audio_of(outcomes)):
        assert audio.shape == (1, round(request.total_seconds * 32000))
        assert audio.dtype == np.float32 and np.all(np.isfinite(audio))
    # All four shared one generate call, run to the longest row:
    # row 2 has 1.2 s of prompt (60 frames) and 2.0 s total, 40 new frames;
    # row 0 has 25 prompt frames and 50 new ones: the longest.
    assert steps[-1] == (engine.max_new_tokens(50), engine.max_new_tokens(50))


def test_a_row_in_a_batch_sounds_exactly_as_it_does_alone(engine):
    # Per-row generators, per-row positions and per-row ends make each row
    # independent of its neighbours (measured bit-identical on CPU float32).
    requests = mixed_requests()
    batched = audio_of(engine.generate_each(requests))
    for request, in_batch in zip(requests, batched):
        (alone,) = audio_of(engine.generate_each([request]))
        np.testing.assert_array_equal(in_batch, alone)


def test_same_batch_and_seeds_give_the_same_audio_and_a_seed_changes_only_its_row(engine):
    requests = mixed_requests()
    first = audio_of(engine.generate_each(requests))
    again = audio_of(engine.generate_each(requests))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    requests[1].seed = 99
    changed = audio_of(engine.generate_each(requests))
    assert not np.array_equal(changed[1], first[1])
    for i in (0, 2, 3):
        np.testing.assert_array_equal(changed[i], first[i])


def test_invalid_row_fails_alone(engine):
    requests = mixed_requests()[:3]
    requests.insert(1, GenerationRequest(noise(1, 1.0, 32000), 32000, 0.5))  # total shorter than prompt
    requests.append(GenerationRequest(noise(1, 0.5, 32000), 32000, 1.0, temperature=0))
    outcomes = engine.generate_each(requests)
    assert isinstance(outcomes[1], ValueError) and "total_seconds" in str(outcomes[1])
    assert isinstance(outcomes[4], ValueError) and "temperature" in str(outcomes[4])
    valid = [r for i, r in enumerate(requests) if i not in (1, 4)]
    for request, result in zip(valid, audio_of([outcomes[0], outcomes[2], outcomes[3]])):
        np.testing.assert_array_equal(result, audio_of(engine.generate_each([request]))[0])
    # generate() keeps raising the first error, before running anything.
    with pytest.raises(ValueError, match="total_seconds"):
        engine.generate(requests)


def test_a_row_that_breaks_the_batch_is_retried_alone_and_fails_alone(engine):
    requests = mixed_requests()[:3]
    # A wrong type that passes validation blows up inside generate, failing the whole call.
    requests[1].top_k = 2.5
    outcomes = engine.generate_each(requests)
    assert isinstance(outcomes[1], TypeError)
    assert outcomes[1].__traceback__ is None  # no frames (and their tensors) kept alive
    for i in (0, 2):
        np.testing.assert_array_equal(outcomes[i].audio, audio_of(engine.generate_each([requests[i]]))[0])


def test_a_failing_callback_fails_only_its_row(engine):
    requests = mixed_requests()[:2]

    def broken_progress(step: int, total: int) -> None:
        if step == 4:
            raise ConnectionError("redis went away")

    requests[0].on_progress = broken_progress
    outcomes = engine.generate_each(requests)
    assert isinstance(outcomes[0], ConnectionError)
    assert isinstance(outcomes[1], GenerationResult)


def test_canceling_one_row_leaves_the_others_complete_and_unchanged(engine):
    requests = mixed_requests()
    reference = audio_of(engine.generate_each(requests))
    progress: list[int] = []
    requests[2].on_progress = lambda step, total: progress.append(step)
    requests[2].should_stop = lambda: len(progress) >= 5
    outcomes = engine.generate_each(requests)
    assert isinstance(outcomes[2], GenerationCanceled)
    assert progress == [1, 2, 3, 4, 5]  # canceled at the step it asked, nothing reported after
    for i in (0, 1, 3):
        np.testing.assert_array_equal(outcomes[i].audio, reference[i])
    with pytest.raises(GenerationCanceled):
        engine.generate(requests)


def test_when_every_row_is_canceled_the_call_stops_early(engine):
    requests = mixed_requests()
    steps: list[int] = []
    for request in requests:
        request.should_stop = lambda: len(steps) >= 3
    outcomes = engine.generate_each(requests, on_step=lambda step, total: steps.append(step))
    assert all(isinstance(o, GenerationCanceled) for o in outcomes)
    assert steps == [1, 2, 3]


def test_a_row_asking_to_stop_before_the_start_never_runs(engine):
    requests = mixed_requests()[:2]
    requests[0].should_stop = lambda: True
    outcomes = engine.generate_each(requests)
    assert isinstance(outcomes[0], GenerationCanceled)
    np.testing.assert_array_equal(outcomes[1].audio, audio_of(engine.generate_each([requests[1]]))[0])


def test_progress_is_per_row_monotonic_and_reaches_each_total(engine):
    requests = mixed_requests()
    calls: dict[int, list[tuple[int, int]]] = {i: [] for i in range(len(requests))}
    for i, request in enumerate(requests):
        request.on_progress = lambda step, total, i=i: calls[i].append((step, total))
    engine.generate_each(requests)
    totals = {total for row in calls.values() for _, total in row}
    assert len(totals) > 1  # the rows really have different totals
    for row in calls.values():
        total = row[0][1]
        assert row == [(step, total) for step in range(1, total + 1)]


def test_guided_and_unguided_tasks_share_the_batch_and_sound_as_alone(engine):
    # A task without guidance holds one row, a guided one two; they decode in the same passes.
    requests = mixed_requests()[:3]
    requests[1].cfg_coef = 1.0
    outcomes = engine.generate_each(requests)
    for request, result in zip(requests, audio_of(outcomes)):
        np.testing.assert_array_equal(result, audio_of(engine.generate_each([request]))[0])


def test_stereo_model_batches_with_exact_lengths_and_alone_equality(stereo_engine):
    requests = mixed_requests()[:3]
    batched = audio_of(stereo_engine.generate_each(requests))
    for request, audio in zip(requests, batched):
        assert audio.shape == (2, round(request.total_seconds * 32000))
        np.testing.assert_array_equal(audio, audio_of(stereo_engine.generate_each([request]))[0])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # gc.get_objects() touches deprecated torch aliases
def test_no_tensors_outlive_a_call(engine):
    def is_tensor(o) -> bool:
        try:
            return isinstance(o, torch.Tensor)
        except ReferenceError:  # a weakref.proxy whose referent is gone (left by earlier tests)
            return False

    def tensors() -> set[int]:
        gc.collect()
        return {id(o) for o in gc.get_objects() if is_tensor(o)}

    engine.generate_each(mixed_requests())  # warm: lazily built buffers exist from here on
    before = tensors()
    for change in (lambda r: None, lambda r: setattr(r[1], "top_k", 2.5),
                   lambda r: setattr(r[0], "should_stop", lambda: True)):
        requests = mixed_requests()
        change(requests)
        outcomes = engine.generate_each(requests)
        del outcomes, requests
        assert tensors() <= before
