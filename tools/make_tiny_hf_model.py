"""A tiny Hugging Face llama model directory, written from a seed (no download, no torch):

    python tools/make_tiny_hf_model.py OUT_DIR

    OUT_DIR/config.json             LlamaForCausalLM: 2 layers, n_embd 64, 4 heads / 2 kv heads, untied lm_head
    OUT_DIR/model.safetensors       BF16 weights (as most Hugging Face checkpoints ship)
    OUT_DIR/tokenizer.json          byte-level BPE, SmolLM-style pre-tokenizer (single digits, then GPT-2's regex)
    OUT_DIR/tokenizer_config.json   special tokens and a ChatML chat template

The same seed gives the same bytes on every machine, so the golden logits that
tools/golden_convert.py computes with HF transformers from this directory stay valid
for the directory the tests write (tests/test_store_convert.py).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "torch_dtype": "bfloat16",
    "bos_token_id": 1,
    "eos_token_id": 2,
}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"), ("Ġ", "s"),
          ("r", "e"), ("a", "t"), ("Ġ", "w"), ("o", "r"), ("e", "n"), ("Ġ", "o"), ("i", "s"), ("Ġ", "b"),
          ("l", "l"), ("Ġ", "c"), ("Ġ", "i"), ("Ġi", "s"), ("Ġs", "k"), ("Ġsk", "y"), ("Ġb", "l"), ("u", "e")]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    bits = values.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """uint16 arrays holding bf16 bits -> a safetensors file (header JSON padded to 8 bytes)."""
    header, offset = {}, 0
    for name, array in tensors.items():
        header[name] = {"dtype": "BF16", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for array in tensors.values():
            f.write(np.ascontiguousarray(array).tobytes())


def byte_level_alphabet() -> list[str]:
    """GPT-2's 256 printable stand-ins for bytes, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def tokenizer_document() -> dict:
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in byte_level_alphabet():
        vocab[char] = len(vocab)
    for left, right in MERGES:
        vocab.setdefault(left + right, len(vocab))
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for i, t in enumerate(SPECIAL_TOKENS)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in MERGES]},
    }


def weights(seed: int, n_vocab: int) -> dict[str, np.ndarray]:
    c = CONFIG
    rng = np.random.default_rng(seed)
    n_embd, n_ff, head_dim = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q_rows, kv_rows = c["num_attention_heads"] * head_dim, c["num_key_value_heads"] * head_dim

    def matrix(rows: int, cols: int) -> np.ndarray:
        return rng.standard_normal((rows, cols)).astype(np.float32) / np.sqrt(cols)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32)

    tensors = {"model.embed_tokens.weight": matrix(n_vocab, n_embd)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = norm()
        tensors[p + "self_attn.q_proj.weight"] = matrix(q_rows, n_embd)
        tensors[p + "self_attn.k_proj.weight"] = matrix(kv_rows, n_embd)
        tensors[p + "self_attn.v_proj.weight"] = matrix(kv_rows, n_embd)
        tensors[p + "self_attn.o_proj.weight"] = matrix(n_embd, q_rows)
        tensors[p + "post_attention_layernorm.weight"] = norm()
        tensors[p + "mlp.gate_proj.weight"] = matrix(n_ff, n_embd)
        tensors[p + "mlp.up_proj.weight"] = matrix(n_ff, n_embd)
        tensors[p + "mlp.down_proj.weight"] = matrix(n_embd, n_ff)
    tensors["model.norm.weight"] = norm()
    tensors["lm_head.weight"] = matrix(n_vocab, n_embd)
    return {name: to_bf16_bits(values) for name, values in tensors.items()}


def write_tiny_hf_llama(directory: str | Path, seed: int = 0) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    document = tokenizer_document()
    n_vocab = len(document["model"]["vocab"])
    (directory / "config.json").write_text(json.dumps({**CONFIG, "vocab_size": n_vocab}, indent=2))
    (directory / "tokenizer.json").write_text(json.dumps(document, ensure_ascii=False, indent=1))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": False, "chat_template": CHATML_TEMPLATE,
    }, indent=2))
    write_safetensors(directory / "model.safetensors", weights(seed, n_vocab))
    return directory


if __name__ == "__main__":
    print(write_tiny_hf_llama(sys.argv[1] if len(sys.argv) > 1 else "tiny-hf-llama"))
