"""MXFP4 (OCP Microscaling): 32 FP4 (E2M1) weights sharing one power-of-two scale.

    MXFP4 (17 B)  | e u8 (E8M0) | qs[16] |

    E8M0 scale: 8 exponent bits, no sign, no mantissa: 2^(e - 127).
    E2M1 weight: s ee m -> one of +-{0, 0.5, 1, 1.5, 2, 3, 4, 6}.
    ggml keeps the E2M1 values doubled as integers (FP4_VALUES below) and
    halves the scale instead, so  w = FP4_VALUES[q] * 2^(e - 128).
    Nibbles as Q4_0: byte j holds weight j (low) and weight j + 16 (high).
"""

from __future__ import annotations

import numpy as np

from refllm.quant.bits import low_then_high_nibbles

# E2M1 values times two, indexed by the 4-bit code s ee m.
FP4_VALUES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.float32)


def e8m0_to_half_scale(e: np.ndarray) -> np.ndarray:
    """E8M0 byte -> 2^(e - 128) as float32, exact (e = 0, 1 become subnormals).

    Built directly from bits, as ggml does: for e >= 2 the float32 exponent
    field is e - 1; below that the value is the subnormal 2^-128 or 2^-127.
    [...] uint8 -> [...] float32
    """
    e = e.astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - 1) << 23).astype(np.uint32)
    return bits.view(np.float32)


def dequantize_mxfp4(blocks: np.ndarray) -> np.ndarray:
    """[n, 17] uint8 -> [n, 32] float32."""
    scale = e8m0_to_half_scale(blocks[:, 0:1])  # [n, 1]
    q = low_then_high_nibbles(blocks[:, 1:17])  # [n, 32] in 0..15
    return FP4_VALUES[q] * scale
