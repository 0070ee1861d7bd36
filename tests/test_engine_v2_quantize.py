"""Engine v2's int8 decoder: drift against float32, and int8's effect on the engine's guarantees.

The engine guarantee tests (scheduler, batching, loop, streaming, melody) run in float32 and in
``int8-rows`` too (``tests.conftest.ENGINE_MODES``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_engine_batching import mixed_requests
from tests.test_engine_v2_step import a_task, make_cache, text_projection
from worker.engine.quantize import (
    CPU_DEFAULT,
    Int8Linear,
    RowScaledInt8Linear,
    _concatenated,
    drift,
    kv_dtype,
    onednn_int8_available,
    quantize_decoder,
    resolve,
)
from worker.engine import rowquant
from worker.engine.kv_cache import KVCache
from worker.engine.scheduler import Scheduler
from worker.engine.step import DecoderStep


KERNELS = ["onednn", "dynamic"] if onednn_int8_available() else ["dynamic"]


def logits_along(model, decoder, ids: torch.Tensor, states: torch.Tensor, prompt_positions: int,
                 cache_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Next-token logits at every position from the prompt's end on: (positions, K, vocab)."""
    cache = make_cache(model, rows=1)
    if cache_dtype != torch.float32:
        config = model.decoder.config
        cache = KVCache(layers=config.num_hidden_layers, rows=1, heads=config.num_attention_heads,
                        head_dim=config.hidden_size // config.num_attention_heads, max_positions=64,
                        max_text=16, dtype=cache_dtype)
    step = DecoderStep(decoder, cache, text_projection(model))
    with torch.inference_mode():
        step.set_text(slice(0, 1), states, guided=False)
        out = [step.prefill(slice(0, 1), ids[None, :, :prompt_positions], 0)]
        for position in range(prompt_positions, ids.shape[1] - 1):
            out.append(step.decode(slice(0, 1), ids[:, position][None], torch.tensor([position])))
    return torch.cat(out)


@pytest.mark.parametrize("mode", ["int8-weight-only", "int8", "int8-rows"])
def test_int8_drift_from_float32_is_small(engine, mode):
    model = engine.model
    ids, states = a_task(model, 10, 30, [5, 6, 7, 1], seed=4)
    reference = logits_along(model, model.decoder, ids, states, 11)
    quantized = quantize_decoder(model.decoder, mode)
    measured = drift(reference, logits_along(model, quantized, ids, states, 11))
    # Loose bounds (the tiny random model's distributions are nearly flat); bench/engine_v2.py
    # measures the same on musicgen-small's architecture.
    assert measured["mean_kl"] < 1e-3
    assert measured["top1_agreement"] > 0.8
    assert drift(reference, reference) == {"mean_kl": 0.0, "top1_agreement": 1.0}
    # The engine's own decoder is untouched (a quantized copy, with fused q/k/v and heads).
    assert type(model.decoder.model.decoder.layers[0].fc1) is torch.nn.Linear
    assert not hasattr(model.decoder, "fused_lm_head") and hasattr(quantized, "fused_lm_head")


@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, torch.float16])
def test_a_narrower_kv_cache_drifts_little_from_float32(engine, cache_dtype):
    model = engine.model
    ids, states = a_task(model, 10, 30, [5, 6, 7, 1], seed=4)
    reference = logits_along(model, model.decoder, ids, states, 11)
    narrow = logits_along(model, model.decoder, ids, states, 11, cache_dtype)
    assert not torch.equal(narrow, reference)  # the cache really is narrower
    measured = drift(reference, narrow)
    assert abs(measured["mean_kl"]) < 1e-4 and measured["top1_agreement"] > 0.9
    # With int8-rows' decoder as served (SEGUE_KV_CACHE=auto).
    quantized = quantize_decoder(model.decoder, "int8-rows")
    both = drift(reference, logits_along(model, quantized, ids, states, 11, torch.bfloat16))
    assert both["mean_kl"] < 1e-3 and both["top1_agreement"] > 0.8


def test_int8_linear_is_close_to_the_float_layer_and_row_independent():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=True)
    int8 = Int8Linear(linear)
    x = torch.randn(5, 3, 64)
    with torch.inference_mode():
        expected, got = linear(x), int8(x)
        assert got.shape == expected.shape and got.dtype == torch.float32
        assert (got - expected).abs().max() < 0.02 * expected.abs().max()
        # No statistic is shared across rows: a row alone gives exactly what it gives in the batch.
        assert torch.equal(int8(x[:1]), got[:1])


