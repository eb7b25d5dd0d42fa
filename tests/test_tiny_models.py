"""The tiny synthetic models (tools/make_tiny_models.py): deterministic, valid, complete.

Every (architecture, weight type) file is read by refllm's reader and by gguf-py's
``GGUFReader`` (an independent parser) and both must agree; tensor types, shapes and
metadata must be what llama.cpp expects for the architecture.  That llama.cpp itself
loads and runs them is checked by tools/check_tiny_models_llamacpp.py (see its report).
"""

from __future__ import annotations

import hashlib
import json
import sys

import gguf
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from test_gguf_reader import assert_same_as_gguf_py

import refllm.gguf as rg
from conftest import load_tool

make = sys.modules.get("refllm_tools_make_tiny_models") or load_tool("make_tiny_models")

# Keys llama.cpp's loaders read for every architecture, and the extra ones per architecture.
REQUIRED_KEYS = [
    "general.architecture", "general.file_type", "{a}.context_length", "{a}.embedding_length",
    "{a}.block_count", "{a}.feed_forward_length", "{a}.attention.head_count", "{a}.attention.head_count_kv",
    "{a}.attention.layer_norm_rms_epsilon", "{a}.rope.freq_base",
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
]  # fmt: skip
EXTRA_KEYS = {
    "llama": ["tokenizer.ggml.merges", "tokenizer.chat_template"],
    "qwen2": ["tokenizer.ggml.merges", "tokenizer.chat_template"],
    "qwen3": ["tokenizer.ggml.merges", "tokenizer.chat_template", "{a}.attention.key_length", "{a}.attention.value_length"],
    "gemma3": ["tokenizer.ggml.scores", "{a}.attention.key_length", "{a}.attention.value_length",
               "{a}.attention.sliding_window"],
}  # fmt: skip


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


GOLDEN_DIGESTS = json.loads(make.GOLDEN_DIGESTS.read_text())["sha256"]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, tiny_model):
    first = tiny_model("qwen3", "Q4_K")
    again = make.write_tiny_model(tmp_path / "again.gguf", "qwen3", "Q4_K", seed=0)
    other = make.write_tiny_model(tmp_path / "other.gguf", "qwen3", "Q4_K", seed=1)
    assert sha256(first) == sha256(again)
    assert sha256(first) != sha256(other)
    a, o = rg.read(first), rg.read(other)
    assert a.metadata.keys() == o.metadata.keys()  # only the weights differ
    assert not np.array_equal(a.tensors["blk.0.attn_q.weight"].raw, o.tensors["blk.0.attn_q.weight"].raw)


def test_command_line_writes_the_same_files(tmp_path, tiny_model):
    assert make.main([str(tmp_path), "--arch", "gemma3", "--types", "IQ2_XS", "F16"]) == 0
    assert sha256(tmp_path / "tiny-gemma3-IQ2_XS.gguf") == sha256(tiny_model("gemma3", "IQ2_XS"))
    assert (tmp_path / "tiny-gemma3-F16.gguf").is_file()


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="architecture"):
        make.write_tiny_model(tmp_path / "x.gguf", "gpt5", "Q8_0")
    with pytest.raises(ValueError, match="type"):
        make.write_tiny_model(tmp_path / "x.gguf", "llama", "Q7_0")


