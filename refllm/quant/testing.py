"""Random but *valid* quantized blocks, for tests of dequantizers and kernels.

Random bytes make fine quants but poor scales: a random f16 is often NaN or
inf.  ``random_blocks`` fills a block with random bytes, then overwrites every
scale field with a finite, moderate value (f16 scales ~ N(0, 0.05); MXFP4
exponents near 2^0).  Use it to hold a fast kernel against the NumPy
reference on many layouts at once:

    blocks = random_blocks(GGMLQuantizationType.Q4_K, 64, np.random.default_rng(0))
    expected = DEQUANTIZERS[GGMLQuantizationType.Q4_K](blocks)
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

# Byte offsets of the f16 scale fields inside one block of each type.
F16_SCALE_OFFSETS: dict[T, tuple[int, ...]] = {
    T.Q4_0: (0,), T.Q4_1: (0, 2), T.Q5_0: (0,), T.Q5_1: (0, 2), T.Q8_0: (0,),
    T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,),
    T.IQ4_NL: (0,), T.IQ4_XS: (0,), T.IQ1_S: (0,), T.IQ2_XXS: (0,), T.IQ2_XS: (0,),
    T.IQ2_S: (0,), T.IQ3_XXS: (0,), T.IQ3_S: (0,), T.TQ1_0: (52,), T.TQ2_0: (64,), T.Q1_0: (0,),
}  # fmt: skip


def random_f16(rng: np.random.Generator, n: int, spread: float = 0.05) -> np.ndarray:
    """[n] finite float16 values ~ N(0, spread)."""
    return (rng.standard_normal(n) * spread).astype(np.float16)


def random_blocks(ggml_type: T, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """[n_blocks, type_size] uint8 of random blocks with finite scales."""
    ggml_type = T(ggml_type)
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    if ggml_type == T.F32:
        return rng.standard_normal(n_blocks).astype("<f4").view(np.uint8).reshape(n_blocks, 4)
    if ggml_type == T.F16:
        return random_f16(rng, n_blocks, 1.0).astype("<f2").view(np.uint8).reshape(n_blocks, 2)
    if ggml_type == T.BF16:
        top = rng.standard_normal(n_blocks).astype(np.float32).view(np.uint32) >> 16
        return top.astype("<u2").view(np.uint8).reshape(n_blocks, 2)

    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for offset in F16_SCALE_OFFSETS.get(ggml_type, ()):
        blocks[:, offset : offset + 2] = random_f16(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    if ggml_type == T.IQ1_M:
        # the f16 scale is spread over the top nibbles of the 4 uint16 at bytes 48..55
        d_bits = random_f16(rng, n_blocks).view(np.uint16).astype(np.uint16)  # [n]
        words = np.ascontiguousarray(blocks[:, 48:56]).view("<u2")  # [n, 4]
        nibbles = (d_bits[:, None] >> (4 * np.arange(4, dtype=np.uint16))) & 0xF  # [n, 4]
        words = (words & 0x0FFF) | (nibbles << 12)
        blocks[:, 48:56] = words.astype("<u2").view(np.uint8)
    if ggml_type == T.MXFP4:
        blocks[:, 0] = rng.integers(117, 137, size=n_blocks)  # 2^(e-127) in 2^-10 .. 2^9
    return blocks


def reproducible_values(n: int, kind: str = "normal", seed: int = 0) -> np.ndarray:
    """[n] float32 pseudo-random values built from integer hashing and exactly
    rounded float32 arithmetic only, so they are bit-identical on every machine
    and NumPy version (unlike RNG streams or SIMD sin/cos).  Golden files can
    then store just the expected *outputs* for large inputs.

    kinds: "normal"  ~ N(0, 1) (Irwin-Hall: a sum of 4 uniforms, rescaled)
           "uniform" ~ U(-1, 3)
           "sparse"  "normal" with 70% of the values set to 0
           "outliers" "normal" with 2% of the values multiplied by 9
    """
    index = np.arange(n, dtype=np.uint64)

    def uniform(stream: int) -> np.ndarray:
        """SplitMix64-style hash of (seed, stream, index) -> [n] float32 in [0, 1)."""
        h = (index + np.uint64((seed * 16 + stream) * (1 << 40))) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
        return (h >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)  # 24 bits: exact

    normal = (uniform(0) + uniform(1) + uniform(2) + uniform(3) - np.float32(2)) * np.float32(np.sqrt(3.0))
    if kind == "normal":
        return normal
    if kind == "uniform":
        return uniform(4) * np.float32(4) - np.float32(1)
    if kind == "sparse":
        return np.where(uniform(5) < np.float32(0.7), np.float32(0), normal)
    if kind == "outliers":
        return np.where(uniform(6) < np.float32(0.02), normal * np.float32(9), normal)
    raise ValueError(f"unknown kind {kind!r}")
