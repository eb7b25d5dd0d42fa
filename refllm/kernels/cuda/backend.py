"""The ``cuda`` Backend: the forward pass's ops (``refllm.kernels.reference.Backend``) on a GPU.

Device-resident: every op takes ``DeviceTensor``s (a NumPy array is uploaded) and returns
a ``DeviceTensor``, so the activations stay on the device from the embedding lookup to
the logits, and the KV cache is allocated there (``Backend.zeros``, used by
``refllm.model.kv_cache.KVCache``).  What crosses to the device per forward call: the
token ids and their positions; what comes back: the logits (``Backend.to_host``, called
by ``refllm.model.loaded.Model`` at its boundary).  The forward-pass files are the same
for every backend; ``refllm/kernels/cuda/tensor.py`` lists what they do to activations.

Weights are uploaded once, on first use, as their raw GGML bytes, and freed when their
GGUF file is (keyed by the tensor's memory-map view).  A weight type without a CUDA
kernel runs on the NumPy reference instead: its input comes to the host and its output
goes back (the runtime plan lists those types as fallbacks).
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from refllm.gguf import TensorInfo
from refllm.kernels import reference
from refllm.kernels.reference import Backend, softmax

from . import kernels as K
from . import ops
from .tensor import DeviceTensor, as_device, constant, to_host, zeros

_weights: dict[int, ops.DeviceWeight] = {}
_lock = threading.Lock()


def device_weight(w: TensorInfo) -> ops.DeviceWeight:
    """The device copy of a weight: uploaded the first time it is used, freed with its memory map."""
    key = id(w.raw)
    with _lock:
        if key not in _weights:
            _weights[key] = ops.upload_weight(w.name, w.raw, int(w.ggml_type), w.shape)
            weakref.finalize(w.raw, _weights.pop, key, None)
        return _weights[key]


def has_kernel(w: TensorInfo) -> bool:
    return int(w.ggml_type) in K.SUPPORTED_TYPES


def linear(x, w: TensorInfo) -> DeviceTensor:
    """[n, k] @ W.T -> [n, m], W read raw on the device.

    A weight type without a CUDA kernel runs on the NumPy reference: x comes to the host,
    the result goes back (the plan says so).
    """
    if not has_kernel(w):
        return as_device(reference.linear(to_host(x), w))
    return DeviceTensor(ops.matmul(device_weight(w), as_device(x).data))


def embedding_rows(w: TensorInfo, ids: np.ndarray) -> DeviceTensor:
    """int[n] (host) -> [n, d], rows dequantized on the device."""
    if not has_kernel(w):
        return as_device(reference.embedding_rows(w, ids))
    return DeviceTensor(ops.embedding(device_weight(w), np.asarray(ids)))


def rms_norm(x, weight: np.ndarray, eps: float) -> DeviceTensor:
    """[..., d] -> [..., d] (QK-norm passes [n, heads, hd])."""
    x = as_device(x)
    rows = x.data.reshape(-1, x.shape[-1])  # [rows, d]
    return DeviceTensor(ops.rms_norm(rows, constant(weight), eps).reshape(x.shape))


def silu(x) -> DeviceTensor:
    return DeviceTensor(ops.activation(as_device(x).data, False))


def gelu_tanh(x) -> DeviceTensor:
    return DeviceTensor(ops.activation(as_device(x).data, True))


def rope(x, positions: np.ndarray, inv_freq: np.ndarray, neox: bool, mscale: float = 1.0) -> DeviceTensor:
    """[n, heads, hd] -> a rotated copy."""
    rotated = ops.rope(as_device(x).data, constant(positions, np.int64), constant(inv_freq), neox, mscale)
    return DeviceTensor(rotated)


def attention(q, k_cache, v_cache, positions: np.ndarray, scale: float, window: int | None = None) -> DeviceTensor:
    """q [n, heads, hd] over the cache [n_ctx, kv_heads, hd | hd_v] -> [n, heads, hd_v]."""
    out = ops.attention(as_device(q).data, as_device(k_cache).data, as_device(v_cache).data,
                        constant(positions, np.int64), int(window or 0), scale)  # fmt: skip
    return DeviceTensor(out)


BACKEND = Backend(
    name="cuda",
    linear=linear,
    embedding_rows=embedding_rows,
    rms_norm=rms_norm,
    rope=rope,
    attention=attention,
    silu=silu,
    gelu_tanh=gelu_tanh,
    softmax=softmax,  # the NumPy one, on host arrays: not in the forward pass (attention has its own)
    zeros=zeros,
    to_host=to_host,
)
