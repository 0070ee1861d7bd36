"""Low precision for CPU workers: the decoder's Linear layers with int8 weights.

On CPUs a decoding step at small batch reads every decoder weight once;
int8 weights are a quarter of the bytes. Three ways, all measured by
``bench/engine_v2.py`` (the candidates we rejected, by
``bench/step_candidates.py``; figures in ``docs/cpu-engine.md``):

- ``int8-rows`` (the default on CPU workers, ``auto``): torch's dynamic int8
  kernel (fbgemm), but each row's activations are quantized over their own
  range: a row is mapped onto [0, 1] by its own minimum and span, and one
  fixed anchor row (0, 1) pins the per-call range to [0, 1], so the
  kernel's per-call quantization step is the same constant whatever the
  neighbours are; the output row is mapped back. int8 products are summed
  exactly in int32, so a row's logits are bit for bit the same alone and
  batched (tested): the engine's seed guarantees hold. Its elementwise ops
  cost 22-28 % more CPU per step than ``int8`` (measured); each row is as
  close to float32 as a one-row call of ``int8``.

- ``int8`` (``SEGUE_QUANTIZE=int8``): ``torch.ao.quantization.quantize_dynamic``
  (deprecated in favour of torchao but working in torch 2.13), the ~4x of
  DESIGN.md. It quantizes the activations with one scale per call, i.e. per
  *batch*, so a row's logits change with its neighbours' magnitudes
  (measured): the fastest, but a seed no longer gives exactly the same audio
  alone and batched.
- ``int8-weight-only``: int8 weights, one scale per output channel,
  activations in bfloat16, through torch's ``_weight_int8pack_mm`` kernel.
  Each row is computed alone (no statistic is shared across the batch), so a
  task's tokens still do not depend on its neighbours: the engine's
  alone-equals-batched guarantee holds. Slower than ``int8``.

In every mode the self-attention's q/k/v projections are fused into one
``qkv_proj`` and the four codebook heads into one ``fused_lm_head`` before
quantizing (``DecoderStep`` uses them when present): fewer, larger calls, and
one activation scaling instead of three. Weights are scaled per output
channel, so fused layers share no scale; in ``int8-rows`` each output
column comes out bit for bit as from the separate layers (tested).

Embeddings, norms, the KV cache, the text encoder and EnCodec stay float.
The decoder step calls the layers' submodules one by one, so a quantized
copy of the decoder steps unchanged (``Scheduler(decoder=...)``). What it
costs in quality is measured, not assumed: ``drift`` compares next-token
distributions against float32 on the same tokens (mean KL divergence and
top-1 agreement).
"""

from __future__ import annotations

import copy
import functools
import warnings

import torch

from worker.engine import rowquant

MODES = ("", "int8", "int8-weight-only", "int8-rows")
# Not a torch decoder: the whole step as one compiled OpenVINO graph (worker.engine.openvino_graph).
COMPILED_MODES = ("openvino-int8",)


def _openvino_runs_here() -> bool:
    """openvino-int8 needs the openvino package (a worker dependency) and an x86-64 CPU: its PagedAttention
    is what was measured and tested here; elsewhere (ARM) ``auto`` keeps the eager ``int8-rows``."""
    import importlib.util
    import platform

    return platform.machine().lower() in ("x86_64", "amd64") and importlib.util.find_spec("openvino") is not None


# What ``auto`` means on a CPU (see ``resolve``): the compiled step where it runs (1.4x faster for one task
# than int8-rows, less drift, the same seed guarantees: docs/cpu-engine.md), else int8-rows.
CPU_DEFAULT = "openvino-int8" if _openvino_runs_here() else "int8-rows"
# Below this many parameters (the tiny test models) auto stays float: they anchor the exactness tests against
# transformers' own generate, and at their size the bytes saved do not matter.
SMALL_MODEL_PARAMETERS = 50_000_000


def resolve(mode: str, device_type: str, parameters: int) -> str:
    """The mode to apply: ``auto`` is ``CPU_DEFAULT`` for a real-size model on a CPU, else float ("")."""
    if mode != "auto":
        return mode
    return CPU_DEFAULT if device_type == "cpu" and parameters >= SMALL_MODEL_PARAMETERS else ""


KV_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def kv_dtype(setting: str, device_type: str, quantized: bool, model_dtype: torch.dtype) -> torch.dtype:
    """The KV cache's dtype: ``auto`` is bfloat16 under a quantized decoder on a CPU, else the model's.

    At a musician's 550 cached positions a float32 cache is more bytes per step than the int8 weights
    (0.22 GB for one task, 1.7 GB for eight); bfloat16 halves them, and attention runs in bfloat16 over
    it (``DecoderStep._attend``), each row on its own, so the seed guarantees hold (tested)."""
    if setting == "auto":
        return torch.bfloat16 if quantized and device_type == "cpu" else model_dtype
    return KV_DTYPES[setting]


