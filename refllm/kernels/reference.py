"""The NumPy reference ops of the forward pass, and the ``Backend`` that bundles them.

Every forward-pass file (``refllm/model/llama.py``, ``gemma3.py``, ...) calls its
math only through a ``Backend`` object, never through these functions directly.
This module's functions ARE the readable reference: plain NumPy, float32, one
small function per op.  A faster backend (``refllm/kernels/numba_backend.py``)
provides the same functions with the same shapes and exports ``BACKEND``; the
golden-logit tests then check both against llama.cpp and HF transformers.

Shapes used in the docstrings:

    n        tokens in this call (the whole prompt in prefill, 1 in decode)
    n_ctx    positions held in the KV cache so far (including this call's)
    d        model width (n_embd)
    heads    query heads;  kv_heads  key/value heads (GQA: heads % kv_heads == 0)
    hd       head dimension (key_length);  hd_v  value head dimension

Weights are ``refllm.gguf.TensorInfo`` objects whose bytes stay quantized in the
memory map: ``linear`` and ``embedding_rows`` dequantize what they need, when
they need it, and keep nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from refllm.gguf import TensorInfo

# --------------------------------------------------------------------------- weights


WEIGHTS_PER_CHUNK = 1 << 22  # linear() dequantizes at most 4M weights (16 MB of float32) at a time


def linear(x: np.ndarray, w: TensorInfo) -> np.ndarray:
    """``x @ W.T``: a matrix product against a (quantized) weight.

    x: f32[n, k];  w: a tensor of NumPy shape (m, k) (one row per output)
    returns f32[n, m]

    W is dequantized a block of rows at a time, so even a 262144-row output
    head never exists in float32 all at once.
    """
    from refllm.quant import dequantize_rows

    m, k = w.shape
    rows_per_chunk = max(1, WEIGHTS_PER_CHUNK // k)
    out = np.empty((x.shape[0], m), dtype=np.float32)  # [n, m]
    for start in range(0, m, rows_per_chunk):
        stop = min(m, start + rows_per_chunk)
        weight = dequantize_rows(w, slice(start, stop))  # [rows, k] float32
        out[:, start:stop] = x @ weight.T  # [n, k] @ [k, rows] -> [n, rows]
    return out


def embedding_rows(w: TensorInfo, ids: np.ndarray) -> np.ndarray:
    """Look up rows of an embedding table: only the rows asked for are dequantized.

    w: a tensor of NumPy shape (n_vocab, d);  ids: int[n]
    returns f32[n, d]
    """
    from refllm.quant import dequantize_rows

    return dequantize_rows(w, np.asarray(ids, dtype=np.int64))


# --------------------------------------------------------------------------- elementwise


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis: ``x / sqrt(mean(x**2) + eps) * weight``.

    x: f32[..., d] (e.g. [n, d], or [n, heads, hd] for QK-norm);  weight: f32[d]
    returns f32[..., d]
    """
    mean_square = np.mean(x * x, axis=-1, keepdims=True)  # [..., 1]
    return x / np.sqrt(mean_square + eps) * weight  # [..., d]


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU (swish): ``x * sigmoid(x)``.  Any shape -> same shape."""
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (``gelu_pytorch_tanh``).  Any shape -> same shape.

    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))
    """
    c = np.float32(np.sqrt(2.0 / np.pi))
    return 0.5 * x * (1.0 + np.tanh(c * (x + np.float32(0.044715) * x * x * x)))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``.  Any shape -> same shape."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


# --------------------------------------------------------------------------- position


