"""The forward pass: config from metadata, KV cache (prefill vs decode, prefix reuse),
sliding windows, the reference ops, and clear errors for bad models and bad input.

Agreement of the logits with llama.cpp and HF transformers is tests/test_golden_logits.py.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

import refllm
from refllm.errors import InvalidRequest, UnsupportedModel
from refllm.kernels import reference
from refllm.model.config import config_from_gguf
from refllm.model.transformer import Transformer


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    return refllm.load(smollm2_gguf)


@pytest.fixture(scope="module")
def gemma3(gemma3_gguf):
    return refllm.load(gemma3_gguf)


# --------------------------------------------------------------------------- config
# Expected values: the models' published HF config.json files (SmolLM2-135M-Instruct,
# gemma-3-270m), not refllm's output.


def test_smollm2_config_from_metadata(smollm2):
    c = smollm2.config
    assert (c.architecture, c.n_layers, c.n_embd, c.n_ff) == ("llama", 30, 576, 1536)
    assert (c.n_heads, c.n_kv_heads, c.head_dim, c.head_dim_v) == (9, 3, 64, 64)
    assert (c.n_vocab, c.n_ctx_train, c.rope_base, c.rope_dim) == (49152, 8192, 100000.0, 64)
    assert c.rope_neox is False and c.rope_scaling.type == "none"
    assert c.attention_scale == pytest.approx(1 / 8)
    assert c.rms_norm_eps == pytest.approx(1e-5)
    assert smollm2.n_vocab == 49152 and smollm2.n_ctx_train == 8192


def test_gemma3_config_from_metadata(gemma3):
    c = gemma3.config
    assert (c.architecture, c.n_layers, c.n_embd, c.n_ff) == ("gemma3", 18, 640, 2048)
    assert (c.n_heads, c.n_kv_heads, c.head_dim, c.n_vocab) == (4, 1, 256, 262144)
    assert (c.sliding_window, c.rope_base, c.rope_base_local) == (512, 1_000_000.0, 10_000.0)
    assert c.rope_neox is True
    assert c.attention_scale == pytest.approx(1 / 16)  # query_pre_attn_scalar = 256
    # HF layer_types: every 6th layer is full attention
    assert [il for il in range(18) if not c.is_sliding(il)] == [5, 11, 17]


def fake_gguf(real, drop_key: str | None = None, **overrides):
    """A stand-in GGUFFile with edited metadata (config_from_gguf reads .metadata/.path/.tensors)."""
    metadata = {k: v for k, v in real.metadata.items() if k != drop_key}
    metadata.update(overrides)
    return SimpleNamespace(metadata=metadata, path=real.path, tensors=real.tensors, architecture=metadata.get("general.architecture"))


def test_unsupported_architecture_is_a_clear_error(smollm2):
    with pytest.raises(UnsupportedModel, match="architecture 'mamba' is not supported"):
        config_from_gguf(fake_gguf(smollm2.gguf, **{"general.architecture": "mamba"}))


@pytest.mark.parametrize("key", ["llama.block_count", "llama.embedding_length", "llama.attention.layer_norm_rms_epsilon"])
def test_missing_metadata_key_is_named(smollm2, key):
    with pytest.raises(UnsupportedModel, match=key.replace(".", r"\.")):
        config_from_gguf(fake_gguf(smollm2.gguf, drop_key=key))


def test_missing_or_misshapen_tensor_is_named(smollm2):
    real = smollm2.gguf
    tensors = {k: v for k, v in real.tensors.items() if k != "blk.3.ffn_up.weight"}
    with pytest.raises(UnsupportedModel, match=r"blk\.3\.ffn_up\.weight"):
        Transformer(SimpleNamespace(metadata=real.metadata, path=real.path, tensors=tensors))
    wrong = fake_gguf(real, **{"llama.feed_forward_length": 1024})
    with pytest.raises(UnsupportedModel, match="expected"):
        Transformer(wrong)


def test_heads_must_divide_evenly(smollm2):
    with pytest.raises(UnsupportedModel, match="key/value heads"):
        config_from_gguf(fake_gguf(smollm2.gguf, **{"llama.attention.head_count_kv": 4}))


# --------------------------------------------------------------------------- KV cache


def test_decode_matches_prefill_and_prefix_reuse(smollm2):
    ids = smollm2.tokenize("The quick brown fox jumps over the lazy dog")
    full = smollm2.logits(ids)  # [n, n_vocab], one batched pass
    assert full.shape == (len(ids), smollm2.n_vocab) and full.dtype == np.float32

    cache = smollm2.new_cache(64)
    last = smollm2.forward(ids[:-2], cache)  # prefill
    assert cache.n_past == len(ids) - 2
    np.testing.assert_allclose(last, full[-3], atol=2e-3)
    for j in (-2, -1):  # decode one token at a time
        step = smollm2.forward([ids[j]], cache)
        np.testing.assert_allclose(step, full[j], atol=2e-3)
    assert cache.n_past == len(ids)

    cache.truncate(4)  # keep a 4-token prefix, evaluate the rest again
    again = smollm2.forward(ids[4:], cache, all_logits=True)
    np.testing.assert_allclose(again, full[4:], atol=2e-3)


def test_hidden_states_are_final_normed(smollm2):
    ids = smollm2.tokenize("Hello")
    hidden = smollm2.hidden_states(ids)
    assert hidden.shape == (len(ids), 576) and hidden.dtype == np.float32
    assert np.all(np.isfinite(hidden))


def test_sliding_window_decode_matches_prefill(tiny_model):
    """Tiny gemma3 (window 32): decoding past the window equals one batched pass."""
    model = refllm.load(tiny_model("gemma3", "F16"))
    assert model.config.sliding_window == 32
    ids = list(np.random.default_rng(0).integers(4, model.n_vocab, size=45))
    full = model.logits(ids)
    cache = model.new_cache(64)
    model.forward(ids[:30], cache)
    for j in range(30, 45):
        np.testing.assert_allclose(model.forward([ids[j]], cache), full[j], atol=1e-4)
    # the window matters: with no window the last logits differ
    no_window = Transformer(model.gguf)
    no_window.config = replace(no_window.config, sliding_window=10**9)
    plain = no_window.forward(ids, no_window.new_cache(64), reference.NUMPY_BACKEND)
    assert np.abs(plain - full[-1]).max() > 1e-3


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma3"])
def test_tiny_architectures_run(tiny_model, arch):
    model = refllm.load(tiny_model(arch, "Q8_0"))
    logits = model.logits([1, 5, 9, 200])
    assert logits.shape == (4, model.n_vocab) and np.all(np.isfinite(logits))


# --------------------------------------------------------------------------- bad input


def test_context_overflow_is_refused_not_truncated(smollm2):
    cache = smollm2.new_cache(8)
    with pytest.raises(InvalidRequest, match="do not fit in the context"):
        smollm2.forward(list(range(100, 110)), cache)
    assert cache.n_past == 0
    smollm2.forward([1, 2, 3, 4, 5, 6, 7, 8], cache)
    with pytest.raises(InvalidRequest, match="0 remain"):
        smollm2.forward([9], cache)


@pytest.mark.parametrize("ids", [[], [-1], [49152], [1.5], [[1, 2]]])
def test_bad_token_ids_are_refused(smollm2, ids):
    with pytest.raises(InvalidRequest):
        smollm2.forward(ids, smollm2.new_cache(8))


def test_bad_truncate_and_backend(smollm2):
    cache = smollm2.new_cache(8)
    with pytest.raises(InvalidRequest):
        cache.truncate(3)  # holds 0
    with pytest.raises(InvalidRequest, match="unknown backend"):
        reference.get_backend("fortran")


# --------------------------------------------------------------------------- reference ops (hand-built cases)


def test_rope_pairs_normal_and_neox():
    x = np.array([[[1, 0, 0, 0]]], dtype=np.float32)  # [n=1, heads=1, hd=4]
    inv_freq = np.array([np.pi / 2, 0.0], dtype=np.float32)  # pair 0 turns 90 degrees at position 1
    normal = reference.rope(x, np.array([1]), inv_freq, neox=False)
    np.testing.assert_allclose(normal[0, 0], [0, 1, 0, 0], atol=1e-6)  # pair 0 = dims (0, 1)
    neox = reference.rope(x, np.array([1]), inv_freq, neox=True)
    np.testing.assert_allclose(neox[0, 0], [0, 0, 1, 0], atol=1e-6)  # pair 0 = dims (0, 2)
    at_zero = reference.rope(x, np.array([0]), inv_freq, neox=True)
    np.testing.assert_allclose(at_zero, x, atol=1e-7)  # position 0 is not rotated


def test_attention_mask_window_and_gqa():
    rng = np.random.default_rng(0)
    k = rng.standard_normal((5, 1, 4)).astype(np.float32)
    v = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 1, 4), np.float32)
    q = rng.standard_normal((5, 2, 4)).astype(np.float32)
    # window 1: each query sees only its own position -> returns its own value row, both heads (GQA)
    out = reference.attention(q, k, v, np.arange(5), scale=0.5, window=1)
    np.testing.assert_allclose(out[:, :, 0], np.repeat(np.arange(5.0)[:, None], 2, axis=1), atol=1e-6)
    # causal: position 0 sees only itself
    out = reference.attention(q, k, v, np.arange(5), scale=0.5)
    np.testing.assert_allclose(out[0], v[0].repeat(2, axis=0), atol=1e-6)


def test_linear_in_chunks_equals_one_matmul(smollm2, monkeypatch):
    from refllm.quant import dequantize

    w = smollm2.gguf.tensors["blk.0.ffn_up.weight"]
    x = np.random.default_rng(1).standard_normal((3, 576)).astype(np.float32)
    expected = x @ dequantize(w.raw, w.ggml_type, w.shape).T
    monkeypatch.setattr(reference, "WEIGHTS_PER_CHUNK", 576 * 100)  # 100 rows at a time
    np.testing.assert_allclose(reference.linear(x, w), expected, rtol=1e-5, atol=1e-5)


def test_gelu_tanh_and_silu_known_values():
    x = np.array([-1.0, 0.0, 1.0, 3.0], dtype=np.float32)
    # gelu_pytorch_tanh / silu values from their closed forms
    np.testing.assert_allclose(reference.gelu_tanh(x), [-0.158808, 0.0, 0.841192, 2.996363], atol=1e-5)
    np.testing.assert_allclose(reference.silu(x), [-0.268941, 0.0, 0.731059, 2.857722], atol=1e-5)


def test_scaled_rope_frequencies_match_hf():
    """linear and YaRN inverse frequencies + attention factor vs HF's ROPE_INIT_FUNCTIONS (golden/logits/rope.json)."""
    import json
    from pathlib import Path

    from refllm.model.config import RopeScaling
    from refllm.model.rope import rope_frequencies

    golden = json.loads((Path(__file__).resolve().parent.parent / "golden" / "logits" / "rope.json").read_text())
    for case in golden["cases"]:
        params = case["parameters"]
        scaling = RopeScaling(
            type=case["type"],
            factor=params["factor"],
            original_context_length=params.get("original_max_position_embeddings", 0),
            beta_fast=params.get("beta_fast", 32.0),
            beta_slow=params.get("beta_slow", 1.0),
        )
        inv_freq, mscale = rope_frequencies(case["head_dim"], case["base"], scaling)
        np.testing.assert_allclose(inv_freq, case["inv_freq"], rtol=1e-6)
        assert mscale == pytest.approx(case["attention_factor"], rel=1e-6)


