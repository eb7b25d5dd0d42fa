"""The ``cuda`` Backend: the forward pass's ops (``refllm.kernels.reference.Backend``) on a GPU.

Weights are uploaded to the device once, on first use, and stay there (keyed by the
tensor's address in the memory map).  The forward-pass files are shared by all
backends and do their residual adds and reshapes in NumPy, so each op's input
activation goes to the device and its output comes back: small for these models
(a few KB per op), and it keeps ONE readable forward pass per architecture.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import cuda

from refllm.gguf import TensorInfo
from refllm.kernels import reference
from refllm.kernels.reference import Backend, softmax

from . import kernels as K
from . import ops

_weights: dict[tuple[int, int], ops.DeviceWeight] = {}
_lock = threading.Lock()


def device_weight(w: TensorInfo) -> ops.DeviceWeight:
    """The device copy of a weight, uploaded the first time it is used."""
    key = (w.raw.ctypes.data, w.n_bytes)
    with _lock:
        if key not in _weights:
            _weights[key] = ops.upload_weight(w.name, w.raw, int(w.ggml_type), w.shape)
        return _weights[key]


def release_weights() -> None:
    """Free every uploaded weight (called when a model is unloaded)."""
    with _lock:
        _weights.clear()


def _to_device(x: np.ndarray):
    return cuda.to_device(np.ascontiguousarray(x, dtype=np.float32))


def linear(x: np.ndarray, w: TensorInfo) -> np.ndarray:
    """f32[n, k] @ W.T -> f32[n, m], W read raw on the device.

    A weight type without a CUDA kernel runs on the NumPy reference (the plan says so).
    """
    if int(w.ggml_type) not in K.SUPPORTED_TYPES:
        return reference.linear(x, w)
    return ops.matmul(device_weight(w), _to_device(x)).copy_to_host()


def embedding_rows(w: TensorInfo, ids: np.ndarray) -> np.ndarray:
    """int[n] -> f32[n, d], rows dequantized on the device."""
    return ops.embedding(device_weight(w), np.asarray(ids)).copy_to_host()


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """f32[..., d] -> f32[..., d]."""
    flat = x.reshape(-1, x.shape[-1])  # [rows, d]
    return ops.rms_norm(_to_device(flat), _to_device(weight), eps).copy_to_host().reshape(x.shape)


def silu(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
    return ops.activation(_to_device(flat), False).copy_to_host().reshape(x.shape)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
    return ops.activation(_to_device(flat), True).copy_to_host().reshape(x.shape)


def rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray, neox: bool, mscale: float = 1.0) -> np.ndarray:
    """f32[n, heads, hd] -> rotated copy."""
    x_dev = _to_device(x)
    pos_dev = cuda.to_device(np.ascontiguousarray(positions, dtype=np.float32))
    ops.rope_(x_dev, pos_dev, _to_device(inv_freq), neox, mscale)
    return x_dev.copy_to_host()


def attention(q, k_cache, v_cache, positions, scale: float, window: int | None = None) -> np.ndarray:
    """q f32[n, heads, hd] over the cache -> f32[n, heads, hd_v]."""
    pos_dev = cuda.to_device(np.ascontiguousarray(positions, dtype=np.int64))
    out = ops.attention(_to_device(q), _to_device(k_cache), _to_device(v_cache), pos_dev, int(window or 0), scale)
    return out.copy_to_host()


BACKEND = Backend(
    name="cuda",
    linear=linear,
    embedding_rows=embedding_rows,
    rms_norm=rms_norm,
    rope=rope,
    attention=attention,
    silu=silu,
    gelu_tanh=gelu_tanh,
    softmax=softmax,  # only used outside the hot path; the attention kernel has its own
)
