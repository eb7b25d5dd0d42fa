"""Unquantized element types: F32, F16, BF16 (block size 1).

    F32   4 bytes  IEEE single, little-endian
    F16   2 bytes  IEEE half:  s eeeee mmmmmmmmmm
    BF16  2 bytes  the top half of an IEEE single:  s eeeeeeee mmmmmmm
                   (so float32 bits = bf16 bits << 16, exactly)
"""

from __future__ import annotations

import numpy as np


def dequantize_f32(blocks: np.ndarray) -> np.ndarray:
    """[n, 4] uint8 -> [n, 1] float32 (a reinterpretation, no arithmetic)."""
    return np.ascontiguousarray(blocks).view("<f4").astype(np.float32, copy=False)


def dequantize_f16(blocks: np.ndarray) -> np.ndarray:
    """[n, 2] uint8 -> [n, 1] float32 (every half is exactly a single)."""
    return np.ascontiguousarray(blocks).view("<f2").astype(np.float32)


def dequantize_bf16(blocks: np.ndarray) -> np.ndarray:
    """[n, 2] uint8 -> [n, 1] float32 by shifting the 16 bits to the top."""
    top_half = np.ascontiguousarray(blocks).view("<u2").astype(np.uint32)
    return (top_half << 16).view(np.float32)


def quantize_f32(values: np.ndarray) -> np.ndarray:
    """[n, 1] float32 -> [n, 4] uint8."""
    return np.ascontiguousarray(values, dtype="<f4").view(np.uint8)


def quantize_f16(values: np.ndarray) -> np.ndarray:
    """[n, 1] float32 -> [n, 2] uint8, rounded to nearest even (as ggml does)."""
    return np.ascontiguousarray(values.astype("<f2")).view(np.uint8)


def quantize_bf16(values: np.ndarray) -> np.ndarray:
    """[n, 1] float32 -> [n, 2] uint8: round to nearest even on the dropped 16 bits.

    Same rule as ggml's ``ggml_compute_fp32_to_bf16``: a NaN stays a (quiet) NaN,
    everything else gets ``0x7fff + lowest kept bit`` added before truncation.
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    quiet_nan = (bits >> 16) | 0x40
    top = np.where(is_nan, quiet_nan, rounded).astype("<u2")
    return top.view(np.uint8)
