"""A whole model on the ``cuda`` backend matches the NumPy backend's logits.

Runs on a GPU where there is one, else in Numba's CUDA simulator (tests/conftest.py),
which executes every GPU thread as Python: so the models here are micro versions of
the tiny synthetic ones (32-wide, one layer, 300-token vocabulary).
"""

from __future__ import annotations

import numpy as np
import pytest

import refllm
from refllm.model.loaded import Model

MICRO = dict(n_embd=32, n_layer=1, n_head=2, n_head_kv=1, head_dim=16, n_ff=32, n_vocab=300)


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory):
    from dataclasses import replace

    from conftest import load_tool

    make = load_tool("make_tiny_models")
    outdir = tmp_path_factory.mktemp("micro")

    def write(arch: str, qtype: str):
        config = replace(make.CONFIGS[arch], **MICRO)
        if arch == "gemma3":
            config = replace(config, sliding_window=2)  # so the window matters at 3 tokens
        return make.write_tiny_model(outdir / f"micro-{arch}-{qtype}.gguf", arch, qtype, config=config)

    return write


@pytest.mark.parametrize("arch,qtype", [("llama", "Q8_0"), ("gemma3", "Q4_0")])
def test_cuda_backend_logits_match_numpy(micro_model, arch, qtype):
    path = micro_model(arch, qtype)
    ids = [5, 70, 200]  # prefill 2 tokens, then decode 1 through the KV cache

    reference = refllm.load(path)
    expected = reference.logits(ids)  # [3, n_vocab], NumPy backend

    model = refllm.load(path)
    model.backend = "cuda"
    cache = model.new_cache(16)
    prefill = model.forward(ids[:2], cache)  # [n_vocab] at position 1
    decode = model.forward(ids[2:], cache)  # [n_vocab] at position 2
    got = np.vstack([prefill, decode])
    np.testing.assert_allclose(got, expected[1:], rtol=1e-3, atol=1e-3)
    assert np.array_equal(got.argmax(-1), expected[1:].argmax(-1))


def test_cuda_backend_is_refused_with_a_reason_when_unavailable(monkeypatch):
    from refllm.errors import InvalidRequest
    from refllm.kernels import cuda as cuda_pkg
    from refllm.kernels.reference import get_backend

    monkeypatch.setattr(cuda_pkg, "cuda_status", lambda: (False, "no CUDA driver or GPU found"))
    with pytest.raises(InvalidRequest, match="no CUDA driver"):
        get_backend("cuda")


def test_plan_names_the_cuda_backend_and_its_state(micro_model, monkeypatch):
    from refllm.kernels import cuda as cuda_pkg
    from refllm.plan import build_plan

    path = micro_model("llama", "Q8_0")
    plan = build_plan(path, backend="cuda")  # the simulator counts as available here
    assert (plan.support_level, plan.specialization) == ("optimized", "numba-cuda")
    assert set(op.backend for op in plan.ops.values()) == {"cuda"}
    assert plan.cuda["available"] is True

    monkeypatch.setattr(cuda_pkg, "cuda_status", lambda: (False, "no CUDA driver or GPU found"))
    refused = build_plan(path, backend="cuda")
    assert refused.support_level == "unsupported"
    assert "no CUDA driver" in refused.reason
    assert build_plan(path).cuda == {"available": False, "reason": "no CUDA driver or GPU found"}


def test_plan_falls_back_per_weight_type_without_a_cuda_kernel(tiny_model):
    from refllm.plan import build_plan

    plan = build_plan(tiny_model("llama", "IQ4_NL"), backend="cuda")
    assert plan.quant_types["IQ4_NL"].backend == "numpy"
    assert "no CUDA kernel for IQ4_NL" in plan.quant_types["IQ4_NL"].fallback_reason
    assert plan.support_level == "generic"


def test_run_with_cuda_runs_on_a_gpu_and_explains_itself_elsewhere(micro_model):
    """A real process, without the simulator: a GPU answers, no GPU is a one-line error."""
    import os
    import subprocess
    import sys

    path = micro_model("llama", "Q8_0")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run(
        [sys.executable, "-m", "refllm", "run", str(path), "hi", "--backend", "cuda", "-n", "2", "--seed", "1"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert "Traceback" not in done.stderr
    if os.path.exists("/dev/nvidiactl"):
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1
        assert "backend 'cuda' is not available here" in done.stderr
