"""The "i-quants": non-linear codebooks instead of evenly spaced levels.

Two families:

* IQ4_NL / IQ4_XS map each 4-bit index through a fixed non-uniform table
  (``IQ4_NL_VALUES``), denser near zero where most weights live.
* IQ1_*, IQ2_*, IQ3_* store an *index into a grid* of small vectors (8 or 4
  weights each, tables in ``iq_grids.py``) plus sign bits.  A group of 8
  weights costs one index (8..11 bits) and 7 or 8 sign bits.

Signs for IQ2_XXS / IQ2_XS / IQ3_XXS come as a 7-bit index; the 8th sign is
implied: the number of minus signs is always even (``KSIGNS`` below).

Every super-block holds QK_K = 256 weights, except IQ4_NL (32).
"""

from __future__ import annotations

import numpy as np

from refllm.quant import iq_grids
from refllm.quant.bits import QK_K, bits_of, f16_field, low_then_high_nibbles, u16_fields, u32_fields


# The 16 levels of IQ4_NL / IQ4_XS (ggml's kvalues_iq4nl).
IQ4_NL_VALUES = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32
)

# Offset added to every IQ1 grid value, its sign chosen per group of 8 (or 16).
IQ1_DELTA = np.float32(0.125)


def _even_parity_signs() -> np.ndarray:
    """KSIGNS[i] = the 7 sign bits of i, plus bit 7 set when i has an odd
    number of ones, so that every pattern has an even number of minus signs.

    -> [128] uint8
    """
    index = np.arange(128, dtype=np.uint8)
    ones = bits_of(index[None, :], 1).sum(axis=1)[0]  # popcount of each index
    return index | ((ones & 1).astype(np.uint8) << 7)


KSIGNS = _even_parity_signs()

# Grids unpacked once: [n_entries, 8] or [n_entries, 4] float32.
IQ2XXS_GRID = iq_grids.grid_bytes(iq_grids.IQ2XXS_GRID, 8)
IQ2XS_GRID = iq_grids.grid_bytes(iq_grids.IQ2XS_GRID, 8)
IQ2S_GRID = iq_grids.grid_bytes(iq_grids.IQ2S_GRID, 8)
IQ3XXS_GRID = iq_grids.grid_bytes(iq_grids.IQ3XXS_GRID, 4)
IQ3S_GRID = iq_grids.grid_bytes(iq_grids.IQ3S_GRID, 4)
IQ1S_GRID = iq_grids.grid_bytes(iq_grids.IQ1S_GRID, 8, signed=True)


def _signs_of_every_byte() -> np.ndarray:
    """[256, 8] float32: row b holds +1 / -1 for bits 0..7 of b (1 = minus)."""
    bits = bits_of(np.arange(256, dtype=np.uint8)[:, None], 1)[:, :, 0]  # [256, 8]
    return np.where(bits == 0, np.float32(1), np.float32(-1))


SIGNS_OF_BYTE = _signs_of_every_byte()


def _sign_bits(sign_bytes: np.ndarray) -> np.ndarray:
    """Bytes of 8 sign bits -> +-1 per weight, bit j for weight j (a table lookup).

    [..., k] uint8 -> [..., k, 8] float32
    """
    return SIGNS_OF_BYTE[sign_bytes]


# --------------------------------------------------------------------------- IQ4


def dequantize_iq4_nl(blocks: np.ndarray) -> np.ndarray:
    """[n, 18] uint8 -> [n, 32] float32.

        | d f16 | qs[16] |      nibbles as Q4_0 (low = weight j, high = j + 16)
        w = d * IQ4_NL_VALUES[q]
    """
    d = f16_field(blocks, 0)  # [n, 1]
    q = low_then_high_nibbles(blocks[:, 2:18])  # [n, 32] in 0..15
    return d * IQ4_NL_VALUES[q]


