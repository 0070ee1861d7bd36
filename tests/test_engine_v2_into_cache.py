"""int8-rows' fused passes around attention over a bfloat16 cache, and the batching of cross-attention.

A fused q/k/v layer maps its product back straight into bfloat16 and writes its keys and values into
the cache itself (``rowquant.map_back_into_cache``); the output projections take the attention's
bfloat16 output as it is; cross-attention runs once per run of rows with one text length, whatever
their positions. None of it may change a bit of what the step computes, alone or batched."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from torch.nn.functional import scaled_dot_product_attention

from tests.test_engine_v2_step import a_task, text_projection
from worker.engine import rowquant
from worker.engine.kv_cache import KVCache
from worker.engine.quantize import RowScaledInt8Linear, onednn_int8_available, quantize_decoder
from worker.engine.step import DecoderStep

onednn_only = pytest.mark.skipif(not onednn_int8_available(), reason="this torch has no oneDNN int8 linear")


@numba.njit(cache=False)
def _rounded(bits):
    out = np.empty(bits.shape[0], dtype=np.uint16)
    for i in range(bits.shape[0]):
        out[i] = rowquant._bfloat16(bits[i])
    return out


def test_the_compiled_bfloat16_rounding_is_torchs_bit_for_bit():
    rng = np.random.default_rng(5)
    values = np.concatenate([
        rng.standard_normal(20_000).astype(np.float32) * np.float32(10.0) ** rng.integers(-40, 38, 20_000),
        np.array([0.0, -0.0, np.inf, -np.inf, np.finfo(np.float32).max, -np.finfo(np.float32).max,
                  np.finfo(np.float32).tiny, 1e-45, -1e-45, 1.0, -1.0], dtype=np.float32),
    ]).astype(np.float32)
    bits = values.view(np.uint32).copy()
    # exact ties (the 16 dropped bits 0x8000) above an even and an odd kept part, and just either side
    ties = (rng.integers(0x0080, 0x7F00, 4_000, dtype=np.uint32) << np.uint32(16))
    bits = np.concatenate([bits, ties | 0x8000, ties | 0x18000, ties | 0x7FFF, ties | 0x8001,
                           np.array([0x7FC00000, 0x7F800001, 0xFFFFFFFF], dtype=np.uint32)])
    expected = torch.from_numpy(bits.view(np.float32).copy()).to(torch.bfloat16).view(torch.uint16).numpy()
    got = _rounded(bits)
    finite = ~np.isnan(bits.view(np.float32))
    np.testing.assert_array_equal(got[finite], expected[finite])
    # NaN stays NaN (torch's own scalar conversion gives 0x7FC0; its vector one may keep the payload)
    assert np.isnan(torch.from_numpy(got[~finite].copy()).view(torch.bfloat16).float().numpy()).all()


def test_bfloat16_rows_quantize_exactly_as_they_do_widened_to_float32():
    x = (torch.randn(9, 96) * torch.logspace(-3, 2, 9)[:, None] + 1.5).to(torch.bfloat16)
    narrow, wide = rowquant.quantize_rows(x), rowquant.quantize_rows(x.float())
    assert torch.equal(narrow[0], wide[0])
    np.testing.assert_array_equal(narrow[1], wide[1])
    np.testing.assert_array_equal(narrow[2], wide[2])
    # a non-contiguous view (an attention output merged back) reads the same
    strided = x.view(9, 4, 24).transpose(0, 1).transpose(0, 1)
    assert torch.equal(rowquant.quantize_rows(strided.reshape(9, 96))[0], wide[0])


@onednn_only
@pytest.mark.parametrize("rows", [1, 2, 5, 16, 17])
def test_a_fused_qkv_layer_writes_into_the_cache_what_the_plain_path_writes(rows):
    torch.manual_seed(rows)
    heads, head_dim, positions_held, first = 4, 16, 40, 3
    width = heads * head_dim
    layer = RowScaledInt8Linear(torch.nn.Linear(width, 3 * width, bias=True), "onednn")
    norm = torch.nn.LayerNorm(width)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(rows, 1, width) * 3
    positions = torch.randint(0, positions_held, (rows,))
    shape = (first + rows + 2, heads, positions_held, head_dim)
    keys, values = torch.randn(shape).bfloat16(), torch.randn(shape).bfloat16()
    expected_keys, expected_values = keys.clone(), values.clone()
    with torch.inference_mode():
        qkv = layer.normed(x, norm).view(rows, 3, heads, head_dim)
        cache_rows = torch.arange(first, first + rows)
        expected_keys[cache_rows, :, positions] = qkv[:, 1].to(torch.bfloat16)
        expected_values[cache_rows, :, positions] = qkv[:, 2].to(torch.bfloat16)
        query = layer.normed_into_cache(x, norm, keys.view(torch.uint16).numpy(), values.view(torch.uint16).numpy(),
                                        first, positions.numpy())
    assert query.dtype == torch.bfloat16 and query.shape == (rows, width)
    assert torch.equal(query, qkv[:, 0].reshape(rows, width).to(torch.bfloat16))
    assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)  # and nothing else moved
    # a layer that cannot (torch's dynamic kernel) says so, and the step then runs the plain path
    dynamic = RowScaledInt8Linear(torch.nn.Linear(width, 3 * width), "dynamic")
    assert getattr(dynamic, "normed_into_cache")(x, norm, None, None, 0, None) is None


def test_cross_attention_computes_each_row_alone_whatever_the_batch():
    """What batching cross-attention across tasks at different positions relies on: torch's CPU kernel gives
    a row's output bit for bit the same in a call of any batch size (shapes of musicgen-small)."""
    torch.manual_seed(0)
    for text in (1, 7, 20, 64):
        q = torch.randn(16, 16, 1, 64).bfloat16()
        k, v = torch.randn(16, 16, text, 64).bfloat16(), torch.randn(16, 16, text, 64).bfloat16()
        mask = torch.zeros(16, 1, 1, text, dtype=torch.bfloat16)
        mask[1::2] = torch.finfo(torch.bfloat16).min  # the unconditional rows: no text
        everyone = scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.125)
        for begin, end in ((0, 2), (2, 4), (14, 16), (0, 1), (3, 8)):
            alone = scaled_dot_product_attention(q[begin:end], k[begin:end], v[begin:end], attn_mask=mask[begin:end],
                                                 scale=0.125)
            assert torch.equal(alone, everyone[begin:end])