def test_weights_stay_quantized(gemma3):
    """Only small vectors (norms, rope frequencies) are held as float32; matrices stay in the mmap."""
    from dataclasses import fields, is_dataclass

    from refllm.gguf import TensorInfo

    def float_bytes(obj) -> int:
        if isinstance(obj, TensorInfo):  # quantized bytes, a view of the memory map
            return 0
        if isinstance(obj, np.ndarray):
            return obj.nbytes
        if isinstance(obj, list):
            return sum(float_bytes(item) for item in obj)
        if is_dataclass(obj) and not isinstance(obj, type):
            return sum(float_bytes(getattr(obj, f.name)) for f in fields(obj))
        return 0

    weights = gemma3.transformer.weights
    assert weights.token_embd.raw.base is not None  # a view into the file mapping, not a copy
    assert float_bytes(weights) < 1_000_000  # ~0.1 MB of norm weights vs a 250 MB file


@pytest.mark.parametrize("available, reads_in", [(0, False), (1 << 40, True)])
def test_building_the_weights_reads_the_file_in_when_it_fits(tiny_model, monkeypatch, available, reads_in):
    """The first use of the weights maps the whole file in one pass, unless it would take over half the free memory."""
    import refllm.model.loaded as loaded
    from refllm.gguf import GGUFFile

    calls = []
    monkeypatch.setattr(loaded, "available_memory", lambda: available)
    monkeypatch.setattr(GGUFFile, "read_in", lambda self: calls.append(self.path))
    model = refllm.load(tiny_model("llama", "Q8_0"))
    assert calls == []  # opening a model maps nothing in
    model.transformer  # noqa: B018  (a cached_property)
    assert calls == ([model.path] if reads_in else [])


@pytest.mark.parametrize("limit, want_gib", [(None, 6), ("max", 6), (str(3 << 30), 2), (str(1 << 30), 0)])
def test_available_memory_is_meminfo_capped_by_the_cgroup_limit(tmp_path, monkeypatch, limit, want_gib):
    import refllm.model.loaded as loaded

    (tmp_path / "meminfo").write_text(f"MemTotal: {8 << 20} kB\nMemAvailable: {6 << 20} kB\n")
    monkeypatch.setattr(loaded, "MEMINFO", str(tmp_path / "meminfo"))
    monkeypatch.setattr(loaded, "CGROUP", str(tmp_path / "cgroup"))
    if limit is not None:
        (tmp_path / "cgroup").mkdir()
        (tmp_path / "cgroup" / "memory.max").write_text(limit + "\n")
        (tmp_path / "cgroup" / "memory.current").write_text(f"{1 << 30}\n")  # 1 GiB in use
    assert loaded.available_memory() == want_gib << 30
    monkeypatch.setattr(loaded, "MEMINFO", str(tmp_path / "missing"))
    assert loaded.available_memory() == 0  # the OS won't say: no read-in
