"""``create`` FROM a Hugging Face safetensors directory: refllm's converter against HF transformers.

The directory comes from tools/make_tiny_hf_model.py (seed 0); golden/convert/ holds
transformers' logits for it (tools/golden_convert.py), and HF tokenizers gives the ids.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from tokenizers import Tokenizer

from conftest import GOLDEN, load_tool
from refllm import store
from refllm.errors import InvalidRequest, UnsupportedModel


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return load_tool("make_tiny_hf_model").write_tiny_hf_llama(tmp_path_factory.mktemp("hf") / "tiny-hf-llama", seed=0)


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("REFLLM_MODELS", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "models"


@pytest.fixture
def converted(models_dir, hf_dir):
    import refllm

    store.create("tiny-hf", f"FROM {hf_dir}\nSYSTEM converted\n")
    return refllm.load("tiny-hf")


def test_logits_match_transformers(converted):
    golden = np.load(GOLDEN / "convert" / "tiny_hf_llama.npz")
    n_prompts = len([k for k in golden.files if k.endswith("_ids")])
    assert n_prompts >= 3
    for i in range(n_prompts):
        ids, expected = golden[f"p{i}_ids"], golden[f"p{i}_logits"]
        logits = converted.logits([int(t) for t in ids])
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
        assert (logits.argmax(-1) == expected.argmax(-1)).all()


def test_tokenizer_matches_hf_tokenizers(converted, hf_dir):
    reference = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    for text in ["the sky is blue", "on and on, 1234 sheep!", "<|im_start|>user\nhi<|im_end|>", "ünïcödé  spaces\n\n"]:
        expected = reference.encode(text, add_special_tokens=False).ids
        assert converted.tokenize(text, add_special=False, parse_special=True) == expected, text
        assert converted.detokenize(expected) == reference.decode(expected, skip_special_tokens=False)


def test_metadata_and_lossless_weights(converted, hf_dir):
    fields = gguf.GGUFReader(converted.path).fields
    config = json.loads((hf_dir / "config.json").read_text())
    assert fields["general.architecture"].contents() == "llama"
    assert fields["llama.block_count"].contents() == config["num_hidden_layers"]
    assert fields["llama.attention.head_count_kv"].contents() == config["num_key_value_heads"]
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 2  # <|im_end|>, from tokenizer_config.json
    assert fields["tokenizer.chat_template"].contents().startswith("{% for message in messages %}")
    tensors = {t.name: t for t in gguf.GGUFReader(converted.path).tensors}
    assert tensors["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.BF16  # kept as shipped
    assert tensors["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert set(tensors) >= {"token_embd.weight", "output.weight", "blk.1.attn_q.weight"}
    assert store.resolve("tiny-hf").system == "converted"


def test_converted_model_can_be_quantized(models_dir, hf_dir):
    model = store.create("tiny-hf-q8", f"FROM {hf_dir}\n", quantize="q8_0")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(model.gguf_path).tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0


def test_unsupported_directories_are_clear_errors(models_dir, hf_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(hf_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["GPTNeoXForCausalLM"]}))
    with pytest.raises(UnsupportedModel, match="GPTNeoXForCausalLM"):
        store.create("x", f"FROM {other}\n")
    (other / "config.json").unlink()
    with pytest.raises(InvalidRequest, match="config.json"):
        store.create("x", f"FROM {other}\n")
    (other / "config.json").write_text(json.dumps(config))
    (other / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(InvalidRequest, match="safetensors"):
        store.create("x", f"FROM {other}\n")
    assert store.list_models() == [] and list((models_dir / "tmp").iterdir()) == []
