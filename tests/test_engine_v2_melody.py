"""The scheduler with a melody model (conditioning prefix, no cross-attention): alone, batched, joining."""

from __future__ import annotations

import numpy as np

from tests.conftest import CACHE, engine_in_modes, noise
from worker.engine import GenerationRequest, GenerationResult
from worker.engine.scheduler import Scheduler
from worker.models.melody_engine import MelodyEngine
from worker.testing.random_model_melody import build_tiny_melody

SR = 32000


# In float32 and in int8-rows (tests.conftest.ENGINE_MODES).
melody = engine_in_modes(lambda mode: MelodyEngine(str(build_tiny_melody(CACHE / "tiny-melody")), device="cpu",
                                                   quantize=mode), name="melody")


def requests() -> list[GenerationRequest]:
    return [
        GenerationRequest(noise(1, 0.5, SR, seed=1), SR, 1.2, text="jazz drums", seed=1, melody_conditioning=True),
        GenerationRequest(noise(1, 0.8, SR, seed=2), SR, 1.5, seed=2, top_k=50),
        GenerationRequest(noise(2, 0.4, 44100, seed=3), 44100, 1.0, text="lofi", seed=3, cfg_coef=1.0,
                          melody_conditioning=True),
    ]


def test_melody_tasks_sound_as_alone_alone_batched_and_joining(melody):
    reference = [o.audio for o in melody.generate_each(requests())]
    scheduler = Scheduler(melody, max_rows=6, max_seconds=4.0, max_text=32, prefill_chunk=64)
    for request, expected in zip(requests(), reference):
        (alone,) = scheduler.run([request])
        assert isinstance(alone, GenerationResult)
        np.testing.assert_array_equal(alone.audio, expected)
    first = scheduler.submit(requests()[0], 0)
    for _ in range(8):  # the 235-position chroma prefix and the prompt, in chunks, then decoding
        scheduler.step()
    assert first.phase == "decoding" and first.drawn > 0
    later = [scheduler.submit(r, i) for i, r in enumerate(requests()[1:], start=1)]
    scheduler.run_until_idle()
    for task, expected in zip([first, *later], reference):
        np.testing.assert_array_equal(task.outcome.audio, expected)
