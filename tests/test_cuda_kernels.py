"""The CUDA kernels against the NumPy references, on a GPU or in Numba's CUDA simulator.

tests/conftest.py switches the simulator on where no GPU exists; the simulator runs
each GPU thread as Python, so shapes stay tiny.  References: ``refllm.quant``
(checked bit-exactly against gguf-py elsewhere) and ``refllm.kernels.reference``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from numba import cuda

from refllm.kernels import reference as ref
from refllm.kernels.cuda import cuda_status, ops
from refllm.kernels.cuda.backend import BACKEND as CUDA_BACKEND
from refllm.quant import dequantize

CUDA_TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]

# byte offsets of the f16 scale fields in each block: d (and m / dmin)
F16_FIELDS = {
    T.Q4_0: (0,), T.Q5_0: (0,), T.Q8_0: (0,),
    T.Q4_1: (0, 2), T.Q5_1: (0, 2), T.Q4_K: (0, 2), T.Q5_K: (0, 2),
    T.Q6_K: (208,),
}


def random_weight(ggml_type: T, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Raw bytes of a (rows, cols) tensor: random quants with finite random f16 scales."""
    values = rng.standard_normal(rows * cols).astype(np.float32)
    if ggml_type == T.F32:
        return values.view(np.uint8)
    if ggml_type == T.F16:
        return values.astype(np.float16).view(np.uint8)
    if ggml_type == T.BF16:
        return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    n_blocks = rows * cols // block_size
    blocks = rng.integers(0, 256, (n_blocks, type_size), dtype=np.uint8)
    for offset in F16_FIELDS[ggml_type]:
        scales = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
        blocks[:, offset : offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(-1)


def test_cuda_status_explains_itself():
    available, reason = cuda_status()
    assert available  # a GPU, or the simulator that conftest switched on
    assert reason


@pytest.mark.parametrize("ggml_type", CUDA_TYPES, ids=lambda t: t.name)
def test_matmul_and_embedding_match_dequantize(ggml_type):
    rng = np.random.default_rng(int(ggml_type))
    rows, cols = 3, 256
    raw = random_weight(ggml_type, rows, cols, rng)
    weight = dequantize(raw, ggml_type, (rows, cols))  # [rows, cols] reference
    x = rng.standard_normal((2, cols)).astype(np.float32)

    w = ops.upload_weight("w", raw, int(ggml_type), (rows, cols))
    y = ops.matmul(w, cuda.to_device(x)).copy_to_host()  # [2, rows]
    np.testing.assert_allclose(y, x @ weight.T, rtol=1e-4, atol=1e-4 * np.abs(weight).max() * cols**0.5)

    rows_out = ops.embedding(w, np.array([2, 0, 2])).copy_to_host()
    np.testing.assert_array_equal(rows_out, weight[[2, 0, 2]])


def test_rms_norm_and_activations():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    weight = rng.standard_normal(64).astype(np.float32)
    np.testing.assert_allclose(CUDA_BACKEND.rms_norm(x, weight, 1e-6), ref.rms_norm(x, weight, 1e-6), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(CUDA_BACKEND.silu(x), ref.silu(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(CUDA_BACKEND.gelu_tanh(x), ref.gelu_tanh(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("n_rot", [16, 8])  # full and partial rotation of a 16-dim head
def test_rope(neox, n_rot):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 16)).astype(np.float32)
    positions = np.array([0, 5, 17])
    inv_freq = (10000.0 ** (-np.arange(0, n_rot, 2) / n_rot)).astype(np.float32)
    got = CUDA_BACKEND.rope(x, positions, inv_freq, neox, 1.0)
    np.testing.assert_allclose(got, ref.rope(x, positions, inv_freq, neox), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window", [None, 2])
def test_attention_gqa_causal_and_sliding(window):
    rng = np.random.default_rng(3)
    n_ctx, heads, kv_heads, hd = 5, 4, 2, 8
    q = rng.standard_normal((3, heads, hd)).astype(np.float32)  # the last 3 positions
    k = rng.standard_normal((n_ctx, kv_heads, hd)).astype(np.float32)
    v = rng.standard_normal((n_ctx, kv_heads, hd)).astype(np.float32)
    positions = np.array([2, 3, 4])
    got = CUDA_BACKEND.attention(q, k, v, positions, 0.3, window)
    np.testing.assert_allclose(got, ref.attention(q, k, v, positions, 0.3, window), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- DeviceTensor


def test_device_tensor_does_what_the_forward_pass_does_to_activations():
    from refllm.kernels.cuda.tensor import DeviceTensor, as_device, zeros

    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((2, 3, 4)).astype(np.float32)  # [3, 4] each
    bias = rng.standard_normal(4).astype(np.float32)
    dx, dy = as_device(x), as_device(y)

    np.testing.assert_allclose(np.asarray(dx + dy), x + y, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(dx + bias), x + bias, rtol=1e-6)  # a bias along the last axis
    np.testing.assert_allclose(np.asarray(dx * dy), x * y, rtol=1e-6)
    np.testing.assert_allclose((dx * np.float32(1.5)).to_host(), x * np.float32(1.5), rtol=1e-6)
    product = np.float32(2.0) * dx  # NumPy defers to DeviceTensor instead of downloading it
    assert isinstance(product, DeviceTensor)
    np.testing.assert_allclose(product.to_host(), 2 * x, rtol=1e-6)

    assert dx.reshape(3, 2, -1).shape == (3, 2, 2) and dx.reshape((12,)).shape == (12,)
    np.testing.assert_array_equal(dx[-1:].to_host(), x[-1:])
    np.testing.assert_array_equal(dx[1].to_host(), x[1])
    assert len(dx) == 3 and dx.ndim == 2 and dx.size == 12

    cache = zeros((5, 4))
    np.testing.assert_array_equal(cache.to_host(), np.zeros((5, 4), np.float32))
    cache[1:4] = dx  # device -> device
    cache[4:5] = bias[None, :]  # host -> device
    np.testing.assert_array_equal(cache[:5].to_host(), np.vstack([np.zeros((1, 4)), x, bias[None, :]]))

    with pytest.raises(TypeError, match="views of rows"):
        dx[:, 1]
    with pytest.raises(ValueError, match="can't combine"):
        dx + np.ones(3, np.float32)


def test_host_parameters_go_to_the_device_once_and_leave_with_their_array():
    import gc

    from refllm.kernels.cuda import tensor

    weight = np.arange(4, dtype=np.float32)
    first = tensor.constant(weight)
    assert tensor.constant(weight) is first
    np.testing.assert_array_equal(first.copy_to_host(), weight)
    key = (id(weight), np.dtype(np.float32).str)
    assert key in tensor._constants
    del weight, first
    gc.collect()
    assert key not in tensor._constants


# --------------------------------------------------------------------------- compiling for a real GPU

COMPILE_EVERY_KERNEL = """
import json, sys
from numba import cuda, types as T
import numba.cuda.dispatcher as dispatcher
from numba.cuda.cudadrv.error import NvvmSupportError

class NoDevice:  # device functions ask the current device for its compute capability
    compute_capability = (8, 0)

dispatcher.get_current_device = NoDevice
from refllm.kernels.cuda import kernels as K

u8, i64 = T.uint8[::1], T.int64[::1]
f1, f2, f3 = T.float32[::1], T.float32[:, ::1], T.float32[:, :, ::1]
signatures = {  # the argument types refllm/kernels/cuda/ops.py launches them with
    "matmul_kernel": (T.int64, u8, T.int64, T.int64, T.int64, f2, f2),
    "embedding_kernel": (T.int64, u8, T.int64, T.int64, T.int64, i64, f2),
    "rms_norm_kernel": (f2, f1, T.float32, f2),
    "activation_kernel": (f1, T.boolean, f1),
    "add_kernel": (f1, f1, f1),
    "multiply_kernel": (f1, f1, f1),
    "scale_kernel": (f1, T.float32, f1),
    "fill_kernel": (f1, T.float32),
    "rope_kernel": (f3, i64, f1, T.boolean, T.float32),
    "attention_kernel": (f3, f3, f3, i64, T.int64, T.float32, f3, f3),
}
failed = {}
for name, signature in signatures.items():
    try:
        cuda.compile_ptx(getattr(K, name).py_func, signature, cc=(8, 0))
    except NvvmSupportError as e:
        print(json.dumps({"no_nvvm": str(e)}))
        sys.exit(0)
    except Exception as e:
        failed[name] = f"{type(e).__name__}: {e}"[:500]
print(json.dumps({"compiled": sorted(set(signatures) - set(failed)), "failed": failed}))
"""


def nvvm_home(tmp_path) -> str:
    """A CUDA_HOME holding only NVVM, from the ``nvidia-cuda-nvcc-cu12`` wheel (dev extra), so
    every machine compiles with the same NVVM, GPU or not.  Numba looks for
    ``nvvm/lib64/libnvvm.so.<version>`` and ``nvvm/libdevice/``; the wheel names the library
    without a version, hence the link."""
    import nvidia.cuda_nvcc

    wheel = Path(list(nvidia.cuda_nvcc.__path__)[0]) / "nvvm"
    (tmp_path / "nvvm" / "lib64").mkdir(parents=True)
    (tmp_path / "nvvm" / "lib64" / "libnvvm.so.4").symlink_to(wheel / "lib64" / "libnvvm.so")
    (tmp_path / "nvvm" / "libdevice").symlink_to(wheel / "libdevice")
    return str(tmp_path)


def test_every_kernel_compiles_to_ptx(tmp_path):
    """The simulator runs the kernels as Python, so it cannot see what Numba's CUDA compiler
    refuses (it refused ``max()`` of two float32 in the attention kernel).  NVVM compiles
    every kernel to PTX without a GPU, in a process without the simulator."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["CUDA_HOME"] = nvvm_home(tmp_path)
    code = "from numba.cuda.cuda_paths import get_cuda_paths; print(get_cuda_paths()['nvvm'].info)\n" + COMPILE_EVERY_KERNEL
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith(env["CUDA_HOME"]), f"Numba took NVVM from {lines[0]}, not from the wheel"
    result = json.loads(lines[-1])
    assert "no_nvvm" not in result, result
    assert result["failed"] == {}
    from refllm.kernels.cuda import kernels

    assert set(result["compiled"]) == {name for name in vars(kernels) if name.endswith("_kernel")}  # every kernel ops.py launches
