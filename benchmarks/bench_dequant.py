"""Dequantization throughput of the NumPy reference, per GGML type.

    python -m pytest benchmarks/bench_dequant.py --benchmark-enable -q

Each case decodes a tensor of about 2 MB of raw blocks (random blocks with
finite scales, ``refllm.quant.testing.random_blocks``) into float32.  After
pytest-benchmark's timing table, a throughput table (benchmarks/conftest.py)
gives GB/s of raw input read ("in") and of float32 output written ("out"),
from the fastest round.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES

from refllm.quant import SUPPORTED_DEQUANT_TYPES, dequantize
from refllm.quant.testing import random_blocks

RAW_BYTES = 2 * 1024 * 1024


@pytest.mark.parametrize("ggml_type", SUPPORTED_DEQUANT_TYPES, ids=lambda t: t.name)
def test_dequantize_throughput(benchmark, record_throughput, ggml_type):
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    n_blocks = RAW_BYTES // type_size // 256 * 256
    raw = random_blocks(ggml_type, n_blocks, np.random.default_rng(0)).reshape(-1)
    shape = (n_blocks * block_size // 256, 256)  # rows of 256 weights, like a small matrix

    out = benchmark(dequantize, raw, ggml_type, shape)

    assert out.shape == shape and out.dtype == np.float32
    record_throughput(ggml_type.name, raw.nbytes, out.nbytes)
