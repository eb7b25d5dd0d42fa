"""FP4 formats: weights in E2M1 (4-bit float) times a shared scale.

    MXFP4 (17 B, 32 weights)  | e u8 (E8M0) | qs[16] |            (OCP Microscaling)
    NVFP4 (36 B, 64 weights)  | d u8[4] (UE4M3) | qs[32] |        (4 sub-blocks of 16)

    E2M1 weight: s ee m -> one of +-{0, 0.5, 1, 1.5, 2, 3, 4, 6}.  ggml keeps the
    E2M1 values doubled as integers (FP4_VALUES below) and halves the scale
    instead, so  w = FP4_VALUES[q] * scale / 2.

    MXFP4: E8M0 scale = 8 exponent bits, no sign, no mantissa: 2^(e - 127), so
        w = FP4_VALUES[q] * 2^(e - 128).
        Nibbles as Q4_0: byte j holds weight j (low) and weight j + 16 (high).
    NVFP4: UE4M3 scale per 16 weights = unsigned 4-bit exponent (bias 7), 3-bit
        mantissa: 0 eeee mmm -> (1 + m/8) 2^(e-7), or m 2^-9 when e = 0
        (byte 0x7F, E4M3's NaN, reads as 0).  Sub-block s uses qs[8s .. 8s+7]:
        low nibbles = weights 16s .. 16s+7, high nibbles = 16s+8 .. 16s+15.
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


def ue4m3_to_half_scale(code: np.ndarray) -> np.ndarray:
    """UE4M3 byte -> its value / 2 as float32, exact.  [...] uint8 -> [...] float32"""
    exponent = ((code >> 3) & 0x0F).astype(np.int32)
    mantissa = (code & 0x07).astype(np.float32)
    normal = (np.float32(1) + mantissa / np.float32(8)) * np.ldexp(np.float32(1), exponent - 7)
    subnormal = mantissa * np.float32(2.0**-9)
    value = np.where(exponent == 0, subnormal, normal).astype(np.float32)
    return np.where(code == 0x7F, np.float32(0), value * np.float32(0.5))


def dequantize_nvfp4(blocks: np.ndarray) -> np.ndarray:
    """[n, 36] uint8 -> [n, 64] float32."""
    n = blocks.shape[0]
    scale = ue4m3_to_half_scale(blocks[:, 0:4])[:, :, None]  # [n, 4, 1]
    q = low_then_high_nibbles(blocks[:, 4:36].reshape(n, 4, 8))  # [n, 4, 16]
    return (FP4_VALUES[q] * scale).reshape(n, 64)
