"""Per-task sampling: each task's tokens drawn with its own settings and generator.

transformers samples a whole batch with one temperature/top-k/top-p, one
guidance scale and the global RNG, so tasks sharing a batch would sound
different beside different neighbours. ``draw`` samples one task at a time:
classifier-free guidance with its own scale, its temperature, top-k and
top-p (transformers' formulas and order), then a draw from its own
``torch.Generator``, on tensors of the same shape whatever the batch, so a
task's draws depend only on its logits and its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingSettings:
    seed: int
    temperature: float = 1.0
    top_k: int = 250  # 0: off
    top_p: float = 0.0  # 0 or 1: off
    cfg_coef: float = 3.0  # <= 1: no classifier-free guidance


def warp(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Temperature, then top-k, then top-p, as transformers' warpers do them."""
    logits = logits / settings.temperature
    vocab = logits.shape[-1]
    if 0 < settings.top_k < vocab:
        kth_best = torch.topk(logits, settings.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if 0.0 < settings.top_p < 1.0:
        ascending, order = torch.sort(logits, dim=-1)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1.0 - settings.top_p)
        drop[..., -1:] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def draw(logits: torch.Tensor, uncond: torch.Tensor | None, settings: SamplingSettings,
         generator: torch.Generator) -> torch.Tensor:
    """One request's tokens for one step: ``logits`` ``(num_codebooks, vocab)``, ``uncond`` the same rows
    unconditioned (or None without guidance); returns ``(num_codebooks,)`` drawn with ``generator``.

    Seeded alike, it draws what transformers' own sampling draws from the global RNG (tested)."""
    if uncond is not None:
        logits = uncond + (logits - uncond) * settings.cfg_coef
    probs = warp(logits, settings).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
