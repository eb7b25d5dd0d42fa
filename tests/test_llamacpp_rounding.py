"""Every op against llama.cpp's own intermediate tensors (golden/llamacpp_ops/).

tools/capture_llamacpp_tensors.py stored, for one prompt and a few layers of each real
model, the tensors llama.cpp computed (its eval callback).  Fed llama.cpp's inputs, each
op with llama.cpp's rounding (refllm.conformance.llamacpp_rounding) must reproduce
llama.cpp's output to float32 summation noise, and must be much closer than refllm's
float32 op: that shows the rounding list is complete and is what separates the engines.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

import refllm
from refllm.conformance import llamacpp_rounding as lr
from refllm.quant import dequantize, quantize

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "llamacpp_ops"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())

SAME = 2e-6  # max |ours - llama.cpp| / max |llama.cpp|: float32 summation order, nothing more
# The float32 op's distance from llama.cpp, where its rounding changes the result: at least
# this many times the rounding op's (measured: 1000-50000x for products, 2-8x for RoPE angles).
CLOSER = {"linear": 100, "attention": 100, "geglu": 100, "post-norm": 100}


@pytest.fixture(scope="module", params=sorted(MANIFEST))
def captured(request, smollm2_gguf, gemma3_gguf):
    name = request.param
    path = {"smollm2": smollm2_gguf, "gemma3": gemma3_gguf}[name]
    return name, refllm.load(path), dict(np.load(GOLDEN / f"{name}.npz")), MANIFEST[name]["layers"]


def test_every_op_reproduces_llama_cpp_given_its_inputs(captured):
    name, model, tensors, layers = captured
    checks = [c for layer in layers for c in lr.check_layer(model, tensors, layer)]
    checks.append(lr.check_output_head(model, tensors))
    assert len(checks) >= 12 * len(layers)
    for c in checks:
        assert c.rounding_error <= SAME, f"{name} {c.op}: {c.rounding_error:.1e} from llama.cpp with its rounding"
        for kind, factor in CLOSER.items():
            if kind in c.op:
                assert c.float32_error >= factor * max(c.rounding_error, 1e-9), (
                    f"{name} {c.op}: float32 {c.float32_error:.1e} vs rounding {c.rounding_error:.1e}"
                )


def test_rope_angles_follow_ggmls_running_product(captured):
    """At the stored prompt's positions the running product already shows: RoPE with
    ggml's angles is closer to llama.cpp than p * inv_freq on every stored layer."""
    name, model, tensors, layers = captured
    rope_checks = [c for layer in layers for c in lr.check_layer(model, tensors, layer) if "rope" in c.op]
    assert sum(c.rounding_error < c.float32_error for c in rope_checks) >= len(rope_checks) - 1, rope_checks


def test_round_q8_0_is_llama_cpps_q8_0_quantizer():
    """refllm.quant's Q8_0 quantizer is bit-exact with llama.cpp's (tests/test_quant.py);
    away from exact halves (random data) the x86 rounding here gives the same blocks."""
    x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    rounded, d, q = lr.round_q8_0(x)
    via_quantizer = dequantize(quantize(x, T.Q8_0), T.Q8_0, x.shape)
    np.testing.assert_array_equal(rounded, via_quantizer)
    assert q.min() >= -127 and q.max() <= 127
    np.testing.assert_allclose(d, np.abs(x.reshape(8, 8, 32)).max(-1) / 127, rtol=1e-7)


def test_round_q8_k_keeps_the_extreme_value_exact_and_others_within_half_a_step():
    x = np.random.default_rng(1).standard_normal((4, 512)).astype(np.float32)
    rounded = lr.round_q8_k(x)
    blocks, out = x.reshape(8, 256), rounded.reshape(8, 256)
    extreme = np.abs(blocks).argmax(-1)
    np.testing.assert_allclose(out[np.arange(8), extreme], blocks[np.arange(8), extreme], rtol=1e-6)
    step = np.abs(blocks).max(-1, keepdims=True) / 127
    assert np.all(np.abs(out - blocks) <= step / 2 * (1 + 1e-5))
    levels = out / step  # 255 integer levels
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-3)


def test_round_bf16_matches_gguf_py():
    import gguf.quants

    x = np.random.default_rng(2).standard_normal(4096).astype(np.float32) * 100
    theirs = gguf.quants.dequantize(gguf.quants.quantize(x, T.BF16), T.BF16)
    np.testing.assert_array_equal(lr.round_bf16(x), theirs.reshape(x.shape))


def test_q8_1_offset_is_the_fp16_rounding_of_the_block_sum(smollm2_gguf):
    """On a Q4_1 weight, linear() with the offset equals a direct block-by-block sum of
    d_w * d_a * sum(q_w * q_a) + m_w * fp16(d_a * sum(q_a)) (llama.cpp's vec_dot_q4_1_q8_1)."""
    model = refllm.load(smollm2_gguf)
    w = model.transformer.weights.layers[0].wq  # Q4_1 [576, 576]
    assert w.ggml_type == T.Q4_1
    x = np.random.default_rng(3).standard_normal((2, w.shape[1])).astype(np.float32)
    _, d_a, q_a = lr.round_q8_0(x)
    rows = 8
    blocks = np.asarray(w.raw).reshape(w.shape[0], -1, 20)[:rows]  # [rows, nb, 20]
    d_w = np.ascontiguousarray(blocks[..., 0:2]).view(np.float16)[..., 0].astype(np.float64)
    m_w = np.ascontiguousarray(blocks[..., 2:4]).view(np.float16)[..., 0].astype(np.float64)
    nibbles = blocks[..., 4:]
    q_w = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).astype(np.int64)  # [rows, nb, 32]
    isum = np.einsum("rbj,nbj->nrb", q_w, q_a.astype(np.int64))  # [n, rows, nb]
    d_a16 = d_a.astype(np.float16).astype(np.float64)
    s_a = (d_a * q_a.sum(-1).astype(np.float32)).astype(np.float16).astype(np.float64)  # [n, nb]
    expected = (d_w[None] * d_a16[:, None] * isum + m_w[None] * s_a[:, None]).sum(-1)  # [n, rows]
    np.testing.assert_allclose(lr.linear(x, w)[:, :rows], expected, rtol=2e-6, atol=1e-6)
