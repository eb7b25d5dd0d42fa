"""Numba kernel speed per GGML type: decode matvec and prefill matmul (numba_backend.linear).

    python -m pytest benchmarks/bench_kernels.py --benchmark-enable -q

Weights: random valid blocks (``refllm.quant.testing.random_blocks``) of the
shapes SmolLM2 and Gemma 3 use.  ``matvec`` is one token (the fused
dequantize x matvec kernel); ``matmul`` is 128 tokens (dequantized tiles times
``numba_ops.matmul_nt``).  The throughput table after pytest-benchmark's gives GB/s of weight
bytes read ("in") and GFLOP/s as "out" bytes would be meaningless here, so
"out MB" is the float32 result size.  Threads: the prefill matmul runs on 1 and
on every thread (NUMBA_NUM_THREADS: the tile threads share the tiles out);
the decode matvecs pick their thread count by measurement
(``numba_backend._DecodeThreads``).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from refllm.gguf import TensorInfo
from refllm.kernels import numba_backend
from refllm.kernels.quantized import KERNELS
from refllm.quant.testing import random_blocks

SHAPE = (1536, 768)  # [m, k], k a whole number of 256-weight K-quant blocks


def weight(type_name: str, m: int, k: int) -> TensorInfo:
    block_size, _ = GGML_QUANT_SIZES[T[type_name]]
    raw = random_blocks(T[type_name], m * k // block_size, np.random.default_rng(0)).reshape(-1)
    raw.flags.writeable = False
    return TensorInfo(name=type_name, shape=(m, k), ggml_type=T[type_name], offset=0, n_bytes=raw.size, raw=raw)


@pytest.mark.parametrize("type_name", list(KERNELS))
def test_matvec(benchmark, record_throughput, type_name):
    w = weight(type_name, *SHAPE)
    x = np.random.default_rng(1).standard_normal((1, SHAPE[1])).astype(np.float32)
    numba_backend.linear(x, w)  # compile / load outside the timing
    benchmark(numba_backend.linear, x, w)
    record_throughput(f"mv {type_name}", w.n_bytes, SHAPE[0] * 4)


@pytest.mark.parametrize("threads", [1, None])  # one thread, every thread
@pytest.mark.parametrize("type_name", ["F16", "Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K"])
def test_matmul_128_tokens(benchmark, record_throughput, type_name, threads):
    w = weight(type_name, *SHAPE)
    x = np.random.default_rng(1).standard_normal((128, SHAPE[1])).astype(np.float32)
    saved = numba_backend.set_threads(None)
    numba_backend.set_threads(threads or saved)
    try:
        numba_backend.linear(x, w)
        benchmark(numba_backend.linear, x, w)
    finally:
        numba_backend.set_threads(saved)
    record_throughput(f"mm {type_name} {threads or saved}t", w.n_bytes, 128 * SHAPE[0] * 4)


# Decode as the model meets it: every call reads weights that are not in any cache (a
# token's pass over the layers streams 60-250 MB), here a new copy of the matrix each
# call, 96 MB of copies in all.  The kernels' prefetching shows only in this form.
COLD_CASES = [
    (type_name, m, k)
    for type_name in ["Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K"]
    for m, k in [(576, 1536), (1536, 576), (2048, 640), (640, 2048)]  # SmolLM2's and Gemma 3's layers
    if k % GGML_QUANT_SIZES[T[type_name]][0] == 0
]


@pytest.mark.parametrize("type_name, m, k", COLD_CASES)
def test_matvec_weights_not_in_cache(benchmark, record_throughput, type_name, m, k):
    first = weight(type_name, m, k)
    copies = [first] + [replace(first, raw=first.raw.copy()) for _ in range(int(96e6 // first.n_bytes) - 1)]
    x = np.random.default_rng(1).standard_normal((1, k)).astype(np.float32)
    numba_backend.linear(x, first)
    turn = itertools.cycle(copies)
    benchmark(lambda: numba_backend.linear(x, next(turn)))
    record_throughput(f"cold {type_name} {m}x{k}", first.n_bytes, m * 4)


def test_output_head_q8_0_gemma3(benchmark, record_throughput):
    """The biggest decode matvec of the two models: Gemma 3's tied 262144 x 640 Q8_0 output."""
    w = weight("Q8_0", 262144, 640)
    x = np.random.default_rng(1).standard_normal((1, 640)).astype(np.float32)
    numba_backend.linear(x, w)
    benchmark(numba_backend.linear, x, w)
    record_throughput("mv Q8_0 out", w.n_bytes, 262144 * 4)