def dequantize_iq4_xs(blocks: np.ndarray) -> np.ndarray:
    """[n, 136] uint8 -> [n, 256] float32.

        | d f16 | scales_h u16 | scales_l[4] | qs[128] |
        8 sub-blocks of 32, each with a 6-bit scale s (stored minus 32):
            low 4 bits : nibble (i % 2) of scales_l[i // 2]
            high 2 bits: bits 2i..2i+1 of scales_h
        sub-block i uses qs[16i .. 16i+15], nibbles as IQ4_NL
        w = d * (s - 32) * IQ4_NL_VALUES[q]
    """
    n = blocks.shape[0]
    d = f16_field(blocks, 0)  # [n, 1]
    scales_h = u16_fields(blocks, 2, 1)  # [n, 1]
    scales_l = blocks[:, 4:8]  # [n, 4]
    low = np.stack([scales_l & 0x0F, scales_l >> 4], axis=2).reshape(n, 8)  # [n, 8]
    high = ((scales_h >> (2 * np.arange(8, dtype=np.uint16))) & 3).astype(np.uint8)  # [n, 8]
    scale = (low | (high << 4)).astype(np.float32) - 32  # [n, 8]
    q = low_then_high_nibbles(blocks[:, 8:136].reshape(n, 8, 16))  # [n, 8, 32]
    sub_scale = (d * scale)[:, :, None]  # [n, 8, 1]
    return (sub_scale * IQ4_NL_VALUES[q]).reshape(n, QK_K)


# --------------------------------------------------------------------------- IQ2


def dequantize_iq2_xxs(blocks: np.ndarray) -> np.ndarray:
    """[n, 66] uint8 -> [n, 256] float32.

        | d f16 | 8 groups x (u32 grid indices, u32 signs+scale) |
        group of 32 weights = 4 x 8:
            first u32 : 4 bytes = 4 indices into the 256-entry grid
            second u32: bits 7l..7l+6 = sign index of sub-group l (l = 0..3)
                        bits 28..31   = 4-bit scale s
        w = d * (0.5 + s) * 0.25 * grid[index][j] * sign_j
    """
    n = blocks.shape[0]
    d = f16_field(blocks, 0)  # [n, 1]
    words = u32_fields(blocks, 2, 16).reshape(n, 8, 2)  # [n, group, 2]
    index = np.ascontiguousarray(words[:, :, 0]).view(np.uint8).reshape(n, 8, 4)  # [n, 8, 4]
    signs_and_scale = words[:, :, 1]  # [n, 8]
    scale = d * (np.float32(0.5) + (signs_and_scale >> 28).astype(np.float32)) * np.float32(0.25)
    sign_index = (signs_and_scale[:, :, None] >> (7 * np.arange(4, dtype=np.uint32))) & 127  # [n, 8, 4]
    signs = _sign_bits(KSIGNS[sign_index])  # [n, 8, 4, 8]
    grid = IQ2XXS_GRID[index]  # [n, 8, 4, 8]
    return (scale[:, :, None, None] * grid * signs).reshape(n, QK_K)


def dequantize_iq2_xs(blocks: np.ndarray) -> np.ndarray:
    """[n, 74] uint8 -> [n, 256] float32.

        | d f16 | qs u16[32] | scales[8] |
        qs[k]: bits 0..8 = index into the 512-entry grid (8 weights),
               bits 9..15 = sign index
        scales[g]: low nibble for the first 16 weights of group g, high for the last 16
        w = d * (0.5 + s) * 0.25 * grid[index][j] * sign_j
    """
    n = blocks.shape[0]
    d = f16_field(blocks, 0)  # [n, 1]
    qs = u16_fields(blocks, 2, 32)  # [n, 32]
    scales = blocks[:, 66:74]  # [n, 8]
    nibbles = np.stack([scales & 0x0F, scales >> 4], axis=2).reshape(n, 16)  # [n, 16 halves]
    scale = d * (np.float32(0.5) + nibbles.astype(np.float32)) * np.float32(0.25)  # [n, 16]
    signs = _sign_bits(KSIGNS[qs >> 9])  # [n, 32, 8]
    grid = IQ2XS_GRID[qs & 511]  # [n, 32, 8]
    values = (grid * signs).reshape(n, 16, 16)  # [n, half-group, 16]
    return (scale[:, :, None] * values).reshape(n, QK_K)