def _int8_per_channel(linear: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's weight in int8, symmetric, one float32 scale per output channel: (weights, scales)."""
    weight = linear.weight.detach().float()
    scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
    return torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8), scales


class Int8Linear(torch.nn.Module):
    """``nn.Linear`` with int8 weights (symmetric, one scale per output channel), bfloat16 activations."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight_int8, scales = _int8_per_channel(linear)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scales).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)


@functools.cache
def onednn_int8_available() -> bool:
    """Whether this torch has oneDNN's int8 linear (x86 builds do; ARM builds may not); probed once."""
    try:
        weight = torch.ones(2, 4, dtype=torch.int8)
        packed = torch.ops.onednn.qlinear_prepack(weight, None)
        out = _onednn_linear(torch.ones(1, 4, dtype=torch.uint8), packed, torch.ones(2), torch.zeros(2, dtype=torch.long))
        return bool(torch.equal(out, torch.full((1, 2), 4.0)))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _onednn_linear(levels, packed, scales, zero_points):
    # Input scale exactly 1.0: each output is its exact int32 sum times its column's weight scale, whatever
    # the kernel's blocking or row count (a scale of 1/127 there made small layers' last bits depend on the
    # row count: the kernels multiply the two scales in different orders).
    return torch.ops.onednn.qlinear_pointwise(levels, 1.0, 0, packed, scales, zero_points, None, 1.0, 0,
                                              torch.float32, "none", [], "")