@onednn_only
def test_the_step_with_the_fused_passes_gives_the_plain_steps_logits_and_cache_bit_for_bit(tiny_model):
    """Four guided tasks: the first two level (one self-attention call), the last two at different
    positions with texts of one length (one cross-attention call), the second with a shorter text:
    every decoding step's logits and the whole cache, with the passes fused and without."""
    from transformers import MusicgenForConditionalGeneration

    model = MusicgenForConditionalGeneration.from_pretrained(tiny_model).eval()
    decoder = quantize_decoder(model.decoder, "int8-rows")
    config = model.decoder.config
    tasks = [a_task(model, 4, 8, tokens, seed) for seed, tokens in enumerate([[5, 6, 7], [9], [5, 6, 8], [3, 4, 1]])]
    starts = [4, 4, 7, 2]

    def run(fused: bool):
        cache = KVCache(layers=config.num_hidden_layers, rows=10, heads=config.num_attention_heads,
                        head_dim=config.hidden_size // config.num_attention_heads, max_positions=32, max_text=8,
                        dtype=torch.bfloat16)
        step = DecoderStep(decoder, cache, text_projection(model))
        if not fused:
            step._qkv_into_cache = lambda rows, positions: None
        logits = []
        with torch.inference_mode():
            for index, ((ids, states), start) in enumerate(zip(tasks, starts)):
                rows = slice(2 * index, 2 * index + 2)
                step.set_text(rows, states, guided=True)
                step.prefill(rows, ids[None, :, :start].expand(2, -1, -1), 0)
            for offset in range(3):
                positions = torch.tensor([s + offset for s in starts for _ in range(2)])
                ids = torch.stack([tasks[i][0][:, starts[i] + offset] for i in range(4) for _ in range(2)])
                if fused:
                    assert step._qkv_into_cache(slice(0, 8), positions) is not None
                logits.append(step.decode(slice(0, 8), ids, positions))
        return logits, cache

    (fused_logits, fused_cache), (plain_logits, plain_cache) = run(True), run(False)
    for a, b in zip(fused_logits, plain_logits):
        assert torch.equal(a, b)
    assert torch.equal(fused_cache.keys, plain_cache.keys) and torch.equal(fused_cache.values, plain_cache.values)


def test_the_fused_passes_stay_off_where_they_cannot_run(tiny_model):
    """A float32 cache, or a decoder that is not quantized: the plain path, nothing written from numba."""
    from transformers import MusicgenForConditionalGeneration

    model = MusicgenForConditionalGeneration.from_pretrained(tiny_model).eval()
    config = model.decoder.config

    def cache(dtype):
        return KVCache(layers=config.num_hidden_layers, rows=2, heads=config.num_attention_heads,
                       head_dim=config.hidden_size // config.num_attention_heads, max_positions=16, max_text=8,
                       dtype=dtype)

    positions = torch.tensor([3, 3])
    assert cache(torch.float32).host_bits() is None
    assert DecoderStep(model.decoder, cache(torch.bfloat16))._qkv_into_cache(slice(0, 2), positions) is None
    if onednn_int8_available():
        quantized = quantize_decoder(model.decoder, "int8-rows")
        assert DecoderStep(quantized, cache(torch.float32))._qkv_into_cache(slice(0, 2), positions) is None
        assert DecoderStep(quantized, cache(torch.bfloat16))._qkv_into_cache(slice(0, 2), positions) is not None
