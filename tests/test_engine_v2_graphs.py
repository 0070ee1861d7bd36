"""Engine v2's fixed-shape bucketed decoding step (CUDA graphs on GPUs; eager here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import MusicgenForConditionalGeneration

from tests.test_engine_batching import mixed_requests
from tests.test_engine_v2_step import a_task, make_cache, text_projection
from worker.engine.graphs import BucketedDecode
from worker.engine.scheduler import Scheduler
from worker.engine.step import DecoderStep


@pytest.fixture(scope="module")
def model(tiny_model):
    return MusicgenForConditionalGeneration.from_pretrained(
        tiny_model, attn_implementation={"decoder": "sdpa", "text_encoder": "sdpa"}).eval()


def prefilled(model):
    """Rows 0-1: a guided task ready to decode; row 2: an unguided one; row 3: a task mid-prefill."""
    cache = make_cache(model, rows=6)
    step = DecoderStep(model.decoder, cache, text_projection(model))
    a_ids, a_text = a_task(model, 6, 8, [5, 6, 1], seed=1)
    b_ids, b_text = a_task(model, 4, 8, [7, 1], seed=2)
    c_ids, c_text = a_task(model, 9, 8, [8, 1], seed=3)
    with torch.inference_mode():
        step.set_text(slice(0, 2), a_text, guided=True)
        step.set_text(slice(2, 3), b_text, guided=False)
        step.set_text(slice(3, 4), c_text, guided=False)
        step.prefill(slice(0, 2), a_ids[None, :, :7].repeat(2, 1, 1), 0)
        step.prefill(slice(2, 3), b_ids[None, :, :5], 0)
        step.prefill(slice(3, 4), c_ids[None, :, :4], 0)  # 4 of its 10 prompt positions so far
    ids = torch.stack([a_ids[:, 7], a_ids[:, 7], b_ids[:, 5]])
    return step, ids, torch.tensor([7, 7, 5], device=model.device)


def test_a_bucketed_step_gives_the_dynamic_steps_logits_and_leaves_other_rows_alone(model):
    dynamic_step, ids, positions = prefilled(model)
    bucketed_step, _, _ = prefilled(model)
    bucketed = BucketedDecode(bucketed_step, capture=False)
    assert bucketed.bucket(3) == 4 and bucketed.buckets == [1, 2, 4, 6]
    untouched = bucketed_step.cache.keys[:, 3, :, :4].clone()
    with torch.inference_mode():
        expected = dynamic_step.decode(slice(0, 3), ids, positions)
        got = bucketed(slice(0, 3), ids, positions)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # Row 3 (padding of the bucket) belongs to a task mid-prefill: its cached positions are intact.
    assert torch.equal(bucketed_step.cache.keys[:, 3, :, :4], untouched)
    # What the rows wrote is what the dynamic step wrote.
    torch.testing.assert_close(bucketed_step.cache.keys[:, :3, :, :8], dynamic_step.cache.keys[:, :3, :, :8],
                               rtol=0, atol=1e-6)


def test_the_scheduler_with_fixed_shape_steps_sounds_as_alone(engine):
    scheduler = Scheduler(engine, max_rows=8, max_seconds=4.0, max_text=32, static_steps=True)
    assert scheduler.bucketed is not None and not scheduler.bucketed.capture  # no CUDA here: eager
    requests = mixed_requests()
    for audio, request in zip(scheduler.run(requests), requests):
        np.testing.assert_array_equal(audio.audio, engine.generate_each([request])[0].audio)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_captured_graphs_replay_the_eager_step(tiny_model):
    gpu = MusicgenForConditionalGeneration.from_pretrained(tiny_model).to("cuda").eval()
    eager_step, ids, positions = prefilled(gpu)
    graph_step, _, _ = prefilled(gpu)
    eager = BucketedDecode(eager_step, capture=False)
    graphs = BucketedDecode(graph_step, capture=True)
    with torch.inference_mode():
        for _ in range(3):
            expected = eager(slice(0, 3), ids, positions)
            got = graphs(slice(0, 3), ids, positions).clone()
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
            positions = positions + 1
    assert set(graphs.graphs) == {4}