def dequantize_iq2_s(blocks: np.ndarray) -> np.ndarray:
    """[n, 82] uint8 -> [n, 256] float32.

        | d f16 | qs[32] | signs[32] | qh[8] | scales[8] |
        index k (k = 0..31, 8 weights each) = qs[k] | (bits 2(k%4)..2(k%4)+1 of qh[k//4]) << 8
            -> 1024-entry grid
        signs[k]: 8 explicit sign bits;  scales as IQ2_XS
    """
    n = blocks.shape[0]
    d = f16_field(blocks, 0)  # [n, 1]
    low = blocks[:, 2:34].astype(np.uint16)  # [n, 32]
    sign_bytes = blocks[:, 34:66]  # [n, 32]
    high = bits_of(blocks[:, 66:74], 2).transpose(0, 2, 1).reshape(n, 32)  # [n, 32]
    scales = blocks[:, 74:82]  # [n, 8]
    nibbles = np.stack([scales & 0x0F, scales >> 4], axis=2).reshape(n, 16)  # [n, 16]
    scale = d * (np.float32(0.5) + nibbles.astype(np.float32)) * np.float32(0.25)  # [n, 16]
    grid = IQ2S_GRID[low | (high.astype(np.uint16) << 8)]  # [n, 32, 8]
    values = (grid * _sign_bits(sign_bytes)).reshape(n, 16, 16)  # [n, 16, 16]
    return (scale[:, :, None] * values).reshape(n, QK_K)


# --------------------------------------------------------------------------- IQ3


def dequantize_iq3_xxs(blocks: np.ndarray) -> np.ndarray:
    """[n, 98] uint8 -> [n, 256] float32.

        | d f16 | qs[64] | signs_and_scales u32[8] |
        qs[k]: index into the 256-entry grid of 4-weight vectors
        u32 of group g (32 weights): bits 7l..7l+6 sign index of weights 8l..8l+7,
                                     bits 28..31 scale s
        w = d * (0.5 + s) * 0.5 * grid[index][j] * sign_j
    """
    n = blocks.shape[0]
    d = f16_field(blocks, 0)  # [n, 1]
    grid = IQ3XXS_GRID[blocks[:, 2:66]].reshape(n, 8, 4, 8)  # [n, group, 4, 8]
    words = u32_fields(blocks, 66, 8)  # [n, 8]
    scale = d * (np.float32(0.5) + (words >> 28).astype(np.float32)) * np.float32(0.5)  # [n, 8]
    sign_index = (words[:, :, None] >> (7 * np.arange(4, dtype=np.uint32))) & 127  # [n, 8, 4]
    signs = _sign_bits(KSIGNS[sign_index])  # [n, 8, 4, 8]
    return (scale[:, :, None, None] * grid * signs).reshape(n, QK_K)


def dequantize_iq3_s(blocks: np.ndarray) -> np.ndarray:
    """[n, 110] uint8 -> [n, 256] float32.

        | d f16 | qs[64] | qh[8] | signs[32] | scales[4] |
        index k (4 weights each) = qs[k] | (bit k%8 of qh[k//8]) << 8  -> 512-entry grid
        signs: 8 explicit bits per 8 weights
        group g (32 weights): 4-bit scale s = nibble (g%2) of scales[g//2]
        w = d * (1 + 2s) * grid[index][j] * sign_j
    """
    n = blocks.shape[0]
    d = f16_field(blocks, 0)  # [n, 1]
    low = blocks[:, 2:66].astype(np.uint16)  # [n, 64]
    high = bits_of(blocks[:, 66:74], 1).transpose(0, 2, 1).reshape(n, 64)  # [n, 64]
    grid = IQ3S_GRID[low | (high.astype(np.uint16) << 8)].reshape(n, 32, 8)  # [n, 32, 8]
    signs = _sign_bits(blocks[:, 74:106])  # [n, 32, 8]
    scales = blocks[:, 106:110]  # [n, 4]
    nibbles = np.stack([scales & 0x0F, scales >> 4], axis=2).reshape(n, 8)  # [n, 8]
    scale = d * (1 + 2 * nibbles.astype(np.float32))  # [n, 8]
    values = (grid * signs).reshape(n, 8, 32)  # [n, group, 32]
    return (scale[:, :, None] * values).reshape(n, QK_K)


