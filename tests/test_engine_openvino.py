"""SEGUE_QUANTIZE=openvino-int8: the compiled decoding step on a real tiny MusicGen, and its paged cache.

The engine guarantee tests (alone = batched = joining mid-run, cancel, failures, windows, melody,
streaming) run in this mode too (``tests.conftest.ENGINE_MODES``); these check the parts underneath."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
from transformers import MusicgenForConditionalGeneration

from worker.engine import delay
from worker.engine.kv_cache import KVCache
from worker.engine.openvino_step import OpenVinoStep, paged_cache_for
from worker.engine.paged_cache import PagedKVCache
from worker.engine.quantize import CPU_DEFAULT, drift, resolve
from worker.engine.step import DecoderStep


@pytest.fixture(scope="module")
def model(tiny_model):
    return MusicgenForConditionalGeneration.from_pretrained(str(tiny_model)).eval()


@pytest.fixture(scope="module")
def compiled(model):
    # Two threads whatever the machine: with more than one, PagedAttention splits a lone sequence's positions
    # across threads (the case the step must avoid); the tiny models' engines run on one.
    return OpenVinoStep.compiled(model.decoder, 2)


def _states(model, ids=(5, 6, 7, 1)):
    with torch.inference_mode():
        return model.text_encoder(input_ids=torch.tensor([list(ids)])).last_hidden_state[0]


def _step(model, compiled, rows: int, positions: int = 64) -> OpenVinoStep:
    config = model.decoder.config
    cache = paged_cache_for(compiled, layers=config.num_hidden_layers, rows=rows, width=config.hidden_size,
                            max_positions=positions, max_text=16)
    return OpenVinoStep(model.decoder, cache, compiled)


def _prompt(model, length: int, seed: int) -> torch.Tensor:
    config = model.decoder.config
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (config.num_codebooks, length), generator=generator)


def test_a_lone_row_decodes_bit_for_bit_as_beside_others(model, compiled):
    """One unguided row alone, then the same row third in a batch whose other rows stand elsewhere. At 700
    positions on two threads PagedAttention splits a lone sequence across the threads; without the step's
    dummy neighbour these tokens' last bits differ (checked; whether they do depends on the values)."""
    length = 700
    ids = _prompt(model, length + 3, seed=1)
    states = _states(model)

    def run(step: OpenVinoStep, row: int, others: dict[int, int]) -> torch.Tensor:
        step.set_text(slice(row, row + 1), states, guided=False)
        step.prefill(slice(row, row + 1), ids[None, :, :length], 0)
        for other, other_length in others.items():
            step.set_text(slice(other, other + 1), _states(model, (9, 8, 1)), guided=False)
            step.prefill(slice(other, other + 1), _prompt(model, other_length, seed=other)[None], 0)
        rows = max([row, *others]) + 1
        positions = torch.tensor([others.get(r, length) for r in range(rows)])
        batch_ids = torch.stack([ids[:, length] if r == row else ids[:, r] for r in range(rows)])
        with torch.inference_mode():
            return step.decode(slice(0, rows), batch_ids, positions)[row]

    alone = run(_step(model, compiled, 1, length + 10), 0, {})
    batched = run(_step(model, compiled, 4, length + 10), 2, {0: 11, 1: 50, 3: 3})
    assert torch.equal(alone, batched)


def test_logits_stay_close_to_float32(model, compiled):
    """Prefill in chunks, then decoding steps with guidance: the compiled int8 graph against the eager float32
    step on the same tokens (the drift measure ``make bench`` reports for musicgen-small's architecture)."""
    config = model.decoder.config
    prompt = _prompt(model, 30, seed=2)
    ids = delay.build_sequence(prompt, 12, delay.delays(config.num_codebooks, config.audio_channels))
    ids[ids == -1] = 3
    states = _states(model)
    eager = DecoderStep(model.decoder, KVCache(layers=config.num_hidden_layers, rows=2,
                                               heads=config.num_attention_heads,
                                               head_dim=config.hidden_size // config.num_attention_heads,
                                               max_positions=64, max_text=16))
    compiled_step = _step(model, compiled, 2)
    logits = []
    with torch.inference_mode():
        for step in (eager, compiled_step):
            step.set_text(slice(0, 2), states, guided=True)
            out = [step.prefill(slice(0, 2), ids[None, :, :16].expand(2, -1, -1), 0),
                   step.prefill(slice(0, 2), ids[None, :, 16:30].expand(2, -1, -1), 16)]
            for p in range(30, ids.shape[1] - 1):
                out.append(step.decode(slice(0, 2), ids[:, p][None].expand(2, -1), torch.tensor([p, p])))
            logits.append(torch.cat(out))
    assert logits[1].shape == logits[0].shape
    assert not torch.equal(logits[0], logits[1])  # it is int8, not the float path by mistake
    measured = drift(logits[0], logits[1])
    assert measured["mean_kl"] < 1e-2, measured
    assert measured["top1_agreement"] > 0.9, measured
    # The unconditional row has no text at all: its logits differ from the conditional row's.
    assert not torch.allclose(logits[1][0::2], logits[1][1::2])


