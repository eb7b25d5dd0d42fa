"""``refllm.plan.build_plan`` and ``refllm plan``: resolved without running the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from refllm import quant
from refllm.cli.main import main
from refllm.errors import InvalidRequest
from refllm.gguf import read
from refllm.plan import build_plan


def test_smollm2_is_optimized_on_numba(smollm2_gguf):
    plan = build_plan(str(smollm2_gguf), backend="numba", num_ctx=1024)
    assert plan.architecture == "llama" and plan.support_level == "optimized"
    assert plan.specialization == "numba-cpu" and plan.fallbacks == []
    assert {op: p.backend for op, p in plan.ops.items()} == {
        **dict.fromkeys(["embedding_rows", "rms_norm", "rope", "attention", "linear", "softmax"], "numba"),
        "silu": "numpy",  # NumPy's vectorised exp outruns a Numba loop: the numba backend uses it
    }
    assert set(plan.quant_types) == {"F32", "Q4_1", "Q8_0"}

    # Memory, from the file itself: mapped bytes are the tensors' bytes; the KV cache is
    # float32 keys + values for every layer, kv head and position.
    gguf_file = read(smollm2_gguf)
    md = gguf_file.metadata
    assert plan.memory.weights_mapped_bytes == sum(t.n_bytes for t in gguf_file.tensors.values())
    assert 0.9 * smollm2_gguf.stat().st_size < plan.memory.weights_mapped_bytes < smollm2_gguf.stat().st_size
    head_dim = md["llama.embedding_length"] // md["llama.attention.head_count"]
    assert plan.memory.kv_cache_bytes == 2 * 4 * md["llama.block_count"] * 1024 * md["llama.attention.head_count_kv"] * head_dim
    assert plan.memory.total_bytes == plan.memory.weights_mapped_bytes + plan.memory.kv_cache_bytes + plan.memory.scratch_bytes


def test_gemma3_plan_and_default_context(gemma3_gguf):
    plan = build_plan(str(gemma3_gguf))
    assert plan.support_level == "optimized" and "gelu_tanh" in plan.ops
    assert set(plan.quant_types) == {"F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"}
    assert plan.num_ctx == 4096 and plan.n_ctx_train == 32768  # Ollama's default, capped by training
    assert build_plan(str(gemma3_gguf), num_ctx=10**6).num_ctx == 32768


@pytest.mark.parametrize("kwargs", [{"backend": "numpy"}, {"no_specialization": True}])
def test_numpy_backend_is_generic(smollm2_gguf, kwargs):
    plan = build_plan(str(smollm2_gguf), **kwargs)
    assert plan.backend == "numpy" and plan.support_level == "generic" and plan.specialization is None
    assert {p.backend for p in plan.ops.values()} == {"numpy"}


def test_scratch_estimate_follows_the_kernels(gemma3_gguf):
    """Numba: one weight tile and one chunk of attention scores per thread; the NumPy
    reference: a chunk of dequantized weights and every head's scores at once."""
    from refllm.kernels.numba_backend import TILE_WEIGHTS
    from refllm.kernels.reference import WEIGHTS_PER_CHUNK

    one, two = (build_plan(gemma3_gguf, backend="numba", threads=t, num_ctx=1024).memory for t in (1, 2))
    assert two.scratch_bytes - one.scratch_bytes >= 4 * TILE_WEIGHTS
    reference = build_plan(gemma3_gguf, backend="numpy", num_ctx=1024).memory
    assert reference.scratch_bytes >= 4 * WEIGHTS_PER_CHUNK and reference.scratch_bytes > one.scratch_bytes


def test_bad_arguments_are_clear_errors(smollm2_gguf):
    with pytest.raises(InvalidRequest, match="unknown backend"):
        build_plan(str(smollm2_gguf), backend="cuda-ish")
    with pytest.raises(InvalidRequest, match="num_ctx"):
        build_plan(str(smollm2_gguf), num_ctx=0)


def test_a_type_without_numba_kernel_falls_back_or_is_unsupported(tiny_model):
    path = tiny_model("llama", "IQ2_XXS")
    plan = build_plan(str(path), backend="numba")
    if T.IQ2_XXS in quant.SUPPORTED_DEQUANT_TYPES:
        assert plan.support_level == "generic"
        assert plan.quant_types["IQ2_XXS"].backend == "numpy"
        assert any("IQ2_XXS" in reason for reason in plan.fallbacks)
        assert plan.ops["linear"].fallback_reason
    else:
        assert plan.support_level == "unsupported" and "IQ2_XXS" in plan.reason


def test_unknown_architecture_is_unsupported_with_a_reason(unsupported_gguf):
    plan = build_plan(unsupported_gguf)
    assert plan.support_level == "unsupported" and "rwkv6" in plan.reason


def test_cli_plan_json(smollm2_gguf, capsys):
    assert main(["plan", str(smollm2_gguf), "--json", "--num-ctx", "512", "--threads", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["support_level"] == "optimized" and data["num_ctx"] == 512 and data["threads"] == 1
    assert data["ops"]["attention"] == {"backend": "numba", "fallback_reason": None}


def test_cli_plan_text_and_errors(smollm2_gguf, tmp_path, capsys):
    assert main(["plan", str(smollm2_gguf), "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "support level  generic" in out and "KV cache" in out
    bad = tmp_path / "not.gguf"
    bad.write_bytes(b"hello")
    assert main(["plan", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "Traceback" not in err


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_K", "Q6_K", "IQ4_XS", "BF16"])
def test_numba_backend_forward_matches_numpy_reference(tiny_model, arch, qtype):
    """Whole forward pass (prefill + decode) on a tiny model: Numba backend vs the NumPy reference."""
    import refllm

    model = refllm.load(tiny_model(arch, qtype))
    ids = np.arange(1, 12)
    logits = {}
    for backend in ("numpy", "numba"):
        model.backend = backend
        cache = model.new_cache(16)
        prefill = model.forward(ids[:9], cache, all_logits=True)  # [9, n_vocab]
        decode = [model.forward(ids[i : i + 1], cache) for i in (9, 10)]  # 2 x [n_vocab]
        logits[backend] = np.vstack([prefill, *decode])
    np.testing.assert_allclose(logits["numba"], logits["numpy"], rtol=1e-3, atol=1e-3 * np.abs(logits["numpy"]).max())
