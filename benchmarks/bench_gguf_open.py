"""Opening a GGUF: refllm's reader against gguf-py's ``GGUFReader`` on both real models.

    python -m pytest benchmarks/bench_gguf_open.py --benchmark-enable -q

Opening parses the header, the metadata (the vocabulary: 49k strings for SmolLM2,
262k for Gemma 3) and the tensor table; tensor data stay on disk.  gguf-py builds
Python objects for every vocabulary string, so it gets one round only.
"""

from __future__ import annotations

import gguf
import pytest

import refllm.gguf
from refllm.packaged_models import gemma3_path, smollm2_path

MODELS = {"smollm2": smollm2_path, "gemma3": gemma3_path}


@pytest.mark.parametrize("model", MODELS)
def test_refllm_read(benchmark, model):
    path = MODELS[model]()
    f = benchmark(refllm.gguf.read, path)
    assert f.tensors


@pytest.mark.parametrize("model", MODELS)
def test_gguf_py_reader(benchmark, model):
    path = MODELS[model]()
    reader = benchmark.pedantic(gguf.GGUFReader, args=(path,), rounds=1, iterations=1)
    assert reader.tensors