def test_a_row_at_the_scratch_position_leaves_its_cache_alone(model, compiled):
    step = _step(model, compiled, 2)
    step.set_text(slice(0, 2), _states(model), guided=True)
    with torch.inference_mode():
        step.prefill(slice(0, 2), _prompt(model, 20, seed=3)[None].expand(2, -1, -1), 0)
        before = [a.copy() for a in step.cache.keys + step.cache.values]
        ids = _prompt(model, 1, seed=4)[:, 0][None].expand(2, -1)
        step.decode(slice(0, 2), ids, torch.tensor([step.cache.scratch] * 2))
    after = step.cache.keys + step.cache.values
    scratch = step.cache.scratch_block
    assert all(np.array_equal(b[:scratch], a[:scratch]) for b, a in zip(before, after))
    assert any(not np.array_equal(b[scratch], a[scratch]) for b, a in zip(before, after))


def test_paged_cache_moves_rows_with_their_text():
    cache = PagedKVCache(layers=2, rows=4, width=8, max_positions=70, max_text=40, key_block=(2, 32, 4),
                         value_block=(2, 32, 4))
    assert (cache.row_blocks, cache.text_blocks) == (3, 2)
    rng = np.random.default_rng(0)
    for array in (*cache.keys, *cache.values, *cache.cross_keys, *cache.cross_values):
        array[:] = rng.standard_normal(array.shape)
    keys = [rng.standard_normal((2, 35, 8)).astype(np.float32) for _ in range(2)]
    values = [rng.standard_normal((2, 35, 8)).astype(np.float32) for _ in range(2)]
    cache.set_cross(slice(2, 4), keys, values, [35, 1])
    assert cache.text_lengths[2:] == [35, 1]
    np.testing.assert_array_equal(cache.last_text[2, 2], keys[1][0, 34])  # layer 1's keys: index 2
    # Position 33 of row 2's text: block 1 of the row, slot 1, (heads, head_dim) = the token split in two.
    np.testing.assert_array_equal(cache.cross_keys[0][2 * 2 + 1, :, 1], keys[0][0, 33].reshape(2, 4).astype(np.float16))
    rows_2_3 = [a[2 * 3:4 * 3].copy() for a in cache.keys]
    text_2_3 = [a[2 * 2:4 * 2].copy() for a in cache.cross_keys]
    last = cache.last_text[2:4].copy()
    cache.move(2, 1, 2, positions=64)  # overlapping: rows 2, 3 -> 1, 2
    for layer in range(2):  # the blocks holding the 64 positions: two of each row's three
        moved = cache.keys[layer][3:9].reshape(2, 3, 2, 32, 4)[:, :2]
        np.testing.assert_array_equal(moved, rows_2_3[layer].reshape(2, 3, 2, 32, 4)[:, :2])
        np.testing.assert_array_equal(cache.cross_keys[layer][1 * 2:3 * 2], text_2_3[layer])
    np.testing.assert_array_equal(cache.last_text[1:3], last)
    assert cache.text_lengths[1:3] == [35, 1]
    with pytest.raises(ValueError, match="40"):
        cache.set_cross(slice(0, 1), [k[:1, :1] for k in keys], [v[:1, :1] for v in values], [41])


def test_auto_picks_the_compiled_step_on_x86_cpus():
    expected = "openvino-int8" if platform.machine().lower() in ("x86_64", "amd64") else "int8-rows"
    assert CPU_DEFAULT == expected
    assert resolve("auto", "cpu", 300_000_000) == CPU_DEFAULT
    assert resolve("auto", "cpu", 1_000_000) == ""  # the tiny test models stay float
    assert resolve("auto", "cuda", 300_000_000) == ""


def test_the_settings_accept_the_mode():
    from backend.core.settings import _quantize

    assert _quantize(" OpenVINO-int8 ") == "openvino-int8"
    with pytest.raises(ValueError, match="openvino-int8"):
        _quantize("openvino")


def test_a_decoder_the_graph_cannot_build_is_a_clear_error(model):
    import copy

    from worker.engine.openvino_graph import GraphBuilder

    decoder = copy.deepcopy(model.decoder)
    decoder.config.activation_function = "relu"
    with pytest.raises(ValueError, match="GELU"):
        GraphBuilder(decoder)


def test_an_engine_in_the_mode_frees_the_float_weights_its_graph_holds(tiny_model):
    from worker.engine import MusicGenEngine

    engine = MusicGenEngine(str(tiny_model), device="cpu", quantize="openvino-int8")
    try:
        assert engine.quantize == "openvino-int8" and engine.compiled_decoder is not None
        assert engine.kv_dtype == torch.float16  # its paged cache's, whatever SEGUE_KV_CACHE says
        body = engine.decoder.model.decoder
        assert body.layers[0].fc1.weight.numel() == 0 and engine.decoder.lm_heads[0].weight.numel() == 0
        # What torch still runs: the embeddings and cross-attention's keys and values.
        assert body.embed_tokens[0].weight.numel() > 0 and body.layers[0].encoder_attn.k_proj.weight.numel() > 0
    finally:
        engine.close()
