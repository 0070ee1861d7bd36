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


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _quantize_row(x, levels):  # pragma: no cover - compiled by numba
    """One row onto the levels 0..127 by its own minimum and span; returns (minimum, level step)."""
    low = x[0]
    high = x[0]
    for j in range(1, x.shape[0]):
        low = min(low, x[j])
        high = max(high, x[j])
    span = max(np.float32(high - low), _TINY_SPAN)
    factor = np.float32(np.float32(LEVELS) / span)
    # x - low is in [0, span] exactly and rounding is monotonic, so every level lies in 0..127.
    for j in range(x.shape[0]):
        levels[j] = np.uint8(np.rint(np.float32(np.float32(x[j] - low) * factor)))
    return low, np.float32(span / np.float32(LEVELS))


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _outputs(rows, cols):  # pragma: no cover - compiled by numba
    """The quantizing loops' results: uint8 levels, and each row's minimum and level step."""
    return np.empty((rows, cols), dtype=np.uint8), np.empty(rows, dtype=np.float32), np.empty(rows, dtype=np.float32)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _quantized(x):  # pragma: no cover - compiled by numba
    rows, cols = x.shape
    levels, lows, steps = _outputs(rows, cols)
    for i in range(rows):
        lows[i], steps[i] = _quantize_row(x[i], levels[i])
    return levels, lows, steps


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _quantized_bfloat16(bits):  # pragma: no cover - compiled by numba
    """``_quantized`` of bfloat16 rows (their bits, uint16): each row widened exactly to float32 first."""
    rows, cols = bits.shape
    levels, lows, steps = _outputs(rows, cols)
    wide = np.empty(cols, dtype=np.uint32)
    row = wide.view(np.float32)
    for i in range(rows):
        for j in range(cols):
            wide[j] = np.uint32(bits[i, j]) << np.uint32(16)
        lows[i], steps[i] = _quantize_row(row, levels[i])
    return levels, lows, steps


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _quantized_normed(x, weight, bias, eps):  # pragma: no cover - compiled by numba
    """``_quantized`` of ``LayerNorm(x)``: the row's moments in float64, its normalized values in float32."""
    rows, cols = x.shape
    levels, lows, steps = _outputs(rows, cols)
    normed = np.empty(cols, dtype=np.float32)
    for i in range(rows):
        mean = 0.0
        for j in range(cols):
            mean += x[i, j]
        mean /= cols
        variance = 0.0
        for j in range(cols):
            deviation = x[i, j] - mean
            variance += deviation * deviation
        scale = 1.0 / np.sqrt(variance / cols + eps)
        for j in range(cols):
            normed[j] = np.float32(np.float32((x[i, j] - mean) * scale) * weight[j]) + bias[j]
        lows[i], steps[i] = _quantize_row(normed, levels[i])
    return levels, lows, steps


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _mapped_back(product, lows, steps, row_sums, bias):  # pragma: no cover - compiled by numba
    # W x = span/127 * (W levels) + low * (W 1), plus the bias.
    rows, cols = product.shape
    out = np.empty_like(product)
    for i in range(rows):
        for j in range(cols):
            out[i, j] = np.float32(np.float32(lows[i] * row_sums[j]) + np.float32(product[i, j] * steps[i])) + bias[j]
    return out


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _mapped_back_plus(product, lows, steps, row_sums, bias, residual):  # pragma: no cover - compiled by numba
    # float32 addition commutes, so this is bit for bit `residual + layer(x)`.
    out = _mapped_back(product, lows, steps, row_sums, bias)
    out += residual
    return out


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _bfloat16(bits):  # pragma: no cover - compiled by numba
    """float32 bits -> bfloat16 bits, rounded to nearest even: torch's ``.to(torch.bfloat16)``, bit for bit."""
    rounded = np.uint16((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.uint16(0x7FC0) if nan else rounded  # NaN: torch's canonical one (a select: it vectorizes)


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _rounded_into(target, bits, start):  # pragma: no cover - compiled by numba
    for j in range(target.shape[0]):
        target[j] = _bfloat16(bits[start + j])


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _mapped_back_into_cache(product, lows, steps, row_sums, bias, keys, values, first,  # pragma: no cover
                            positions):  # compiled by numba
    """``_mapped_back`` of a fused q/k/v product ``(rows, 3 * width)``, rounded to bfloat16: each row's key
    and value go straight into the cache (``keys``/``values``: one layer's bfloat16 bits, ``(cache rows,
    heads, positions, head_dim)``) at cache row ``first + i`` and position ``positions[i]``; returns the
    queries ``(rows, width)``, bfloat16 bits."""
    rows, cols = product.shape
    width = cols // 3
    heads, head_dim = keys.shape[1], keys.shape[3]
    query = np.empty((rows, width), dtype=np.uint16)
    mapped = np.empty(cols, dtype=np.float32)
    bits = mapped.view(np.uint32)
    for i in range(rows):
        for j in range(cols):  # the same expression as _mapped_back: the same float32 values
            mapped[j] = np.float32(np.float32(lows[i] * row_sums[j]) + np.float32(product[i, j] * steps[i])) + bias[j]
        _rounded_into(query[i], bits, 0)
        row, position = first + i, positions[i]
        for head in range(heads):
            _rounded_into(keys[row, head, position], bits, width + head * head_dim)
            _rounded_into(values[row, head, position], bits, 2 * width + head * head_dim)
    return query


# Arrays are allocated inside the compiled code and handed to torch without a copy: every torch call
# saved counts here (each costs about a microsecond, and a step makes hundreds of these calls).
def quantize_rows(flat: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``flat`` float32 or bfloat16 (rows, features) -> uint8 levels (a tensor), each row's minimum and level
    step; bfloat16 rows give exactly what they give widened to float32."""
    if flat.dtype == torch.bfloat16:
        levels, lows, steps = _quantized_bfloat16(np.ascontiguousarray(flat.view(torch.uint16).numpy()))
    else:
        levels, lows, steps = _quantized(flat.numpy())
    return torch.from_numpy(levels), lows, steps


def quantize_normed_rows(flat: torch.Tensor, weight: np.ndarray, bias: np.ndarray,
                         eps: float) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``quantize_rows(layer_norm(flat, weight, bias, eps))`` in one pass."""
    levels, lows, steps = _quantized_normed(flat.numpy(), weight, bias, eps)
    return torch.from_numpy(levels), lows, steps


def map_back(product: torch.Tensor, lows: np.ndarray, steps: np.ndarray, row_sums: np.ndarray,
             bias: np.ndarray, residual: torch.Tensor | None = None) -> torch.Tensor:
    """The layer's float output from the int8 product of the quantized levels (all float32 arrays), plus
    ``residual`` (rows, out features) when given."""
    if residual is None:
        return torch.from_numpy(_mapped_back(product.numpy(), lows, steps, row_sums, bias))
    return torch.from_numpy(_mapped_back_plus(product.numpy(), lows, steps, row_sums, bias, residual.numpy()))


def map_back_into_cache(product: torch.Tensor, lows: np.ndarray, steps: np.ndarray, row_sums: np.ndarray,
                        bias: np.ndarray, keys: np.ndarray, values: np.ndarray, first: int,
                        positions: np.ndarray) -> torch.Tensor:
    """A fused q/k/v layer's output, mapped back and rounded to bfloat16 as ``.to(torch.bfloat16)`` rounds:
    keys and values written into one layer's cache (``keys``/``values``: uint16 views of its bfloat16
    tensors) at each row's position, the queries returned ``(rows, width)`` in bfloat16. One pass instead
    of a split, three casts and two scattered writes per layer."""
    query = _mapped_back_into_cache(product.numpy(), lows, steps, row_sums, bias, keys, values, first, positions)
    return torch.from_numpy(query).view(torch.bfloat16)


def warm_up() -> None:
    """Compile (or load from numba's cache) every loop now, not inside a task's first step."""
    ones = np.ones(2, np.float32)
    quantize_rows(torch.zeros(1, 2))
    quantize_rows(torch.zeros(1, 2, dtype=torch.bfloat16))
    levels, lows, steps = quantize_normed_rows(torch.zeros(1, 2), ones, ones, 1e-5)
    map_back(torch.zeros(1, 2), lows, steps, ones, ones)
    map_back(torch.zeros(1, 2), lows, steps, ones, ones, torch.zeros(1, 2))
    cache = np.zeros((1, 1, 1, 1), np.uint16)
    map_back_into_cache(torch.zeros(1, 3), lows, steps, np.ones(3, np.float32), np.ones(3, np.float32), cache,
                        cache.copy(), 0, np.zeros(1, np.int64))
