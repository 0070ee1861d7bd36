"""Per-row sampling for batched MusicGen generation.

transformers samples a whole batch with one temperature/top-k/top-p, one
guidance scale and the global RNG, so rows of different requests could not
share a ``generate`` call and a row's audio would depend on its neighbours.
``RowSampler`` is the last logits processor of the call and does the sampling
itself, row by row: classifier-free guidance with the row's own scale, its
temperature, top-k and top-p (transformers' formulas and order), then a draw
from the row's own ``torch.Generator``. It returns scores that are ``-inf``
everywhere but the drawn token, so generate runs greedy (``do_sample=False``)
and its argmax keeps exactly that token.

Every row is processed alone, on tensors of the same shape whatever the batch,
so a row's draws depend only on its logits and its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessor


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

    Both engines sample through this one function, so a seed means the same thing in each."""
    if uncond is not None:
        logits = uncond + (logits - uncond) * settings.cfg_coef
    probs = warp(logits, settings).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


class RowSampler(LogitsProcessor):
    """Samples each request's codebook rows with its own settings and generator.

    Scores arrive as ``(rows * num_codebooks, vocab)`` with request ``r``'s
    codebooks at rows ``r*K .. r*K+K-1``; with ``guided`` the caller doubled
    the batch itself (conditional rows, then the same rows unconditioned) and
    both halves get the same token. ``active[r] = False`` stops sampling row
    ``r`` (finished or canceled: its later tokens are never used).
    """

    def __init__(self, settings: list[SamplingSettings], num_codebooks: int, guided: bool, device: torch.device):
        self.settings = settings
        self.num_codebooks = num_codebooks
        self.guided = guided
        self.generators = [torch.Generator(device=device).manual_seed(s.seed) for s in settings]
        self.active = [True] * len(settings)
        self.last_tokens: torch.Tensor | None = None  # (rows * K,) drawn at the latest step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = len(self.settings) * self.num_codebooks
        if scores.shape[0] != rows * (2 if self.guided else 1):
            raise RuntimeError(f"RowSampler expected {rows} rows of scores (guided={self.guided}), got {scores.shape[0]}")
        tokens = torch.zeros(rows, dtype=torch.long, device=scores.device)
        for r, settings in enumerate(self.settings):
            if not self.active[r]:
                continue
            span = slice(r * self.num_codebooks, (r + 1) * self.num_codebooks)
            uncond = scores[rows + span.start : rows + span.stop] if self.guided else None
            tokens[span] = draw(scores[span], uncond, settings, self.generators[r])
        self.last_tokens = tokens
        chosen = tokens.repeat(2) if self.guided else tokens
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen[:, None], 0.0)
