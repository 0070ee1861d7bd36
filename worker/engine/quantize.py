"""Opt-in int8 for CPU workers: the decoder's Linear layers with int8 weights.

On CPUs a decoding step at small batch reads every decoder weight once;
int8 weights are a quarter of the bytes. Two ways, both measured by
``bench/engine_v2.py``:

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

Embeddings, norms, the KV cache, the text encoder and EnCodec stay float.
The decoder step calls the layers' submodules one by one, so a quantized
copy of the decoder steps unchanged (``Scheduler(decoder=...)``). What it
costs in quality is measured, not assumed: ``drift`` compares next-token
distributions against float32 on the same tokens (mean KL divergence and
top-1 agreement).
"""

from __future__ import annotations

import copy
import warnings

import torch

MODES = ("", "int8", "int8-weight-only")


class Int8Linear(torch.nn.Module):
    """``nn.Linear`` with int8 weights (symmetric, one scale per output channel), bfloat16 activations."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scales).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)


def quantize_decoder(decoder: torch.nn.Module, mode: str, *, inplace: bool = False) -> torch.nn.Module:
    """The decoder (a ``MusicgenForCausalLM``) with every ``nn.Linear`` in int8 (CPU only); see the modes above."""
    if mode not in MODES[1:]:
        raise ValueError(f"unknown quantization {mode!r}; one of {', '.join(MODES[1:])}")
    if any(p.device.type != "cpu" for p in decoder.parameters()):
        raise ValueError("int8 quantization of the decoder runs on CPU only")
    target = decoder if inplace else copy.deepcopy(decoder)
    if mode == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notices
            from torch.ao.quantization import quantize_dynamic

            return quantize_dynamic(target, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    for module in list(target.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, Int8Linear(child))
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
