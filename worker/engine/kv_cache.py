"""A preallocated key/value cache of fixed shape, in rows that tasks hold.

transformers' ``DynamicCache`` grows by concatenation at every step and has
one length for the whole batch, so rows cannot join or leave a running batch.
Here the self-attention keys and values of every layer live in one tensor
``(layers, rows, heads, max_positions, head_dim)`` allocated once; a task
holds one row (two with classifier-free guidance: conditional, then
unconditional) and its own length, and a step writes each row's new key and
value at that row's own position. Nothing is reallocated while serving.

Rows in use are kept contiguous from row 0 (``move`` compacts them when a
task leaves, copying only the positions it filled), so a decoding step works
on the leading ``n`` rows, a plain slice: no gather, and on GPUs a fixed
shape per slot-count bucket.

Cross-attention keys and values depend only on the text, so they are
computed once per task (``set_cross``) and stored per row, with an additive
mask over the padding of shorter texts.
"""

from __future__ import annotations

import torch

from worker.engine.threads import single_threaded


class KVCache:
    def __init__(self, *, layers: int, rows: int, heads: int, head_dim: int, max_positions: int,
                 max_text: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        self.rows = rows
        self.dtype = dtype  # may be narrower than the model's (DecoderStep casts on the way in and out)
        self.max_positions = max_positions
        # The last position is scratch: no task reads or writes it (callers size the cache one position
        # longer than the longest sequence), so padding rows of a fixed-shape step can write there.
        self.scratch = max_positions - 1
        self.max_text = max_text
        shape = (layers, rows, heads, max_positions, head_dim)
        cross = (layers, rows, heads, max_text, head_dim)
        # Zeroed on one CPU thread: a parallel fill would start an OpenMP team on the caller's thread
        # (worker.engine.threads).
        with single_threaded():
            self.keys = torch.zeros(shape, dtype=dtype, device=device)
            self.values = torch.zeros(shape, dtype=dtype, device=device)
            self.cross_keys = torch.zeros(cross, dtype=dtype, device=device)
            self.cross_values = torch.zeros(cross, dtype=dtype, device=device)
        # Additive: 0 where a row attends, the dtype's minimum elsewhere. Not -inf: a row with no text at
        # all (the unconditional half of guidance) then attends uniformly to zero values and gets zero,
        # as transformers computes it, instead of NaN.
        self.masked = torch.finfo(dtype).min
        self.cross_mask = torch.full((rows, max_text), self.masked, dtype=dtype, device=device)
        self.text_lengths = [0] * rows
        self._host_bits = None  # host_bits(), made once: the tensors are never reallocated

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.cross_keys,
                                                           self.cross_values))

    def write(self, layer: int, rows: slice, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Keys/values ``(rows, heads, C, head_dim)`` of positions ``[start, start + C)`` (a prefill chunk)."""
        end = start + keys.shape[2]
        self.keys[layer, rows, :, start:end] = keys
        self.values[layer, rows, :, start:end] = values

    def write_at(self, layer: int, rows: slice, positions: torch.Tensor, keys: torch.Tensor,
                 values: torch.Tensor) -> None:
        """One key/value ``(rows, heads, 1, head_dim)`` per row of ``rows``, each at its own position."""
        index = torch.arange(*rows.indices(self.rows), device=positions.device)
        self.keys[layer, index, :, positions] = keys[:, :, 0].to(self.dtype)
        self.values[layer, index, :, positions] = values[:, :, 0].to(self.dtype)

    def host_bits(self) -> tuple | None:
        """The self-attention keys and values as numpy uint16 arrays sharing their memory (a bfloat16 cache
        on the CPU; else None), for compiled code that writes them (``rowquant.map_back_into_cache``)."""
        if self.dtype != torch.bfloat16 or self.keys.device.type != "cpu":
            return None
        if self._host_bits is None:
            self._host_bits = (self.keys.view(torch.uint16).numpy(), self.values.view(torch.uint16).numpy())
        return self._host_bits

    def set_cross(self, rows: slice, keys: list[torch.Tensor], values: list[torch.Tensor],
                  attends: list[bool]) -> None:
        """Per layer, keys/values ``(rows, heads, text, head_dim)``; ``attends[r]`` False: row r has no text."""
        text = keys[0].shape[2]
        if text > self.max_text:
            raise ValueError(f"text is {text} tokens long; this cache holds {self.max_text}")
        for layer, (k, v) in enumerate(zip(keys, values)):
            self.cross_keys[layer, rows, :, :text] = k
            self.cross_values[layer, rows, :, :text] = v
        # Beyond the text, zeros, not what an earlier task left: a row with no text attends uniformly to
        # every position up to the longest text in the batch, so leftovers there would change its output
        # with its neighbours (found when the batching tests first ran in int8-rows).
        self.cross_keys[:, rows, :, text:] = 0
        self.cross_values[:, rows, :, text:] = 0
        self.cross_mask[rows] = self.masked
        for r, row in enumerate(range(*rows.indices(self.rows))):
            if attends[r]:
                self.cross_mask[row, :text] = 0
            self.text_lengths[row] = text

    def move(self, source: int, target: int, count: int, positions: int) -> None:
        """Move rows ``[source, source + count)`` to ``[target, ...)`` (compaction), ``positions`` of them."""
        if source == target or count == 0:
            return
        src, dst = slice(source, source + count), slice(target, target + count)
        # clone(): source and target may overlap (a two-row task moving down by one row).
        self.keys[:, dst, :, :positions] = self.keys[:, src, :, :positions].clone()
        self.values[:, dst, :, :positions] = self.values[:, src, :, :positions].clone()
        self.cross_keys[:, dst] = self.cross_keys[:, src].clone()
        self.cross_values[:, dst] = self.cross_values[:, src].clone()
        self.cross_mask[dst] = self.cross_mask[src].clone()
        self.text_lengths[dst] = self.text_lengths[src]
