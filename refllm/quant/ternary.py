"""Ternary formats (weights in {-1, 0, +1} times a scale): TQ1_0, TQ2_0;
and the binary one (weights +-d): Q1_0.

    Q1_0  (18 B, 128 weights)  | d f16 | qs[16] |
        one sign bit per weight: bit j % 8 of byte j // 8;  w = +d if set, else -d

    TQ2_0 (66 B)  | qs[64] | d f16 |
        2 bits per weight, the k-quant 2-bit packing: in half h (0, 1), weight
        32k + l sits in bits 2k..2k+1 of byte 32h + l.   w = d * (q - 1)

    TQ1_0 (54 B)  | qs[48] | qh[4] | d f16 |
        5 trits per byte (3^5 = 243 <= 256), stored as a base-3 *fraction*:
        byte = ceil(t0.t1t2t3t4 (base 3) * 256).  Trit k comes out by
        multiplying by 3^k (mod 256) and taking the integer part of x 3 / 256:

            trit_k = ((byte * 3^k mod 256) * 3) >> 8

        weights   0..159: qs[0..31],  trit k of qs[m] -> weight 32k + m
        weights 160..239: qs[32..47], trit k of qs[32+m] -> weight 160 + 16k + m
        weights 240..255: qh[0..3],   trit k (k < 4) of qh[m] -> weight 240 + 4k + m
        w = d * (trit - 1)
"""

from __future__ import annotations

import numpy as np

from refllm.quant.bits import bits_of, f16_field
from refllm.quant.kquants import two_bit_halves

POWERS_OF_3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


def _trits(packed: np.ndarray, n_trits: int) -> np.ndarray:
    """[n, m] uint8 -> [n, n_trits * m] uint8 in 0..2, trit-major."""
    shifted = packed[:, None, :] * POWERS_OF_3[:n_trits, None]  # [n, k, m], wraps mod 256
    return ((shifted.astype(np.uint16) * 3) >> 8).astype(np.uint8).reshape(packed.shape[0], -1)


def dequantize_tq1_0(blocks: np.ndarray) -> np.ndarray:
    """[n, 54] uint8 -> [n, 256] float32."""
    t = np.concatenate(
        [_trits(blocks[:, 0:32], 5), _trits(blocks[:, 32:48], 5), _trits(blocks[:, 48:52], 4)],
        axis=1,
    )  # [n, 256] in 0..2
    d = f16_field(blocks, 52)  # [n, 1]
    return d * (t.astype(np.float32) - 1)


def dequantize_tq2_0(blocks: np.ndarray) -> np.ndarray:
    """[n, 66] uint8 -> [n, 256] float32."""
    q = two_bit_halves(blocks[:, 0:64])  # [n, 256] in 0..3
    d = f16_field(blocks, 64)  # [n, 1]
    return d * (q.astype(np.float32) - 1)


# [256, 8]: for each byte, +1 where bit j is set and -1 where it is clear
PLUS_MINUS_OF_BYTE = np.where(bits_of(np.arange(256, dtype=np.uint8)[:, None], 1)[:, :, 0] == 1, 1, -1).astype(
    np.float32
)


def dequantize_q1_0(blocks: np.ndarray) -> np.ndarray:
    """[n, 18] uint8 -> [n, 128] float32."""
    n = blocks.shape[0]
    signs = PLUS_MINUS_OF_BYTE[blocks[:, 2:18]].reshape(n, 128)  # [n, 16 bytes x 8 bits]
    d = f16_field(blocks, 0)  # [n, 1]
    return d * signs
