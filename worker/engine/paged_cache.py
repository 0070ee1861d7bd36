"""The key/value cache of the compiled CPU step (``SEGUE_QUANTIZE=openvino-int8``), in blocks.

OpenVINO's ``PagedAttention`` reads and writes a cache of fixed-size blocks
(``(blocks, heads, block, head_dim)`` per layer, float16 here) through a
block table per sequence, and each sequence brings its own length: exactly
what rows that join, leave and sit at their own positions need. Each cache
row owns a fixed run of blocks (row ``r``: blocks ``[r * B, (r + 1) * B)``),
so the table is a plain range and nothing is allocated while serving; the
arrays are shared with the runtime (no copy per step).

Cross-attention runs through ``PagedAttention`` too, over a second cache
holding each row's text keys and values. The op always appends the current
token's key and value before attending, so a row's last text position is
kept aside (``last_text``) and fed as that token at every step: it is
written where it already is (the same bits), and the row attends over
exactly its text. A row without text (guidance's unconditional half) holds
one position of the projections of zeros, which gives what transformers
computes for it (zero attention output when the projections have no bias).

One block past the rows' is scratch: where a row that must not touch its
cache (a task still prefilling, fed the start token) writes and reads.
"""

from __future__ import annotations

import math

import numpy as np


class PagedKVCache:
    def __init__(self, *, layers: int, rows: int, width: int, max_positions: int, max_text: int,
                 key_block: tuple[int, ...], value_block: tuple[int, ...], dtype=np.float16):
        """``key_block``/``value_block``: one block's shape as the compiled step wants it
        (``(heads, block, head_dim)``); ``max_positions`` includes the scratch position (``KVCache``'s)."""
        self.rows = rows
        self.layers = layers
        self.max_positions = max_positions
        self.scratch = max_positions - 1
        self.max_text = max_text
        self.block = key_block[1]
        self.row_blocks = math.ceil(max_positions / self.block)
        self.text_blocks = math.ceil(max(max_text, 1) / self.block)
        self.scratch_block = rows * self.row_blocks
        self.scratch_text_block = rows * self.text_blocks
        self.keys = [_zeros((self.scratch_block + 1, *key_block), dtype) for _ in range(layers)]
        self.values = [_zeros((self.scratch_block + 1, *value_block), dtype) for _ in range(layers)]
        cross = layers if max_text else 0
        self.cross_keys = [_zeros((self.scratch_text_block + 1, *key_block), dtype) for _ in range(cross)]
        self.cross_values = [_zeros((self.scratch_text_block + 1, *value_block), dtype) for _ in range(cross)]
        # Per row: the last text position's key and value per layer, fed as the current token (float32).
        self.last_text = np.zeros((rows, 2 * cross, width), np.float32)
        self.text_lengths = [0] * rows

    def self_blocks(self, row: int, length: int) -> np.ndarray:
        """The blocks holding positions ``[0, length)`` of ``row``."""
        first = row * self.row_blocks
        return np.arange(first, first + math.ceil(length / self.block), dtype=np.int32)

    def text_blocks_of(self, row: int) -> np.ndarray:
        first = row * self.text_blocks
        return np.arange(first, first + math.ceil(self.text_lengths[row] / self.block), dtype=np.int32)

    def set_cross(self, rows: slice, keys: list[np.ndarray], values: list[np.ndarray], lengths: list[int]) -> None:
        """Per layer, keys/values ``(rows, length, width)`` float32 (padded to the longest); ``lengths[r]``
        positions of row r are its text (at least 1)."""
        heads, head_dim = self.cross_keys[0].shape[1], self.cross_keys[0].shape[3]
        for r, row in enumerate(range(*rows.indices(self.rows))):
            length = lengths[r]
            if not 1 <= length <= self.max_text:
                raise ValueError(f"text is {length} tokens long; this cache holds {self.max_text}")
            self.text_lengths[row] = length
            blocks = self.text_blocks_of(row)
            padded = len(blocks) * self.block
            for layer in range(self.layers):
                for store, source, index in ((self.cross_keys, keys, 2 * layer), (self.cross_values, values, 2 * layer + 1)):
                    tokens = np.zeros((padded, heads, head_dim), np.float32)
                    tokens[:length] = source[layer][r, :length].reshape(length, heads, head_dim)
                    # (positions, heads, dim) -> (blocks, heads, block, dim)
                    store[layer][blocks] = tokens.reshape(len(blocks), self.block, heads, head_dim).transpose(0, 2, 1, 3)
                    self.last_text[row, index] = source[layer][r, length - 1]

    def move(self, source: int, target: int, count: int, positions: int) -> None:
        """Move rows ``[source, source + count)`` to ``[target, ...)`` (compaction), ``positions`` of them."""
        if source == target or count == 0:
            return
        used = math.ceil(positions / self.block)
        for r in range(count):
            # In the order that never overwrites a row not yet moved (the ranges may overlap).
            r = r if target < source else count - 1 - r
            src, dst = (source + r) * self.row_blocks, (target + r) * self.row_blocks
            for array in (*self.keys, *self.values):
                array[dst:dst + used] = array[src:src + used]
            src, dst = (source + r) * self.text_blocks, (target + r) * self.text_blocks
            for array in (*self.cross_keys, *self.cross_values):
                array[dst:dst + self.text_blocks] = array[src:src + self.text_blocks]
            self.last_text[target + r] = self.last_text[source + r]
            self.text_lengths[target + r] = self.text_lengths[source + r]


def _zeros(shape: tuple, dtype) -> np.ndarray:
    """Zeros written now, not pages the kernel maps on first touch (``np.zeros``): the first prefill of a
    task into fresh blocks took 200-350 ms longer than the next (page faults, measured), and every new task
    lands on blocks the last one may not have touched."""
    array = np.empty(shape, dtype)
    array.fill(0)
    return array
