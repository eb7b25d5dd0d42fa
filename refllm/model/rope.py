"""RoPE frequencies: the angle per position of each rotated pair, with scaling folded in.

``refllm.kernels.reference.rope`` turns pair i of a head at position p by
``p * inv_freq[i]``; this module computes ``inv_freq`` the way llama.cpp does:

    plain       inv_freq[i] = base ** (-2i / rope_dim)
    linear      inv_freq[i] / factor                      (rope.scaling.type = linear)
    llama3      inv_freq[i] / rope_freqs[i]                (a "rope_freqs.weight" tensor)
    yarn        a per-pair mix of the plain and the linear frequency: pairs that turn
                fast (many rotations over the original context) keep the plain one,
                slow pairs take the interpolated one, a linear ramp in between; cos and
                sin are then multiplied by mscale = attn_factor * (1 + 0.1 ln factor)
"""

from __future__ import annotations

import math

import numpy as np

from refllm.model.config import RopeScaling


def yarn_ramp_bounds(rope_dim: int, original_ctx: int, base: float, beta_fast: float, beta_slow: float) -> tuple[float, float]:
    """The pair indices where the YaRN ramp starts and ends (llama.cpp's ggml_rope_yarn_corr_dims)."""

    def pair_turning(n_rotations: float) -> float:
        # the (fractional) pair index that turns n_rotations times over original_ctx positions
        return rope_dim * math.log(original_ctx / (n_rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(0.0, math.floor(pair_turning(beta_fast)))
    high = min(rope_dim - 1.0, math.ceil(pair_turning(beta_slow)))
    return low, high


def rope_frequencies(
    rope_dim: int,
    base: float,
    scaling: RopeScaling = RopeScaling(),
    freq_factors: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """-> (inv_freq f32[rope_dim/2], mscale) for ``refllm.kernels.reference.rope``."""
    pair = np.arange(rope_dim // 2, dtype=np.float64)  # [r/2]
    inv_freq = base ** (-2.0 * pair / rope_dim)  # [r/2], plain RoPE
    if freq_factors is not None:  # llama3-style per-pair factors
        inv_freq = inv_freq / np.asarray(freq_factors, dtype=np.float64)[: rope_dim // 2]

    mscale = 1.0
    if scaling.type == "linear":
        inv_freq = inv_freq / scaling.factor
    elif scaling.type == "yarn":
        original_ctx = scaling.original_context_length or 4096
        low, high = yarn_ramp_bounds(rope_dim, original_ctx, base, scaling.beta_fast, scaling.beta_slow)
        ramp = np.clip((pair - low) / max(0.001, high - low), 0.0, 1.0)  # 0 = fast pairs, 1 = slow pairs
        keep_plain = 1.0 - ramp
        inv_freq = inv_freq / scaling.factor * (1.0 - keep_plain) + inv_freq * keep_plain
        mscale = scaling.attn_factor * (1.0 + 0.1 * math.log(scaling.factor))
    return inv_freq.astype(np.float32), mscale
