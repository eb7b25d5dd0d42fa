"""The forward pass on the real models, Numba backend: one decode step and a 128-token prefill.

    python -m pytest benchmarks/bench_forward.py --benchmark-enable -q

For refllm vs llama.cpp on the same workload, use tools/bench_vs_llamacpp.py;
for a user-facing summary, ``refllm bench MODEL``.
"""

from __future__ import annotations

import numpy as np
import pytest

import refllm
from refllm.kernels.speed import prompt_ids
from refllm.packaged_models import gemma3_path, smollm2_path


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def model(request):
    m = refllm.load({"smollm2": smollm2_path, "gemma3": gemma3_path}[request.param]())
    m.backend = "numba"
    return m


def test_decode_step(benchmark, model):
    ids = prompt_ids(model, 64)
    cache = model.new_cache(4096)
    model.forward(np.array(ids), cache)
    start = cache.n_past

    def step():
        if cache.n_past >= cache.n_ctx - 1:
            cache.truncate(start)
        return model.forward(np.array([ids[cache.n_past % len(ids)]]), cache)

    step()
    benchmark(step)


def test_prefill_128_tokens(benchmark, model):
    ids = np.array(prompt_ids(model, 128))
    model.forward(ids[:8], model.new_cache(8))  # kernels ready
    benchmark.pedantic(lambda: model.forward(ids, model.new_cache(129)), rounds=3, iterations=1)