class RowScaledInt8Linear(torch.nn.Module):
    """``nn.Linear`` with int8 weights and activations quantized per row (``int8-rows``).

    Each row is mapped onto the integer levels 0..127 by its own minimum and span (``x = low + span *
    u``), multiplied with the int8 weights (one scale per output channel) summing exactly in int32, and
    mapped back: ``W x = span * (W u) + low * (W 1)``, with ``W 1`` (the int8 weights' own row sums)
    precomputed. Nothing is shared across rows, so a row's output is bit for bit the same alone and
    batched (tested): the engine's seed guarantees hold.

    Two kernels, the same arithmetic: oneDNN's int8 linear (``onednn.qlinear_pointwise``; x86 builds),
    fed the levels directly; else torch's dynamic int8 linear (fbgemm, qnnpack on ARM), which picks its
    activation scale from the whole call's minimum and maximum, so one anchor row holding 0 and 1 is
    appended to the rows in [0, 1], pinning the call's range (and so its scale) to a constant. oneDNN
    was 12 % faster for one task and 27 % for eight on the decoder's layers here (``docs/cpu-engine.md``),
    and needs no anchor row."""

    def __init__(self, linear: torch.nn.Linear, kernel: str | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.kernel = kernel or ("onednn" if onednn_int8_available() else "dynamic")
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        if self.kernel == "onednn":
            weight_int8, scales = _int8_per_channel(linear)
            self.register_buffer("weight_int8", weight_int8)
            self.register_buffer("scales", scales)
            self.register_buffer("zero_points", torch.zeros(self.out_features, dtype=torch.long))
            self.register_buffer("row_sums", (weight_int8.float() * scales[:, None]).sum(dim=1))
            self.packed = torch.ops.onednn.qlinear_prepack(weight_int8, None)  # oneDNN's own layout
            # The compiled map back (worker.engine.rowquant) always adds a bias: zeros where the layer has none.
            self.register_buffer("map_bias", self.bias.clone() if self.bias is not None
                                 else torch.zeros(self.out_features), persistent=False)
            return
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

        bare = torch.nn.Linear(linear.in_features, linear.out_features, bias=False)
        bare.weight = linear.weight  # the bias is added after mapping back
        bare.qconfig = torch.ao.quantization.per_channel_dynamic_qconfig  # one weight scale per output
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notices
            self.inner = DynamicLinear.from_float(bare)
        # The int8 weights' own row sums: the large shared part of both terms then carries the same
        # weight rounding and cancels as in ``W_q x`` (float sums measured 2-3x the error).
        self.register_buffer("row_sums", self.inner.weight().dequantize().float().sum(dim=1))
        anchor = torch.zeros(1, linear.in_features, dtype=linear.weight.dtype)
        anchor[0, -1] = 1.0
        self.register_buffer("anchor", anchor)

    def __deepcopy__(self, memo):
        # oneDNN's packed weight is an opaque tensor that cannot be copied: copy the rest, pack again (and
        # let the copy make its own numpy views of its own buffers).
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        for name, value in self.__dict__.items():
            if name not in ("packed", "_host", "_norm"):
                clone.__dict__[name] = copy.deepcopy(value, memo)
        if "packed" in self.__dict__:
            clone.packed = torch.ops.onednn.qlinear_prepack(clone.weight_int8, None)
        return clone

    def _host_arrays(self) -> tuple:
        """``row_sums`` and ``map_bias`` as numpy arrays sharing their memory, made again if a buffer was
        replaced (``.to()``, a copy)."""
        row_sums, bias = self.row_sums, self.map_bias
        cached = self.__dict__.get("_host")
        if cached is None or cached[0] is not row_sums or cached[1] is not bias:
            cached = self.__dict__["_host"] = (row_sums, bias, row_sums.numpy(), bias.numpy())
        return cached[2], cached[3]

    def _norm_arrays(self, norm: torch.nn.Module) -> tuple | None:
        """A LayerNorm over this layer's input as (weight, bias, eps) numpy views; None for any other norm."""
        if not (isinstance(norm, torch.nn.LayerNorm) and norm.elementwise_affine and norm.bias is not None
                and tuple(norm.normalized_shape) == (self.in_features,) and norm.weight.dtype == torch.float32):
            return None
        weight, bias = norm.weight, norm.bias
        cached = self.__dict__.get("_norm")
        if cached is None or cached[0] is not weight or cached[1] is not bias:
            cached = self.__dict__["_norm"] = (weight, bias, weight.detach().numpy(), bias.detach().numpy())
        return cached[2], cached[3], norm.eps

    def _product(self, levels: torch.Tensor) -> torch.Tensor:
        return _onednn_linear(levels, self.packed, self.scales, self.zero_points)

    def _run(self, levels, lows, steps, residual: torch.Tensor | None) -> torch.Tensor:
        if residual is not None:
            residual = residual.reshape(-1, self.out_features)
        return rowquant.map_back(self._product(levels), lows, steps, *self._host_arrays(), residual)

    def _normed_levels(self, x: torch.Tensor, norm: torch.nn.Module) -> tuple | None:
        """``norm(x)``'s rows quantized in one pass (levels, minima, steps); None where the pass cannot take
        the norm in (another kernel or dtype, another kind of norm)."""
        arrays = self._norm_arrays(norm) if self.kernel == "onednn" and x.dtype == torch.float32 else None
        return None if arrays is None else rowquant.quantize_normed_rows(x.reshape(-1, self.in_features), *arrays)

    def normed(self, x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
        """``self(norm(x))``, the LayerNorm computed inside the quantizing pass (oneDNN kernel, float32)."""
        quantized = self._normed_levels(x, norm)
        if quantized is None:
            return self(norm(x))
        return self._run(*quantized, None).view(*x.shape[:-1], self.out_features)

    def normed_into_cache(self, x: torch.Tensor, norm: torch.nn.Module, keys, values, first: int,
                          positions) -> torch.Tensor | None:
        """For a fused q/k/v layer: ``self(norm(x))`` split in three and rounded to bfloat16, the keys and
        values written into one layer's cache (``rowquant.map_back_into_cache``), the queries returned
        ``(rows, width)``. None where this layer cannot (then the caller runs the plain path)."""
        quantized = self._normed_levels(x, norm)
        if quantized is None:
            return None
        levels, lows, steps = quantized
        return rowquant.map_back_into_cache(self._product(levels), lows, steps, *self._host_arrays(), keys, values,
                                            first, positions)

    def plus(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + self(x)``, bit for bit, the sum made in the mapping-back pass (oneDNN kernel); ``x``
        may be bfloat16 (an attention output over a bfloat16 cache), read as ``x.float()`` would be."""
        if (self.kernel != "onednn" or x.dtype not in (torch.float32, torch.bfloat16)
                or residual.dtype != torch.float32):
            return residual + self(x.to(residual.dtype))
        levels, lows, steps = rowquant.quantize_rows(x.reshape(-1, self.in_features))
        return self._run(levels, lows, steps, residual).view(*x.shape[:-1], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if self.kernel == "onednn":
            # One compiled loop each side of the GEMM instead of ~12 torch ops (worker.engine.rowquant).
            levels, lows, steps = rowquant.quantize_rows(flat.float())
            return self._run(levels, lows, steps, None).to(x.dtype).view(*x.shape[:-1], self.out_features)
        low, high = torch.aminmax(flat, dim=1, keepdim=True)
        span = (high - low).clamp_min_(1e-30)
        # No clamp needed: x - low >= 0 exactly, and (x - low) <= (high - low) = span after rounding
        # (rounding is monotonic), so every unit value lies in [0, 1].
        unit = (flat - low).div_(span)
        product = self.inner(torch.cat([unit, self.anchor]))[:-1]
        out = torch.addcmul(low * self.row_sums, product, span)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)


def _concatenated(linears: list[torch.nn.Linear]) -> torch.nn.Linear:
    """One ``nn.Linear`` computing all of ``linears`` side by side (outputs concatenated)."""
    first = linears[0]
    biases = [lin.bias for lin in linears]
    fused = torch.nn.Linear(first.in_features, sum(lin.out_features for lin in linears),
                            bias=any(b is not None for b in biases), dtype=first.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([lin.weight for lin in linears]))
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([b if b is not None else torch.zeros(lin.out_features)
                                        for b, lin in zip(biases, linears)]))
    return fused


def fuse_projections(decoder: torch.nn.Module) -> torch.nn.Module:
    """In place: each self-attention gets ``qkv_proj`` (q, k and v side by side), the decoder one
    ``fused_lm_head`` (the codebooks' heads side by side). The originals stay (quantized too, a few
    tens of MB), so transformers' own forward pass still runs on the quantized decoder."""
    for layer in decoder.model.decoder.layers:
        attention = layer.self_attn
        attention.qkv_proj = _concatenated([attention.q_proj, attention.k_proj, attention.v_proj])
    decoder.fused_lm_head = _concatenated(list(decoder.lm_heads))
    return decoder


def quantize_decoder(decoder: torch.nn.Module, mode: str, *, inplace: bool = False) -> torch.nn.Module:
    """The decoder (a ``MusicgenForCausalLM``) with every ``nn.Linear`` in int8 (CPU only); see the modes above."""
    if mode not in MODES[1:]:
        raise ValueError(f"unknown quantization {mode!r}; one of {', '.join(MODES[1:])}")
    if any(p.device.type != "cpu" for p in decoder.parameters()):
        raise ValueError("int8 quantization of the decoder runs on CPU only")
    target = fuse_projections(decoder if inplace else copy.deepcopy(decoder))
    if mode == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notices
            from torch.ao.quantization import quantize_dynamic

            # Weights scaled per output channel: q, k and v (and the four heads) share a fused layer
            # without sharing a scale.
            return quantize_dynamic(target, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
                                    dtype=torch.qint8, inplace=True)
    layer = RowScaledInt8Linear if mode == "int8-rows" else Int8Linear
    if mode == "int8-rows":
        rowquant.warm_up()
    for module in list(target.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, layer(child))
    return target


def drift(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """How far ``other``'s next-token distributions are from ``reference``'s: logits ``(..., vocab)``.

    ``mean_kl``: KL(reference || other) in nats, averaged over all positions and codebooks;
    ``top1_agreement``: the share of them whose most likely token is the same."""
    log_p = reference.float().log_softmax(-1)
    log_q = other.float().log_softmax(-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    agree = (reference.argmax(-1) == other.argmax(-1)).float()
    return {"mean_kl": float(kl.mean()), "top1_agreement": float(agree.mean())}


def step_weight_bytes(decoder: torch.nn.Module) -> int:
    """Bytes of linear-layer weights (and their scales) one decoding step reads, as the decoder stores them.

    The layers ``DecoderStep.decode`` calls: self-attention q/k/v (fused or not) and output, cross-attention
    query and output (its keys/values are cached per task), fc1, fc2 and the heads. Norms, biases and the
    embedding rows looked up are a few hundred kB and left out."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    def size(module) -> int:
        if isinstance(module, RowScaledInt8Linear) and module.kernel != "onednn":
            module = module.inner
        if isinstance(module, DynamicLinear):
            weight = module.weight()
            scales = weight.q_per_channel_scales().numel() if weight.qscheme() in (
                torch.per_channel_affine, torch.per_channel_symmetric) else 1
            return weight.numel() + 4 * scales
        if isinstance(module, (Int8Linear, RowScaledInt8Linear)):  # oneDNN's kernel holds plain int8 weights
            return module.weight_int8.numel() + module.scales.numel() * module.scales.element_size()
        return module.weight.numel() * module.weight.element_size()

    total = 0
    for layer in decoder.model.decoder.layers:
        attention = layer.self_attn
        if hasattr(attention, "qkv_proj"):
            total += size(attention.qkv_proj)
        else:
            total += sum(size(getattr(attention, name)) for name in ("q_proj", "k_proj", "v_proj"))
        total += size(attention.out_proj) + size(layer.fc1) + size(layer.fc2)
        if hasattr(layer, "encoder_attn"):
            total += size(layer.encoder_attn.q_proj) + size(layer.encoder_attn.out_proj)
    heads = [decoder.fused_lm_head] if hasattr(decoder, "fused_lm_head") else list(decoder.lm_heads)
    return total + sum(size(head) for head in heads)
