"""MusicGen's delay pattern, for a decode loop of Segue's own.

MusicGen predicts every codebook of a frame in one step, but codebook ``k``
of a channel runs ``k`` steps behind codebook 0, so that finer codebooks are
predicted after the coarser ones of the same frame are known (stereo models
interleave left/right codebooks: codebook ``c`` has delay ``c // 2``).
Sequence position 0 holds the start token 2048 (which is also the pad
token); with a prompt of ``P`` frames and ``N`` new frames, codebook ``k``
with delay ``d`` holds at position ``p``:

- ``p <= d``: 2048 (the start of the pattern);
- ``d + 1 <= p <= d + P``: prompt frame ``p - 1 - d``;
- ``d + P + 1 <= p <= d + P + N``: new frame ``p - 1 - d - P`` (sampled);
- beyond: 2048 (the end of the pattern).

So the sequence is ``1 + P + N + max_delay`` long, the model is fed
positions ``[0, 1 + P)`` as the prompt (prefill), and every decoding step
``s = 1, 2, ...`` samples position ``P + s`` for all codebooks at once, where
the pattern overrides the sample: the first ``max_delay`` steps still take
the delayed codebooks from the prompt, the last ``max_delay`` steps pad them.
This is exactly what transformers' ``build_delay_pattern_mask`` and
``apply_delay_pattern_mask`` do inside ``generate``; ``tests/test_engine_v2_step``
checks it against transformers' own, token for token.

The output includes the prompt: the engine decodes the prompt's own codes
followed by the new frames (``new_frames``).
"""

from __future__ import annotations

import torch

START = 2048  # MusicGen's start/pad token: one past the codebook


def delays(num_codebooks: int, channels: int) -> list[int]:
    """Each codebook's delay in steps (stereo interleaves left/right codebooks)."""
    return [c // channels for c in range(num_codebooks)]


def sequence_length(prompt_frames: int, new_frames: int, max_delay: int) -> int:
    return 1 + prompt_frames + new_frames + max_delay


def build_sequence(prompt_codes: torch.Tensor, new_frames: int, codebook_delays: list[int],
                   start_token: int = START) -> torch.Tensor:
    """The whole delayed sequence ``(num_codebooks, length)`` of one task, ``-1`` where a token is sampled."""
    k, prompt_frames = prompt_codes.shape
    length = sequence_length(prompt_frames, new_frames, max(codebook_delays))
    ids = torch.full((k, length), start_token, dtype=torch.long, device=prompt_codes.device)
    for c, d in enumerate(codebook_delays):
        ids[c, d + 1 : d + 1 + prompt_frames] = prompt_codes[c]
        ids[c, d + 1 + prompt_frames : d + 1 + prompt_frames + new_frames] = -1
    return ids


def place(ids: torch.Tensor, position: int, drawn: torch.Tensor) -> None:
    """Write the tokens drawn for ``position`` where the pattern leaves them free."""
    column = ids[:, position]
    ids[:, position] = torch.where(column == -1, drawn, column)


def new_frames(ids: torch.Tensor, prompt_frames: int, codebook_delays: list[int], first: int,
               end: int) -> torch.Tensor:
    """New frames ``[first, end)`` un-delayed: ``(num_codebooks, end - first)``."""
    start = 1 + prompt_frames
    return torch.stack([ids[c, start + d + first : start + d + end] for c, d in enumerate(codebook_delays)])
