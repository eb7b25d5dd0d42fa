"""The "k-quants": Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.

A k-quant *super-block* holds QK_K = 256 weights split into sub-blocks
(16 of 16 weights, or 8 of 32).  Each sub-block has a small integer scale
(and, for Q2_K/Q4_K/Q5_K, a minimum) that multiplies one f16 super-scale.

Layouts, bytes left to right (QK_K = 256):

    Q2_K (84 B)  | scales[16] | qs[64] | d f16 | dmin f16 |
                   scales[i] = mmmm ssss  (4-bit min m, 4-bit scale s of sub-block i)
                   w = d * s * q - dmin * m,          q in 0..3,  16 sub-blocks of 16

    Q3_K (110 B) | hmask[32] | qs[64] | scales[12] | d f16 |
                   w = d * (s - 32) * (q - 4 * (1 - hbit)),  q in 0..3, 16 x 16

    Q4_K (144 B) | d f16 | dmin f16 | scales[12] | qs[128] |
                   w = d * s * q - dmin * m,          q in 0..15,  8 sub-blocks of 32

    Q5_K (176 B) | d f16 | dmin f16 | scales[12] | qh[32] | qs[128] |
                   as Q4_K with q in 0..31 (bit 4 from qh)

    Q6_K (210 B) | ql[128] | qh[64] | scales int8[16] | d f16 |
                   w = d * s * (q - 32),              q in 0..63,  16 x 16

The 2-bit packing used by Q2_K/Q3_K ``qs`` and Q6_K ``qh``: the 256 weights
are two halves of 128; in half h, weight 32*k + l (k = 0..3, l = 0..31)
sits in bits 2k..2k+1 of byte 32*h + l:

    byte 32*h + l = [k=3][k=2][k=1][k=0]     (two bits each, k=0 lowest)
"""

from __future__ import annotations

import numpy as np

from refllm.quant.bits import QK_K, bits_of, f16_field



def two_bit_halves(packed: np.ndarray) -> np.ndarray:
    """[n, 32 * halves] uint8 -> [n, 128 * halves] uint8 in 0..3 (see module doc)."""
    n = packed.shape[0]
    per_half = packed.reshape(n, -1, 32)  # [n, halves, 32]
    fields = bits_of(per_half, 2)  # [n, halves, 4, 32]
    return fields.reshape(n, -1)


def unpack_q4_k_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 scale bytes of Q4_K/Q5_K -> (scale, min) of 8 sub-blocks, 6 bits each.

    Sub-blocks 0..3 keep their 6 bits whole; 4..7 are split into a low nibble
    (bytes 8..11) and 2 high bits borrowed from the top of bytes 0..7:

        byte  0..3 : [s4..s7 bits 5:4][scale 0..3, 6 bits]
        byte  4..7 : [m4..m7 bits 5:4][min   0..3, 6 bits]
        byte  8..11: [min 4..7 bits 3:0][scale 4..7 bits 3:0]

    [n, 12] uint8 -> ([n, 8] uint8, [n, 8] uint8)
    """
    first, second, third = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    scale = np.concatenate([first & 63, (third & 0x0F) | ((first >> 6) << 4)], axis=1)
    minimum = np.concatenate([second & 63, (third >> 4) | ((second >> 6) << 4)], axis=1)
    return scale, minimum


def unpack_q3_k_scales(scales: np.ndarray) -> np.ndarray:
    """The 12 scale bytes of Q3_K -> 16 signed 6-bit scales (already minus 32).

        low 4 bits of scale i : byte i % 8, low nibble if i < 8 else high nibble
        high 2 bits of scale i: byte 8 + i % 4, bits 2*(i // 4) .. 2*(i // 4) + 1

    [n, 12] uint8 -> [n, 16] float32 in -32..31
    """
    low = np.concatenate([scales[:, 0:8] & 0x0F, scales[:, 0:8] >> 4], axis=1)  # [n, 16]
    high = bits_of(scales[:, 8:12], 2).reshape(-1, 16)  # [n, 16]: field i//4 of byte i%4
    return ((low | (high << 4)).astype(np.float32)) - 32


def dequantize_q2_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 84] uint8 -> [n, 256] float32."""
    n = blocks.shape[0]
    scales = blocks[:, 0:16]
    q = two_bit_halves(blocks[:, 16:80]).reshape(n, 16, 16)  # [n, sub-block, 16]
    d, dmin = f16_field(blocks, 80), f16_field(blocks, 82)  # [n, 1] each
    sub_scale = (d * (scales & 0x0F).astype(np.float32))[:, :, None]  # [n, 16, 1]
    sub_min = (dmin * (scales >> 4).astype(np.float32))[:, :, None]  # [n, 16, 1]
    return (sub_scale * q.astype(np.float32) - sub_min).reshape(n, QK_K)


def dequantize_q3_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 110] uint8 -> [n, 256] float32.

    hmask: bit m of hmask[l] is the high bit of weight 32*m + l (m = 0..7).
    A high bit of 1 means "no offset"; 0 means "subtract 4".
    """
    n = blocks.shape[0]
    high_bits = bits_of(blocks[:, 0:32], 1).reshape(n, QK_K)  # [n, 256] in 0..1
    low_bits = two_bit_halves(blocks[:, 32:96])  # [n, 256] in 0..3
    scale = unpack_q3_k_scales(blocks[:, 96:108])  # [n, 16]
    d = f16_field(blocks, 108)  # [n, 1]
    q = low_bits.astype(np.int8) - 4 * (1 - high_bits.astype(np.int8))  # [n, 256] in -4..3
    sub_scale = (d * scale)[:, :, None]  # [n, 16, 1]
    return (sub_scale * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)


def _four_bit_chunks(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K nibbles: 4 chunks of 32 bytes; chunk c's low nibbles are
    sub-block 2c, its high nibbles sub-block 2c + 1.

    [n, 128] uint8 -> [n, 8, 32] uint8 in 0..15
    """
    n = qs.shape[0]
    chunks = qs.reshape(n, 4, 1, 32)
    return np.concatenate([chunks & 0x0F, chunks >> 4], axis=2).reshape(n, 8, 32)


def dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 144] uint8 -> [n, 256] float32."""
    n = blocks.shape[0]
    d, dmin = f16_field(blocks, 0), f16_field(blocks, 2)  # [n, 1] each
    scale, minimum = unpack_q4_k_scales(blocks[:, 4:16])  # [n, 8] each
    q = _four_bit_chunks(blocks[:, 16:144])  # [n, 8, 32]
    sub_scale = (d * scale.astype(np.float32))[:, :, None]  # [n, 8, 1]
    sub_min = (dmin * minimum.astype(np.float32))[:, :, None]  # [n, 8, 1]
    return (sub_scale * q.astype(np.float32) - sub_min).reshape(n, QK_K)


def dequantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 176] uint8 -> [n, 256] float32.

    qh: bit s of qh[l] is bit 4 of weight l of sub-block s.
    """
    n = blocks.shape[0]
    d, dmin = f16_field(blocks, 0), f16_field(blocks, 2)  # [n, 1] each
    scale, minimum = unpack_q4_k_scales(blocks[:, 4:16])  # [n, 8] each
    high = bits_of(blocks[:, 16:48], 1)  # [n, 8, 32] in 0..1
    q = _four_bit_chunks(blocks[:, 48:176]) | (high << 4)  # [n, 8, 32] in 0..31
    sub_scale = (d * scale.astype(np.float32))[:, :, None]  # [n, 8, 1]
    sub_min = (dmin * minimum.astype(np.float32))[:, :, None]  # [n, 8, 1]
    return (sub_scale * q.astype(np.float32) - sub_min).reshape(n, QK_K)


def dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 210] uint8 -> [n, 256] float32.

    Low 4 bits (ql): in half h, ql bytes 64h..64h+63; weight 32*k + l takes
        k=0: low nibble of byte l     k=1: low nibble of byte 32 + l
        k=2: high nibble of byte l    k=3: high nibble of byte 32 + l
    High 2 bits (qh): the 2-bit packing of the module doc.
    """
    n = blocks.shape[0]
    ql = blocks[:, 0:128].reshape(n, 2, 1, 64)  # [n, half, 1, 64]
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2).reshape(n, QK_K)  # [n, 256]
    high = two_bit_halves(blocks[:, 128:192])  # [n, 256] in 0..3
    scale = blocks[:, 192:208].view(np.int8).astype(np.float32)  # [n, 16]
    d = f16_field(blocks, 208)  # [n, 1]
    q = (low | (high << 4)).astype(np.int8) - 32  # [n, 256] in -32..31
    sub_scale = (d * scale)[:, :, None]  # [n, 16, 1]
    return (sub_scale * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)