def rope(
    x: np.ndarray,
    positions: np.ndarray,
    inv_freq: np.ndarray,
    neox: bool,
    mscale: float = 1.0,
) -> np.ndarray:
    """Rotary position embedding.

    x: f32[n, heads, hd];  positions: int[n] (absolute position of each token)
    inv_freq: f32[r/2], the angle per position of each rotated pair (rope base,
        frequency scaling and YaRN ramp already folded in by the model);
        only the first r = 2 * len(inv_freq) dims of each head rotate, the rest pass through
    neox: how the r dims are paired:
        False ("normal", llama-arch GGUFs): pairs (0,1), (2,3), ... adjacent dims
        True  ("neox", qwen2/qwen3/gemma3): pairs (i, i + r/2), first half with second half
    mscale: YaRN's attention factor, multiplies cos and sin (1.0 otherwise)
    returns f32[n, heads, hd]

    Each pair (a, b) at position p turns by the angle theta = p * inv_freq[i]:
        a' = a cos(theta) - b sin(theta)
        b' = a sin(theta) + b cos(theta)
    """
    r = 2 * len(inv_freq)
    angles = positions.astype(np.float32)[:, None] * inv_freq[None, :]  # [n, r/2]
    cos = (np.cos(angles) * mscale)[:, None, :]  # [n, 1, r/2], broadcast over heads
    sin = (np.sin(angles) * mscale)[:, None, :]  # [n, 1, r/2]

    rotated, passthrough = x[..., :r], x[..., r:]  # [n, heads, r], [n, heads, hd - r]
    if neox:
        a, b = rotated[..., : r // 2], rotated[..., r // 2 :]  # [n, heads, r/2] each
    else:
        a, b = rotated[..., 0::2], rotated[..., 1::2]  # [n, heads, r/2] each
    a_new = a * cos - b * sin
    b_new = a * sin + b * cos
    if neox:
        rotated = np.concatenate([a_new, b_new], axis=-1)  # [n, heads, r]
    else:
        rotated = np.stack([a_new, b_new], axis=-1).reshape(rotated.shape)  # interleave back
    return np.concatenate([rotated, passthrough], axis=-1).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- attention


def visible_keys(positions: np.ndarray, n_ctx: int, window: int | None = None) -> np.ndarray:
    """The attention mask: which key positions each query may see.

    positions: int[n], each query's position -> bool[n, n_ctx]: key j is visible to a query
    at position p when j <= p (causal) and, with a window, p - window < j.
    """
    key_pos = np.arange(n_ctx)[None, :]  # [1, n_ctx]
    query_pos = positions[:, None]  # [n, 1]
    visible = key_pos <= query_pos  # [n, n_ctx], causal
    if window is not None:
        visible &= key_pos > query_pos - window
    return visible


def attention(
    q: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    positions: np.ndarray,
    scale: float,
    window: int | None = None,
) -> np.ndarray:
    """Causal (optionally sliding-window) grouped-query attention over the KV cache.

    q: f32[n, heads, hd], the queries of this call, already rotated
    k_cache: f32[n_ctx, kv_heads, hd], v_cache: f32[n_ctx, kv_heads, hd_v]:
        the cache up to and including this call's tokens; slot j holds position j
    positions: int[n], the position of each query
    scale: multiplies q.k (usually 1/sqrt(hd))
    window: if given, a query at position p sees keys at positions j with
        p - window < j <= p (sliding-window layers); else all j <= p
    returns f32[n, heads, hd_v]

    Query head h reads key/value head h // (heads // kv_heads).
    """
    n, n_heads, _ = q.shape
    n_ctx, n_kv_heads, _ = k_cache.shape
    group = n_heads // n_kv_heads
    visible = visible_keys(positions, n_ctx, window)  # [n, n_ctx]

    # Repeat each kv head for the query heads that share it (GQA).
    k = np.repeat(k_cache, group, axis=1)  # [n_ctx, heads, hd]
    v = np.repeat(v_cache, group, axis=1)  # [n_ctx, heads, hd_v]

    scores = np.einsum("nhd,chd->hnc", q, k) * np.float32(scale)  # [heads, n, n_ctx]
    scores = np.where(visible[None, :, :], scores, np.float32(-np.inf))
    weights = softmax(scores, axis=-1)  # [heads, n, n_ctx]
    out = np.einsum("hnc,chd->nhd", weights, v)  # [n, heads, hd_v]
    return out.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- backend


@dataclass(frozen=True)
class Backend:
    """The ops a forward pass needs; each field has the signature of the function above.

    ``zeros`` and ``to_host`` matter only to a backend whose arrays live elsewhere (the
    ``cuda`` one keeps activations and the KV cache on the GPU): ``zeros(shape)`` allocates
    the KV cache (None: host memory, ``refllm.model.kv_cache``'s allocator), ``to_host(x)``
    turns an op's output into a NumPy array (where ``refllm.model.loaded.Model`` returns it).
    """

    name: str
    linear: Callable[[np.ndarray, TensorInfo], np.ndarray]
    embedding_rows: Callable[[TensorInfo, np.ndarray], np.ndarray]
    rms_norm: Callable[[np.ndarray, np.ndarray, float], np.ndarray]
    rope: Callable[..., np.ndarray]
    attention: Callable[..., np.ndarray]
    silu: Callable[[np.ndarray], np.ndarray]
    gelu_tanh: Callable[[np.ndarray], np.ndarray]
    softmax: Callable[..., np.ndarray]
    zeros: Callable[[tuple[int, ...]], Any] | None = None
    to_host: Callable[[Any], np.ndarray] = np.asarray
    linear_many: Callable[[np.ndarray, list[TensorInfo]], list[np.ndarray]] | None = None  # see linears

    def linears(self, x: np.ndarray, ws: list[TensorInfo]) -> list[np.ndarray]:
        """``[linear(x, w) for w in ws]``: several projections of one input (q, k, v; gate, up).
        A backend may compute them together (``linear_many``: the Numba one shares out all
        their tiles at once); a copy of a backend with its own ``linear`` (``dataclasses.replace``)
        and no ``linear_many`` runs them one by one through that ``linear``."""
        if self.linear_many is not None:
            return self.linear_many(x, ws)
        return [self.linear(x, w) for w in ws]


NUMPY_BACKEND = Backend(
    name="numpy",
    linear=linear,
    embedding_rows=embedding_rows,
    rms_norm=rms_norm,
    rope=rope,
    attention=attention,
    silu=silu,
    gelu_tanh=gelu_tanh,
    softmax=softmax,
)

BACKEND_NAMES = ("numpy", "numba", "cuda")


def get_backend(name: str = "numpy") -> Backend:
    """The backend called ``name``: "numpy" (this module), "numba" (``refllm.kernels.numba_backend``)
    or "cuda" (``refllm.kernels.cuda.backend``, where a GPU or the CUDA simulator is there)."""
    from refllm.errors import InvalidRequest

    if name == "numpy":
        return NUMPY_BACKEND
    if name == "numba":
        from refllm.kernels.numba_backend import BACKEND

        return BACKEND
    if name == "cuda":
        from refllm.kernels.cuda import cuda_status

        available, reason = cuda_status()
        if not available:
            raise InvalidRequest(f"backend 'cuda' is not available here: {reason}")
        from refllm.kernels.cuda.backend import BACKEND

        return BACKEND
    raise InvalidRequest(f"unknown backend '{name}' (choose one of: {', '.join(BACKEND_NAMES)})")
