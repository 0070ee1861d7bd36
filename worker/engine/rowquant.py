"""The per-row quantization around ``int8-rows``' oneDNN linear, as two compiled loops instead of ~12 torch ops.

``RowScaledInt8Linear`` maps each row of its input onto the levels 0..127 by
the row's own minimum and span, multiplies the levels with int8 weights, and
maps the result back (``worker.engine.quantize``). In torch's eager mode that
is about a dozen small operations per layer (min/max, subtract, reciprocal,
multiply, round, cast; then two products, a sum and the bias), and with 145
layers a step that was ~12 ms of a ~55 ms step: each op's dispatch costs more
than its arithmetic on two rows. Here each side is one numba-compiled loop
over the rows (numba comes with librosa, which the worker already needs), so
a layer costs three calls: quantize, the oneDNN GEMM, map back.

Every row is computed from that row alone, in one fixed order, so a row's
output is bit for bit the same alone and batched, as the engine's seed
guarantees require (``tests/test_engine_v2_quantize.py``).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

# Activation levels per row: 7 bits (0..127), as torch's dynamic int8 uses on x86 (``reduce_range``): without
# VNNI, x86's u8 x s8 multiply-add saturates 16-bit pair sums above 127 * 127 * 2.
LEVELS = 127
_TINY_SPAN = np.float32(1e-30)  # a constant row maps onto level 0 without dividing by zero


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _quantize(x, levels, lows, steps):  # pragma: no cover - compiled by numba
    rows, cols = x.shape
    for i in range(rows):
        low = x[i, 0]
        high = x[i, 0]
        for j in range(1, cols):
            value = x[i, j]
            low = min(low, value)
            high = max(high, value)
        span = max(np.float32(high - low), _TINY_SPAN)
        factor = np.float32(np.float32(LEVELS) / span)
        # x - low is in [0, span] exactly and rounding is monotonic, so every level lies in 0..127.
        for j in range(cols):
            levels[i, j] = np.uint8(np.rint(np.float32(np.float32(x[i, j] - low) * factor)))
        lows[i] = low
        steps[i] = np.float32(span / np.float32(LEVELS))


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _map_back(product, lows, steps, row_sums, bias, out):  # pragma: no cover - compiled by numba
    # W x = span/127 * (W levels) + low * (W 1), plus the bias.
    rows, cols = product.shape
    for i in range(rows):
        low = lows[i]
        step = steps[i]
        for j in range(cols):
            out[i, j] = np.float32(np.float32(low * row_sums[j]) + np.float32(product[i, j] * step)) + bias[j]


def quantize_rows(flat: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``flat`` float32 (rows, features) -> uint8 levels (a tensor), each row's minimum and level step."""
    rows, cols = flat.shape
    levels = torch.empty(rows, cols, dtype=torch.uint8)
    lows = np.empty(rows, dtype=np.float32)
    steps = np.empty(rows, dtype=np.float32)
    _quantize(flat.numpy(), levels.numpy(), lows, steps)
    return levels, lows, steps


def map_back(product: torch.Tensor, lows: np.ndarray, steps: np.ndarray, row_sums: np.ndarray,
             bias: np.ndarray) -> torch.Tensor:
    """The layer's float output from the int8 product of ``quantize_rows``' levels (all float32 arrays)."""
    out = torch.empty_like(product)
    _map_back(product.numpy(), lows, steps, row_sums, bias, out.numpy())
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) both loops now, not inside a task's first step."""
    levels, lows, steps = quantize_rows(torch.zeros(1, 2))
    map_back(torch.zeros(1, 2), lows, steps, np.zeros(2, np.float32), np.zeros(2, np.float32))
