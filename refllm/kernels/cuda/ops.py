"""Host-side wrappers that launch the CUDA kernels on device arrays.

Weights are uploaded once (``upload_weight``) as their raw GGML bytes; activations
live on the device between ops; only what the caller asks for (the logits) is copied back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import cuda

from refllm.errors import UnsupportedModel

from . import kernels as K

THREADS_1D = 128


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
    """Copy a tensor's raw bytes to the device once. shape is NumPy order (rows, row_length)."""
    if type_id not in K.BLOCK_LAYOUT:
        raise UnsupportedModel(f"tensor {name}: ggml type {type_id} has no CUDA kernel")
    n_rows, row_length = (1, shape[0]) if len(shape) == 1 else (int(np.prod(shape[:-1])), shape[-1])
    if row_length % K.UNIT:
        raise UnsupportedModel(f"tensor {name}: row length {row_length} is not a multiple of {K.UNIT}")
    block_size, type_size = K.BLOCK_LAYOUT[type_id]
    row_bytes = row_length // block_size * type_size
    unit_bytes, units_per_block = K.unit_layout(type_id)
    return DeviceWeight(name, type_id, (n_rows, row_length), cuda.to_device(np.ascontiguousarray(raw)), row_bytes, unit_bytes, units_per_block)


def matmul(w: DeviceWeight, x):
    """[n_tokens, k] device array -> [n_tokens, n_rows] device array (x @ W.T)."""
    n_tokens = x.shape[0]
    y = cuda.device_array((n_tokens, w.shape[0]), dtype=np.float32)
    K.matmul_kernel[(w.shape[0], n_tokens), K.WARP](w.type_id, w.raw, w.row_bytes, w.unit_bytes, w.units_per_block, x, y)
    return y


def embedding(w: DeviceWeight, ids: np.ndarray):
    """Token ids (host) -> [n_tokens, row_length] device array of dequantized rows."""
    ids_dev = cuda.to_device(np.ascontiguousarray(ids, dtype=np.int64))
    out = cuda.device_array((len(ids), w.shape[1]), dtype=np.float32)
    n_units = w.shape[1] // K.UNIT
    grid = (len(ids), (n_units + THREADS_1D - 1) // THREADS_1D)
    K.embedding_kernel[grid, THREADS_1D](w.type_id, w.raw, w.row_bytes, w.unit_bytes, w.units_per_block, ids_dev, out)
    return out


def rms_norm(x, weight, eps: float):
    """[n, d] -> [n, d]; weight is a device float32[d]."""
    out = cuda.device_array(x.shape, dtype=np.float32)
    K.rms_norm_kernel[x.shape[0], K.WARP](x, weight, np.float32(eps), out)
    return out


def gated_activation(gate, up, gelu: bool):
    """act(gate) * up, [n, d_ff] -> [n, d_ff]; act is GELU-tanh if gelu else SiLU."""
    out = cuda.device_array(gate.shape, dtype=np.float32)
    blocks = (gate.size + THREADS_1D - 1) // THREADS_1D
    K.gated_activation_kernel[blocks, THREADS_1D](gate, up, gelu, out)
    return out


def activation(x, gelu: bool):
    """act(x) elementwise on a 2-D device array; act is GELU-tanh if gelu else SiLU."""
    out = cuda.device_array(x.shape, dtype=np.float32)
    K.activation_kernel[(x.size + THREADS_1D - 1) // THREADS_1D, THREADS_1D](x, gelu, out)
    return out


def add_(a, b):
    """a += b in place (residual)."""
    K.add_kernel[(a.size + THREADS_1D - 1) // THREADS_1D, THREADS_1D](a, b)
    return a


def rope_(x, positions, inv_freq, neox: bool, mscale: float = 1.0):
    """Rotate x [n, heads, head_dim] in place; positions and inv_freq are device arrays."""
    n = x.shape[0] * x.shape[1] * inv_freq.shape[0]
    K.rope_kernel[(n + THREADS_1D - 1) // THREADS_1D, THREADS_1D](x, positions, inv_freq, neox, np.float32(mscale))
    return x


def attention(q, k_cache, v_cache, positions, window: int, scale: float):
    """q [n, heads, hd] against the cache [n_ctx, kv_heads, hd | hd_v] -> [n, heads, hd_v]."""
    n_tokens, n_heads, head_dim = q.shape
    out = cuda.device_array((n_tokens, n_heads, v_cache.shape[2]), dtype=np.float32)
    scores = cuda.device_array((n_tokens, n_heads, k_cache.shape[0]), dtype=np.float32)
    K.attention_kernel[(n_tokens, n_heads), K.WARP](q, k_cache, v_cache, positions, window, np.float32(scale), out, scores)
    return out