@pytest.mark.parametrize("kernel", KERNELS)
def test_row_scaled_int8_is_row_independent_bit_for_bit_and_closer_than_per_call_int8(kernel):
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 192, bias=True)
    rows = RowScaledInt8Linear(linear, kernel)
    assert rows.kernel == kernel
    # Rows of very different magnitudes: per-call int8 would quantize the small ones coarsely.
    x = torch.randn(8, 1, 256) * torch.logspace(-2, 1, 8)[:, None, None]
    with torch.inference_mode():
        expected, got = linear(x), rows(x)
        assert got.shape == expected.shape and got.dtype == torch.float32
        for row in range(8):  # alone, in pairs and in the whole batch: the same bits
            assert torch.equal(rows(x[row : row + 1]), got[row : row + 1])
        assert torch.equal(rows(x[2:6]), got[2:6])
        per_call = quantize_decoder_free_int8(linear)(x)
        own_error = ((got - expected).norm(dim=-1) / expected.norm(dim=-1)).max()
        per_call_error = ((per_call - expected).norm(dim=-1) / expected.norm(dim=-1)).max()
        assert own_error < 0.05 and own_error < per_call_error


def quantize_decoder_free_int8(linear: torch.nn.Linear) -> torch.nn.Module:
    """torch's per-call dynamic int8 of one layer (what SEGUE_QUANTIZE=int8 runs)."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)


@pytest.mark.parametrize("kernel", KERNELS)
def test_fused_projections_compute_exactly_what_the_separate_layers_do(kernel):
    torch.manual_seed(1)
    parts = [torch.nn.Linear(64, 48, bias=False) for _ in range(3)]
    parts[1].weight.data *= 10  # per-output-channel weight scales: fusing shares none
    x = torch.randn(5, 1, 64)
    with torch.inference_mode():
        fused = RowScaledInt8Linear(_concatenated(parts), kernel)(x)
        assert torch.equal(fused, torch.cat([RowScaledInt8Linear(p, kernel)(x) for p in parts], dim=-1))


@pytest.mark.parametrize("shape", [(32, 96), (64, 48), (1024, 3072), (4096, 1024)])
def test_onednn_rows_are_independent_at_every_row_count(shape):
    """oneDNN picks other kernels for other row counts; small layers once differed in their last bits."""
    if "onednn" not in KERNELS:
        pytest.skip("this torch has no oneDNN int8 linear")
    torch.manual_seed(2)
    linear = torch.nn.Linear(*shape, bias=False)
    rows = RowScaledInt8Linear(linear, "onednn")
    x = torch.randn(33, shape[0])
    with torch.inference_mode():
        whole = rows(x)
        for count in (1, 2, 3, 5, 16, 17):
            assert torch.equal(rows(x[:count]), whole[:count]), count
            assert torch.equal(rows(x[5 : 5 + count]), whole[5 : 5 + count]), count


def test_compiled_row_quantization_maps_each_row_onto_0_127_and_back():
    """worker.engine.rowquant: the levels oneDNN multiplies, and the exact map back of their product."""
    x = torch.tensor([[-2.0, 0.0, 1.0, 6.0], [3.0, 3.0, 3.0, 3.0], [0.5, -0.25, 0.125, 0.0]])
    levels, lows, steps = rowquant.quantize_rows(x)
    assert levels.dtype == torch.uint8
    assert levels[0].tolist() == [0, 32, 48, 127] and levels[1].tolist() == [0, 0, 0, 0]  # 2/8 * 127 = 31.75
    assert levels[2].min() == 0 and levels[2].max() == 127
    np.testing.assert_array_equal(lows, [-2.0, 3.0, -0.25])
    np.testing.assert_allclose(steps, [8 / 127, 1e-30 / 127, 0.75 / 127], rtol=1e-6)
    dequantized = torch.from_numpy(lows[:, None] + steps[:, None] * levels.float().numpy())
    assert (dequantized - x).abs().max() <= 0.5 * 8 / 127 + 1e-6
    # map back: low * rowsum(W) + step * (W levels) + bias; with W the identity, the dequantized rows + bias
    out = rowquant.map_back(levels.float(), lows, steps, np.ones(4, np.float32), np.full(4, 0.5, np.float32))
    torch.testing.assert_close(out, dequantized + 0.5, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_norm_and_the_residual_taken_into_a_layers_pass_change_nothing_that_matters(kernel):
    """``normed`` (LayerNorm inside the quantizing pass) and ``plus`` (the residual added when mapping back)."""
    torch.manual_seed(4)
    linear = torch.nn.Linear(64, 48, bias=True)
    rows = RowScaledInt8Linear(linear, kernel)
    norm = torch.nn.LayerNorm(64)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.2, 0.2)
    x = torch.randn(5, 1, 64) * torch.logspace(-2, 1, 5)[:, None, None] + 3.0
    residual = torch.randn(5, 1, 48)
    with torch.inference_mode():
        # the residual: exactly `residual + layer(x)` (float addition commutes)
        assert torch.equal(rows.plus(x, residual), residual + rows(x))
        # the norm: torch's LayerNorm rounds in another order, so a level may move by one now and then
        fused, separate, exact = rows.normed(x, norm), rows(norm(x)), linear(norm(x))
        assert fused.shape == separate.shape == (5, 1, 48)
        assert ((fused - separate).norm(dim=-1) / exact.norm(dim=-1)).max() < 0.02
        assert ((fused - exact).norm(dim=-1) / exact.norm(dim=-1)).max() < 0.05
        for row in range(5):  # each row from itself alone
            assert torch.equal(rows.normed(x[row:row + 1], norm), fused[row:row + 1])
            assert torch.equal(rows.plus(x[row:row + 1], residual[row:row + 1]), rows.plus(x, residual)[row:row + 1])
        # a norm the pass cannot take in is applied as it is
        identity = torch.nn.Identity()
        assert torch.equal(rows.normed(x, identity), rows(x))


def test_the_decoder_step_gives_the_same_logits_with_the_passes_fused_as_apart(tiny_model):
    """DecoderStep takes norms and residuals into int8-rows layers: the step's logits stay what the
    layers give one by one (within the norm's rounding), alone and batched alike."""
    from transformers import MusicgenForConditionalGeneration

    from worker.engine import step as step_module

    model = MusicgenForConditionalGeneration.from_pretrained(tiny_model).eval()
    decoder = quantize_decoder(model.decoder, "int8-rows")
    ids = torch.randint(0, model.decoder.config.vocab_size, (2, model.decoder.config.num_codebooks, 6),
                        generator=torch.Generator().manual_seed(9))

    def logits_of(norm_then, plus):
        saved = step_module._norm_then, step_module._plus
        step_module._norm_then, step_module._plus = norm_then, plus
        try:
            cache = make_cache(model, rows=2)
            step = DecoderStep(decoder, cache, text_projection(model))
            with torch.inference_mode():
                step.set_text(slice(0, 2), torch.zeros(3, model.text_encoder.config.hidden_size), guided=True)
                return step.prefill(slice(0, 2), ids, 0)
        finally:
            step_module._norm_then, step_module._plus = saved

    fused = logits_of(step_module._norm_then, step_module._plus)
    apart = logits_of(lambda norm, linear, hidden: linear(norm(hidden)),
                      lambda linear, x, residual: residual + linear(x))
    assert fused.shape == apart.shape
    assert drift(apart, fused)["top1_agreement"] >= 0.95


def test_the_two_int8_rows_kernels_agree_and_a_copy_computes_the_same():
    """oneDNN (x86) and torch's dynamic kernel (the fallback elsewhere) quantize the same way."""
    import copy

    if "onednn" not in KERNELS:
        pytest.skip("this torch has no oneDNN int8 linear")
    torch.manual_seed(3)
    linear = torch.nn.Linear(256, 128, bias=True)
    x = torch.randn(6, 256) * torch.logspace(-2, 1, 6)[:, None]
    with torch.inference_mode():
        onednn, dynamic = RowScaledInt8Linear(linear, "onednn"), RowScaledInt8Linear(linear, "dynamic")
        a, b, expected = onednn(x), dynamic(x), linear(x)
        scale = expected.norm(dim=-1)
        assert ((a - expected).norm(dim=-1) / scale).max() < 0.05
        assert ((a - b).norm(dim=-1) / scale).max() < 0.05
        clone = copy.deepcopy(onednn)  # the packed weight is opaque to deepcopy: packed again
        assert clone.packed is not onednn.packed and torch.equal(clone(x), a)


def test_the_kv_cache_is_bfloat16_under_a_quantized_cpu_decoder_only():
    assert kv_dtype("auto", "cpu", True, torch.float32) == torch.bfloat16
    assert kv_dtype("auto", "cpu", False, torch.float32) == torch.float32
    assert kv_dtype("auto", "cuda", False, torch.float16) == torch.float16
    assert kv_dtype("float32", "cpu", True, torch.float32) == torch.float32
    assert kv_dtype("float16", "cpu", False, torch.float32) == torch.float16


def test_auto_is_the_cpu_default_for_real_models_on_cpus_only():
    # openvino-int8 on x86-64, int8-rows elsewhere (tests/test_engine_openvino.py)
    assert CPU_DEFAULT in ("openvino-int8", "int8-rows")
    assert resolve("auto", "cpu", 600_000_000) == CPU_DEFAULT
    assert resolve("auto", "cpu", 4_000_000) == ""  # the tiny test models
    assert resolve("auto", "cuda", 600_000_000) == ""
    assert resolve("int8", "cpu", 4_000_000) == "int8"


@pytest.mark.parametrize("mode", ["int8-weight-only", "int8-rows"])
def test_with_int8_weights_a_task_still_sounds_the_same_alone_and_batched(engine, mode):
    scheduler = Scheduler(engine, max_rows=8, max_seconds=4.0, max_text=32,
                          decoder=quantize_decoder(engine.model.decoder, mode))
    requests = mixed_requests()
    batched = [o.audio for o in scheduler.run(requests)]
    for request, audio in zip(requests, batched):
        (alone,) = scheduler.run([request])
        np.testing.assert_array_equal(audio, alone.audio)


def test_unknown_mode_is_refused(engine):
    with pytest.raises(ValueError, match="unknown quantization"):
        quantize_decoder(engine.model.decoder, "int4")