@pytest.mark.parametrize("qtype", make.WEIGHT_TYPES)
@pytest.mark.parametrize("arch", make.ARCHITECTURES)
def test_model_is_valid_and_complete(tiny_model, arch, qtype):
    path = tiny_model(arch, qtype)
    # Golden data (logits from llama.cpp) are made from these files: they must not drift.
    assert sha256(path) == GOLDEN_DIGESTS[path.name], (
        f"{path.name} differs from the recorded one (a numpy or gguf-py upgrade, or a generator change?): "
        "regenerate golden/tiny_models.json (tools/make_tiny_models.py --write-digests) and the golden "
        "data made from the tiny models"
    )
    f = assert_same_as_gguf_py(path)  # refllm and gguf-py read identical metadata and tensor tables
    cfg = make.CONFIGS[arch]
    meta = f.metadata
    assert f.architecture == arch
    for key in REQUIRED_KEYS + EXTRA_KEYS[arch]:
        assert key.format(a=arch) in meta, key
    assert meta["general.file_type"] == int(make.FILE_TYPES[qtype])

    # Hyper-parameters agree with the tensors (what llama.cpp checks when it loads).
    n_vocab = len(meta["tokenizer.ggml.tokens"])
    assert n_vocab == len(meta["tokenizer.ggml.token_type"]) == cfg.n_vocab
    n_embd, n_ff = meta[f"{arch}.embedding_length"], meta[f"{arch}.feed_forward_length"]
    n_head, n_head_kv = meta[f"{arch}.attention.head_count"], meta[f"{arch}.attention.head_count_kv"]
    head_dim = meta.get(f"{arch}.attention.key_length", n_embd // n_head)
    assert f.tensors["token_embd.weight"].shape == (n_vocab, n_embd)
    n_layer = meta[f"{arch}.block_count"]
    assert {name.split(".")[1] for name in f.tensors if name.startswith("blk.")} == {str(i) for i in range(n_layer)}
    assert f.tensors["blk.1.attn_q.weight"].shape == (n_head * head_dim, n_embd)
    assert f.tensors["blk.1.attn_k.weight"].shape == (n_head_kv * head_dim, n_embd)
    assert f.tensors["blk.1.attn_output.weight"].shape == (n_embd, n_head * head_dim)
    assert f.tensors["blk.1.ffn_down.weight"].shape == (n_embd, n_ff)
    assert ("output.weight" in f.tensors) == (arch == "qwen2")
    assert ("blk.0.attn_q.bias" in f.tensors) == (arch == "qwen2")
    assert ("blk.0.attn_k_norm.weight" in f.tensors) == (arch in ("qwen3", "gemma3"))
    assert ("blk.0.post_ffw_norm.weight" in f.tensors) == (arch == "gemma3")

    # Matrices in the declared type, everything 1-D in F32, and every scale finite.
    for t in f.tensors.values():
        expected = T[qtype] if len(t.shape) == 2 else T.F32
        assert t.ggml_type == expected, t.name
        assert t.shape[-1] % GGML_QUANT_SIZES[t.ggml_type][0] == 0
    up = f.tensors["blk.0.ffn_up.weight"]
    values = gguf.quants.dequantize(up.raw.reshape(up.shape[0], -1), T[qtype])  # gguf-py decodes it
    assert values.shape == (cfg.n_ff, n_embd) and np.isfinite(values).all() and values.std() > 0


def test_bpe_vocab_is_the_start_of_smollm2s(smollm2_gguf, tiny_model):
    real = rg.read(smollm2_gguf).metadata
    tiny = rg.read(tiny_model("llama", "Q8_0")).metadata
    n = len(tiny["tokenizer.ggml.tokens"])
    assert list(tiny["tokenizer.ggml.tokens"]) == list(real["tokenizer.ggml.tokens"][:n])
    kept = set(tiny["tokenizer.ggml.tokens"])
    merges = list(tiny["tokenizer.ggml.merges"])
    assert len(merges) > 500
    real_merges = list(real["tokenizer.ggml.merges"][: len(merges) + 200])
    for merge in merges:  # every kept merge is a real one and stays inside the vocabulary
        left, right = merge.split(" ")
        assert left in kept and right in kept and left + right in kept
    assert merges == [m for m in real_merges if all(p in kept for p in m.split(" ")) and m.replace(" ", "") in kept][
        : len(merges)
    ]
    assert tiny["tokenizer.ggml.tokens"][tiny["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"
    assert "<|im_start|>" in tiny["tokenizer.chat_template"]


def test_spm_vocab_has_gemma_controls_bytes_and_pieces(gemma3_gguf, tiny_model):
    real = rg.read(gemma3_gguf).metadata
    tiny = rg.read(tiny_model("gemma3", "Q8_0")).metadata
    tokens = list(tiny["tokenizer.ggml.tokens"])
    types = tiny["tokenizer.ggml.token_type"]
    for special in ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"):
        assert types[tokens.index(special)] == gguf.TokenType.CONTROL
    assert [t for t, ty in zip(tokens, types) if ty == gguf.TokenType.BYTE] == [f"<0x{b:02X}>" for b in range(256)]
    real_tokens = real["tokenizer.ggml.tokens"]
    real_scores = np.asarray(real["tokenizer.ggml.scores"])
    real_index = {real_tokens[i]: i for i in range(494, 494 + 2000)}
    pieces = [(t, s) for t, s, ty in zip(tokens, tiny["tokenizer.ggml.scores"], types) if ty == gguf.TokenType.NORMAL]
    assert len(pieces) > 500
    for token, score in pieces:  # Gemma's own pieces with Gemma's own scores
        assert real_scores[real_index[token]] == score
    assert tokens[tiny["tokenizer.ggml.bos_token_id"]] == "<bos>" and tiny["tokenizer.ggml.add_bos_token"] is True
