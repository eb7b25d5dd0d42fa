"""Host-side wrappers that launch the CUDA kernels on device arrays (numba DeviceNDArrays).

Every function here takes device arrays and returns a new device array: nothing is
copied between host and device except where a docstring says so (``upload_weight``,
``embedding``'s token ids).  ``refllm.kernels.cuda.tensor.DeviceTensor`` wraps these
arrays for the forward pass; ``refllm.kernels.cuda.backend`` is the ``Backend``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import cuda

from refllm.errors import UnsupportedModel

from . import kernels as K


def grid_size(n_items: int, per_block: int = 1) -> int:
    """Blocks for n_items work items, per_block at a time (at most K.MAX_BLOCKS: the
    kernels' grid-stride loops do the rest)."""
    return max(1, min(K.MAX_BLOCKS, (n_items + per_block - 1) // per_block))


@dataclass(frozen=True)
class DeviceWeight:
    """A 2-D GGML tensor on the device: raw bytes plus what the kernels need to address them."""

    name: str
    type_id: int
    shape: tuple[int, int]  # (n_rows, row_length)
    raw: object  # device uint8[n_rows * row_bytes]
    row_bytes: int
    unit_bytes: int
    units_per_block: int


def upload_weight(name: str, raw: np.ndarray, type_id: int, shape: tuple[int, ...]) -> DeviceWeight:
    """Copy a tensor's raw bytes to the device (host -> device). shape is NumPy order (rows, row_length)."""
    if type_id not in K.BLOCK_LAYOUT:
        raise UnsupportedModel(f"tensor {name}: ggml type {type_id} has no CUDA kernel")
    n_rows, row_length = (1, shape[0]) if len(shape) == 1 else (int(np.prod(shape[:-1])), shape[-1])
    if row_length % K.UNIT:
        raise UnsupportedModel(f"tensor {name}: row length {row_length} is not a multiple of {K.UNIT}")
    block_size, type_size = K.BLOCK_LAYOUT[type_id]
    row_bytes = row_length // block_size * type_size
    unit_bytes, units_per_block = K.unit_layout(type_id)
    return DeviceWeight(name, type_id, (n_rows, row_length), cuda.to_device(np.ascontiguousarray(raw)), row_bytes, unit_bytes, units_per_block)


# --------------------------------------------------------------------------- weights


def matmul(w: DeviceWeight, x):
    """[n_tokens, k] -> [n_tokens, n_rows] (x @ W.T)."""
    n_tokens = x.shape[0]
    y = cuda.device_array((n_tokens, w.shape[0]), dtype=np.float32)
    grid = (grid_size(w.shape[0]), grid_size(n_tokens))
    K.matmul_kernel[grid, K.WARP](w.type_id, w.raw, w.row_bytes, w.unit_bytes, w.units_per_block, x, y)
    return y


def embedding(w: DeviceWeight, ids: np.ndarray):
    """Token ids (host; copied host -> device) -> [n_tokens, row_length] dequantized rows."""
    ids_dev = cuda.to_device(np.ascontiguousarray(ids, dtype=np.int64))
    out = cuda.device_array((len(ids), w.shape[1]), dtype=np.float32)
    grid = (grid_size(len(ids)), grid_size(w.shape[1] // K.UNIT, K.THREADS))
    K.embedding_kernel[grid, K.THREADS](w.type_id, w.raw, w.row_bytes, w.unit_bytes, w.units_per_block, ids_dev, out)
    return out


# --------------------------------------------------------------------------- rows


def rms_norm(x, weight, eps: float):
    """[n, d] -> [n, d]; weight is a device float32[d]."""
    out = cuda.device_array(x.shape, dtype=np.float32)
    K.rms_norm_kernel[grid_size(x.shape[0]), K.WARP](x, weight, np.float32(eps), out)
    return out


def rope(x, positions, inv_freq, neox: bool, mscale: float = 1.0):
    """A rotated copy of x [n, heads, head_dim]; positions (int64[n]) and inv_freq are device arrays."""
    out = cuda.device_array(x.shape, dtype=np.float32)
    out.copy_to_device(x)  # device -> device; the dims past n_rot pass through unchanged
    n_pairs = x.shape[0] * x.shape[1] * inv_freq.shape[0]
    K.rope_kernel[grid_size(n_pairs, K.THREADS), K.THREADS](out, positions, inv_freq, neox, np.float32(mscale))
    return out


def attention(q, k_cache, v_cache, positions, window: int, scale: float):
    """q [n, heads, hd] against the cache [n_ctx, kv_heads, hd | hd_v] -> [n, heads, hd_v].

    positions: device int64[n]; window 0 means no sliding window.
    """
    n_tokens, n_heads, head_dim = q.shape
    out = cuda.device_array((n_tokens, n_heads, v_cache.shape[2]), dtype=np.float32)
    scores = cuda.device_array((n_tokens, n_heads, k_cache.shape[0]), dtype=np.float32)
    grid = (grid_size(n_tokens), grid_size(n_heads))
    K.attention_kernel[grid, K.WARP](q, k_cache, v_cache, positions, window, np.float32(scale), out, scores)
    return out


# --------------------------------------------------------------------------- elementwise (any shape)


def flat(a):
    """A contiguous device array as 1-D (a view)."""
    return a.reshape(a.size)


def elementwise_grid(n: int) -> tuple[int, int]:
    """(blocks, threads) of a 1-D kernel over n elements."""
    return grid_size(n, K.THREADS), K.THREADS


def activation(x, gelu: bool):
    """act(x) elementwise; act is GELU-tanh if gelu else SiLU."""
    out = cuda.device_array(x.shape, dtype=np.float32)
    K.activation_kernel[elementwise_grid(x.size)](flat(x), gelu, flat(out))
    return out


def add(a, b):
    """a + b; b has a's size, or the size of a's last axis (broadcast: a bias)."""
    out = cuda.device_array(a.shape, dtype=np.float32)
    K.add_kernel[elementwise_grid(a.size)](flat(a), flat(b), flat(out))
    return out


def multiply(a, b):
    """a * b; b has a's size, or the size of a's last axis."""
    out = cuda.device_array(a.shape, dtype=np.float32)
    K.multiply_kernel[elementwise_grid(a.size)](flat(a), flat(b), flat(out))
    return out


def scale(a, s: float):
    """a * s for a scalar s."""
    out = cuda.device_array(a.shape, dtype=np.float32)
    K.scale_kernel[elementwise_grid(a.size)](flat(a), np.float32(s), flat(out))
    return out
