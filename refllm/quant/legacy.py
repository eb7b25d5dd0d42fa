"""The original ggml block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Every block holds 32 consecutive weights and one f16 scale ``d`` (plus a
minimum ``m`` for the ``_1`` variants).  Bytes, left to right:

    Q4_0  (18 B)  | d f16 | qs[16] |                       w = d * (q - 8)
    Q4_1  (20 B)  | d f16 | m f16 | qs[16] |               w = d * q + m
    Q5_0  (22 B)  | d f16 | qh u32 | qs[16] |              w = d * (q - 16)
    Q5_1  (24 B)  | d f16 | m f16 | qh u32 | qs[16] |      w = d * q + m
    Q8_0  (34 B)  | d f16 | qs int8[32] |                  w = d * q

4-bit packing (qs[16] -> 32 values): byte j holds weight j in its LOW
nibble and weight j + 16 in its HIGH nibble:

    qs[j] = hhhh llll     weight[j] = llll,  weight[j + 16] = hhhh

5-bit weights add one high bit per weight from the 32-bit word qh:
bit j of qh (little-endian) is bit 4 of weight j.
"""

from __future__ import annotations

import numpy as np

from refllm.quant.bits import f16_field, low_then_high_nibbles, u32_fields


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    """[n, 1] uint32 -> [n, 32] uint8: bit j of qh, for j = 0..31."""
    return ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """[n, 18] uint8 -> [n, 32] float32."""
    d = f16_field(blocks, 0)  # [n, 1]
    q = low_then_high_nibbles(blocks[:, 2:18])  # [n, 32] in 0..15
    return d * (q.astype(np.float32) - 8)


def dequantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    """[n, 20] uint8 -> [n, 32] float32."""
    d, m = f16_field(blocks, 0), f16_field(blocks, 2)  # [n, 1] each
    q = low_then_high_nibbles(blocks[:, 4:20])  # [n, 32] in 0..15
    return d * q.astype(np.float32) + m


def dequantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    """[n, 22] uint8 -> [n, 32] float32."""
    d = f16_field(blocks, 0)  # [n, 1]
    high = _fifth_bits(u32_fields(blocks, 2, 1))  # [n, 32] in 0..1
    low = low_then_high_nibbles(blocks[:, 6:22])  # [n, 32] in 0..15
    q = low | (high << 4)  # [n, 32] in 0..31
    return d * (q.astype(np.float32) - 16)


def dequantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    """[n, 24] uint8 -> [n, 32] float32."""
    d, m = f16_field(blocks, 0), f16_field(blocks, 2)  # [n, 1] each
    high = _fifth_bits(u32_fields(blocks, 4, 1))  # [n, 32]
    low = low_then_high_nibbles(blocks[:, 8:24])  # [n, 32]
    q = low | (high << 4)  # [n, 32] in 0..31
    return d * q.astype(np.float32) + m


def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """[n, 34] uint8 -> [n, 32] float32."""
    d = f16_field(blocks, 0)  # [n, 1]
    q = blocks[:, 2:34].view(np.int8)  # [n, 32] in -128..127
    return d * q.astype(np.float32)
