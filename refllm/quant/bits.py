"""Small bit-twiddling helpers shared by every block format.

A quantized tensor is a sequence of fixed-size *blocks*.  Each dequantizer
receives ``blocks: [n_blocks, type_size] uint8`` and returns
``[n_blocks, block_size] float32``.  These helpers read the common fields.
"""

from __future__ import annotations

import numpy as np

QK_K = 256  # weights per super-block of the k-quants, i-quants and ternary types


def f16_field(blocks: np.ndarray, start: int) -> np.ndarray:
    """The little-endian IEEE half at byte ``start`` of each block, as float32.

    [n_blocks, type_size] uint8 -> [n_blocks, 1] float32
    """
    two_bytes = np.ascontiguousarray(blocks[:, start : start + 2])
    return two_bytes.view(np.float16).astype(np.float32)


def u16_fields(blocks: np.ndarray, start: int, count: int) -> np.ndarray:
    """``count`` little-endian uint16 starting at byte ``start``: [n_blocks, count]."""
    raw = np.ascontiguousarray(blocks[:, start : start + 2 * count])
    return raw.view("<u2")


def u32_fields(blocks: np.ndarray, start: int, count: int) -> np.ndarray:
    """``count`` little-endian uint32 starting at byte ``start``: [n_blocks, count]."""
    raw = np.ascontiguousarray(blocks[:, start : start + 4 * count])
    return raw.view("<u4")


def low_then_high_nibbles(packed: np.ndarray) -> np.ndarray:
    """Split each byte into two 4-bit values: all low nibbles first, then all high.

    This is the order of the legacy blocks (Q4_0, Q4_1, ...): byte ``j`` holds
    element ``j`` in its low nibble and element ``j + n_bytes`` in its high one.

    [n, n_bytes] uint8 -> [n, 2 * n_bytes] uint8 in 0..15
    """
    return np.concatenate([packed & 0x0F, packed >> 4], axis=-1)


def bits_of(packed: np.ndarray, bit_width: int) -> np.ndarray:
    """Split each byte into ``8 // bit_width`` fields, lowest bits first.

    [..., n_bytes] uint8 -> [..., 8 // bit_width, n_bytes] uint8
    (field ``k`` of byte ``j`` is at ``[..., k, j]``).
    """
    shifts = np.arange(0, 8, bit_width, dtype=np.uint8)[:, None]  # [fields, 1]
    mask = np.uint8((1 << bit_width) - 1)
    return (packed[..., None, :] >> shifts) & mask