# --------------------------------------------------------------------------- IQ1


def dequantize_iq1_s(blocks: np.ndarray) -> np.ndarray:
    """[n, 50] uint8 -> [n, 256] float32.

        | d f16 | qs[32] | qh u16[8] |
        group g (32 weights = 4 x 8), qh[g] = [sign of delta][s: 3 bits][4 x 3 high index bits]
            index l = qs[4g + l] | ((qh[g] >> 3l) & 7) << 8   -> 2048-entry grid of -1/0/+1
            delta   = -0.125 if bit 15 of qh[g] else +0.125
        w = d * (2s + 1) * (grid[index][j] + delta)
    """
    n = blocks.shape[0]
    d = f16_field(blocks, 0)  # [n, 1]
    low = blocks[:, 2:34].reshape(n, 8, 4).astype(np.uint16)  # [n, group, 4]
    qh = u16_fields(blocks, 34, 8)  # [n, 8]
    high = (qh[:, :, None] >> (3 * np.arange(4, dtype=np.uint16))) & 7  # [n, 8, 4]
    grid = IQ1S_GRID[low | (high << 8)]  # [n, 8, 4, 8]
    scale = d * (2 * ((qh >> 12) & 7) + 1).astype(np.float32)  # [n, 8]
    delta = np.where(qh & 0x8000, -IQ1_DELTA, IQ1_DELTA)  # [n, 8]
    values = grid + delta[:, :, None, None]  # [n, 8, 4, 8]
    return (scale[:, :, None, None] * values).reshape(n, QK_K)


def dequantize_iq1_m(blocks: np.ndarray) -> np.ndarray:
    """[n, 56] uint8 -> [n, 256] float32.

        | qs[32] | qh[16] | scales u16[4] |
        The f16 super-scale d is spread over the top nibbles of the 4 scale words:
            d bits = (sc[0] >> 12) | (sc[1] >> 12) << 4 | (sc[2] >> 12) << 8 | (sc[3] >> 12) << 12
        16 half-groups of 16 weights, 3-bit scale s_h = bits 3(h%4)..3(h%4)+2 of sc[h//4]
        32 sub-groups of 8 weights; sub-group k uses nibble (k%2) of qh[k//2]:
            bits 0..2 = high index bits (index = qs[k] | bits << 8), bit 3 = sign of delta
        w = d * (2 s_h + 1) * (grid[index][j] + delta)
    """
    n = blocks.shape[0]
    sc = u16_fields(blocks, 48, 4)  # [n, 4]
    top = sc >> 12  # [n, 4]
    d_bits = top[:, 0] | (top[:, 1] << 4) | (top[:, 2] << 8) | (top[:, 3] << 12)  # [n]
    d = d_bits.astype("<u2").view(np.float16).astype(np.float32)[:, None]  # [n, 1]

    three_bit = (sc[:, :, None] >> (3 * np.arange(4, dtype=np.uint16))) & 7  # [n, 4, 4]
    scale = d * (2 * three_bit.reshape(n, 16) + 1).astype(np.float32)  # [n, 16]

    qh = blocks[:, 32:48]  # [n, 16]
    qh_nibbles = np.stack([qh & 0x0F, qh >> 4], axis=2).reshape(n, 32)  # [n, 32]
    index = blocks[:, 0:32].astype(np.uint16) | ((qh_nibbles & 7).astype(np.uint16) << 8)  # [n, 32]
    delta = np.where(qh_nibbles & 8, -IQ1_DELTA, IQ1_DELTA)  # [n, 32]
    values = IQ1S_GRID[index] + delta[:, :, None]  # [n, 32, 8]
    return (scale[:, :, None] * values.reshape(n, 16, 16)).reshape(n, QK_K)
