"""``DeviceTensor``: an activation or a KV-cache array in GPU memory, for the shared forward pass.

The forward-pass files (refllm/model/llama.py, qwen.py, gemma3.py), refllm/model/transformer.py
and refllm/model/kv_cache.py are the same for every backend.  Besides calling the backend's
ops, they do a few things to activations themselves; a DeviceTensor does exactly these, on
the device, and nothing more:

    x.shape, x.ndim, x.size, len(x)            the array's shape
    q.reshape(n, heads, hd), a.reshape(n, -1)  a view (the arrays are contiguous)
    x + y, gate * up                           elementwise, same shape (residuals, gating)
    q + bias                                   a host vector along the last axis (qwen2's biases)
    x * np.float32(c)                          by a scalar (Gemma's embedding scale)
    hidden[-1:], logits[0], cache[:stop]       views of rows (first axis only)
    cache[start:stop] = k                      a device -> device copy (KVCache.store)
    np.asarray(x), x.to_host()                 device -> host: the only way back

Host arrays that the forward pass hands to ops as parameters (norm weights, biases, RoPE
frequencies, this call's positions) go to the device once per array object (``constant``):
they are a model's weights or one forward call's positions, never changed once made.

Copies between host and device happen in ``upload``, ``download``, ``t[a:b] = host_array``
and ``refllm.kernels.cuda.ops`` (weights, token ids); nowhere else.  tests/test_cuda_model.py
counts them during a decode step: the token id and its position go in, the logits come out.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
from numba import cuda

from . import kernels as K
from . import ops


def upload(host, dtype=np.float32):
    """host -> device: a new device array holding ``host`` as ``dtype``."""
    return cuda.to_device(np.ascontiguousarray(host, dtype=dtype))


def download(device) -> np.ndarray:
    """device -> host: a new NumPy array."""
    return device.copy_to_host()


_constants: dict[tuple[int, str], object] = {}
_constants_lock = threading.Lock()


def constant(host, dtype=np.float32):
    """The device copy of a host parameter array, uploaded once and freed with the host array."""
    if isinstance(host, DeviceTensor):
        return host.data
    if not isinstance(host, np.ndarray):  # a list or scalar: nothing to remember it by
        return upload(host, dtype)
    key = (id(host), np.dtype(dtype).str)
    with _constants_lock:
        if key not in _constants:
            _constants[key] = upload(host, dtype)
            weakref.finalize(host, _constants.pop, key, None)  # the id may be reused once host is gone
        return _constants[key]


class DeviceTensor:
    """A float32, C-contiguous array on the device (``.data``: a numba device array)."""

    # NumPy's operators defer to ours (bias + q, c * x) instead of pulling the tensor to the host.
    __array_ufunc__ = None

    def __init__(self, data):
        self.data = data

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return len(self.data.shape)

    @property
    def size(self) -> int:
        return int(self.data.size)

    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DeviceTensor(shape={self.shape}, dtype=float32)"

    def reshape(self, *shape) -> DeviceTensor:
        """A view with another shape (one dimension may be -1)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return DeviceTensor(self.data.reshape(*shape))

    # -- rows

    def __getitem__(self, key) -> DeviceTensor:
        """A view of rows: ``t[i]`` (of a 2-D or higher tensor) or ``t[a:b]``."""
        row = isinstance(key, (int, np.integer)) and self.ndim > 1
        rows = isinstance(key, slice) and key.step in (None, 1)
        if not (row or rows):
            raise TypeError(f"a DeviceTensor only gives views of rows (t[i] of a 2-D+ tensor, t[a:b]), not [{key!r}]")
        return DeviceTensor(self.data[key])

    def __setitem__(self, key: slice, value) -> None:
        """``t[a:b] = value``: from another DeviceTensor (device -> device) or a host array (uploaded)."""
        target = self[key].data
        if isinstance(value, DeviceTensor):
            target.copy_to_device(value.data)
        else:
            target.copy_to_device(np.ascontiguousarray(value, dtype=np.float32))

    # -- arithmetic

    def _operand(self, other):
        """The device array of a DeviceTensor or host parameter of our shape or of our last axis."""
        shape = tuple(np.shape(other)) if not isinstance(other, DeviceTensor) else other.shape
        if shape != self.shape and shape != self.shape[-1:]:
            raise ValueError(f"DeviceTensor of shape {self.shape} can't combine with shape {shape}")
        return constant(other)

    def __add__(self, other) -> DeviceTensor:
        return DeviceTensor(ops.add(self.data, self._operand(other)))

    def __mul__(self, other) -> DeviceTensor:
        if isinstance(other, (int, float, np.integer, np.floating)):
            return DeviceTensor(ops.scale(self.data, float(other)))
        return DeviceTensor(ops.multiply(self.data, self._operand(other)))

    __radd__ = __add__
    __rmul__ = __mul__

    # -- back to the host

    def to_host(self) -> np.ndarray:
        return download(self.data)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        host = self.to_host()
        return host if dtype is None else host.astype(dtype, copy=False)


def as_device(x) -> DeviceTensor:
    """A DeviceTensor as it is; a host array uploaded (an activation computed on the host)."""
    return x if isinstance(x, DeviceTensor) else DeviceTensor(upload(x))


def to_host(x) -> np.ndarray:
    """A DeviceTensor downloaded; anything else as a NumPy array."""
    return x.to_host() if isinstance(x, DeviceTensor) else np.asarray(x)


def zeros(shape: tuple[int, ...]) -> DeviceTensor:
    """float32 zeros of ``shape`` allocated and cleared on the device (the KV cache)."""
    data = cuda.device_array(shape, dtype=np.float32)
    K.fill_kernel[ops.elementwise_grid(data.size)](ops.flat(data), np.float32(0.0))
    return DeviceTensor(data)
