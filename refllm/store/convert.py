"""``FROM ./hf-model-dir``: a Hugging Face safetensors directory of a llama-family model -> GGUF.

What the directory holds, and where each part goes in the GGUF:

    config.json            hyper-parameters      -> llama.* metadata keys
    *.safetensors          the weights           -> tensors, renamed (table below); q/k rows reordered
    tokenizer.json         byte-level BPE vocab  -> tokenizer.ggml.* (tokens, types, merges, pre)
    tokenizer_config.json  special tokens, chat template (read by gguf-py's SpecialVocab)

    Hugging Face name                              GGUF name
    model.embed_tokens.weight                      token_embd.weight
    model.layers.N.input_layernorm.weight          blk.N.attn_norm.weight
    model.layers.N.self_attn.{q,k,v,o}_proj.weight blk.N.attn_{q,k,v,output}.weight
    model.layers.N.post_attention_layernorm.weight blk.N.ffn_norm.weight
    model.layers.N.mlp.{gate,up,down}_proj.weight  blk.N.ffn_{gate,up,down}.weight
    model.norm.weight                              output_norm.weight
    lm_head.weight (absent when tied)              output.weight

Weights keep their precision (F32, F16 or BF16 in, the same out): the conversion is
lossless, and ``create --quantize`` can shrink the result afterwards.

The safetensors format is small enough to read here directly:

    +-----------------+--------------------------------------------+------------------+
    | header size u64 | JSON: name -> {dtype, shape, data_offsets} | tensor bytes ... |
    +-----------------+--------------------------------------------+------------------+
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

import gguf
import numpy as np

from refllm.errors import InvalidRequest, UnsupportedModel
from refllm.store.blobs import Progress, no_progress

LLAMA_FAMILY = ("LlamaForCausalLM", "MistralForCausalLM")
SAFETENSORS_DTYPES = {"F32": (np.float32, gguf.GGMLQuantizationType.F32),
                      "F16": (np.float16, gguf.GGMLQuantizationType.F16),
                      "BF16": (np.uint16, gguf.GGMLQuantizationType.BF16)}  # bf16 stays raw bits
LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def read_safetensors(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (dtype name, array view into the file); raises InvalidRequest on a damaged file."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    if len(data) < 8:
        raise InvalidRequest(f"{path}: too short to be a safetensors file")
    (header_size,) = struct.unpack("<Q", bytes(data[:8]))
    if header_size > len(data) - 8:
        raise InvalidRequest(f"{path}: header size {header_size} runs past the end of the file")
    try:
        header = json.loads(bytes(data[8:8 + header_size]))
    except ValueError:
        raise InvalidRequest(f"{path}: the header is not JSON") from None
    start = 8 + header_size
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype")
        if dtype not in SAFETENSORS_DTYPES:
            raise UnsupportedModel(f"{path}: tensor {name} has dtype {dtype}; supported: F32, F16, BF16")
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        numpy_type = SAFETENSORS_DTYPES[dtype][0]
        if end > len(data) - start or end - begin != int(np.prod(shape, dtype=np.int64)) * np.dtype(numpy_type).itemsize:
            raise InvalidRequest(f"{path}: tensor {name} has bad data offsets {begin}..{end}")
        tensors[name] = (dtype, data[start + begin:start + end].view(numpy_type).reshape(shape))
    return tensors


def gguf_tensor_name(hf_name: str) -> str | None:
    """'model.layers.3.mlp.up_proj.weight' -> 'blk.3.ffn_up.weight'; None for tensors llama.cpp drops."""
    base, _, suffix = hf_name.rpartition(".")  # suffix: "weight" / "bias"
    if base in TOP_NAMES:
        return f"{TOP_NAMES[base]}.{suffix}"
    parts = base.split(".")
    if len(parts) >= 4 and parts[:2] == ["model", "layers"] and parts[2].isdigit():
        inner = ".".join(parts[3:])
        if inner in LAYER_NAMES:
            return f"blk.{parts[2]}.{LAYER_NAMES[inner]}.{suffix}"
    if base.endswith("rotary_emb.inv_freq"):
        return None  # recomputed from rope_theta
    raise UnsupportedModel(f"tensor {hf_name} has no place in a llama GGUF")


def rope_rows_for_gguf(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k projection rows from Hugging Face's rotary layout to llama.cpp's.

    Hugging Face rotates the pairs (i, i + head_dim/2) of each head; llama.cpp (rope type
    "normal") rotates neighbours (2i, 2i+1).  Interleaving the two halves of each head's rows
    makes both compute the same thing:

        [n_heads * head_dim, n_embd] -> [n_heads, 2, head_dim/2, n_embd]
                                     -> swap the middle axes -> [n_heads, head_dim/2, 2, n_embd]
    """
    rows, cols = w.shape
    half = rows // n_heads // 2
    return w.reshape(n_heads, 2, half, cols).swapaxes(1, 2).reshape(rows, cols)


def convert_safetensors_to_gguf(directory: Path, out: Path, progress: Progress = no_progress) -> Path:
    directory = Path(directory)
    config = _read_json(directory / "config.json")
    architectures = config.get("architectures") or []
    if not any(a in LLAMA_FAMILY for a in architectures):
        raise UnsupportedModel(f"{directory}: architecture {architectures} is not supported; "
                               f"the converter handles {', '.join(LLAMA_FAMILY)}")
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise InvalidRequest(f"{directory}: no .safetensors files")
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    for file in files:
        tensors.update(read_safetensors(file))

    n_embd, n_head = int(config["hidden_size"]), int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    head_dim = int(config.get("head_dim") or n_embd // n_head)
    writer = gguf.GGUFWriter(out, "llama")
    writer.add_name(directory.name)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(n_embd)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(int(config["vocab_size"]))
    if config.get("rope_scaling"):
        raise UnsupportedModel(f"{directory}: rope_scaling {config['rope_scaling']} is not supported by the converter")
    matrix_dtypes = Counter(dtype for dtype, array in tensors.values() if array.ndim == 2)
    main_dtype = matrix_dtypes.most_common(1)[0][0] if matrix_dtypes else "F32"
    writer.add_file_type({"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
                          "BF16": gguf.LlamaFileType.MOSTLY_BF16}[main_dtype])
    _add_tokenizer(writer, directory, int(config["vocab_size"]))

    for index, (hf_name, (dtype, array)) in enumerate(tensors.items()):
        name = gguf_tensor_name(hf_name)
        if name is None:
            continue
        progress({"status": "converting to GGUF", "total": len(tensors), "completed": index, "unit": "tensors"})
        if name.endswith("attn_q.weight"):
            array = rope_rows_for_gguf(array, n_head)
        elif name.endswith("attn_k.weight"):
            array = rope_rows_for_gguf(array, n_head_kv)
        if array.ndim == 1 and dtype != "F32":  # norms: F32, as llama.cpp keeps them
            array, dtype = _to_float32(dtype, array), "F32"
        writer.add_tensor(name, np.ascontiguousarray(array), raw_dtype=SAFETENSORS_DTYPES[dtype][1])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _to_float32(dtype: str, array: np.ndarray) -> np.ndarray:
    if dtype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)  # bf16 is the top half of a float32
    return array.astype(np.float32)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidRequest(f"{path.parent}: no {path.name} (is this a Hugging Face model directory?)") from None
    except ValueError as e:
        raise InvalidRequest(f"{path}: not valid JSON ({e})") from None


def _add_tokenizer(writer: gguf.GGUFWriter, directory: Path, n_vocab: int) -> None:
    """tokenizer.json (byte-level BPE) -> tokens, token types, pre-tokenizer name; the special
    token ids, merges and chat template come from gguf-py's SpecialVocab."""
    document = _read_json(directory / "tokenizer.json")
    model = document.get("model", {})
    if model.get("type") != "BPE":
        raise UnsupportedModel(f"{directory}: tokenizer model {model.get('type')!r} is not supported (byte-level BPE only)")
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [gguf.TokenType.UNUSED] * n_vocab
    for text, token_id in model["vocab"].items():
        if token_id < n_vocab:
            tokens[token_id], types[token_id] = text, gguf.TokenType.NORMAL
    for added in document.get("added_tokens", []):
        if added["id"] < n_vocab:
            tokens[added["id"]] = added["content"]
            types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(document.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(directory, load_merges=True, n_vocab=n_vocab).add_to_gguf(writer)


def pre_tokenizer_name(pre_tokenizer: dict | None) -> str:
    """The ``tokenizer.ggml.pre`` name whose regexes (refllm.tokenizer.bpe) are the ones this
    Hugging Face pre-tokenizer applies: Digits(individual) -> \\p{N}, ByteLevel(use_regex) -> GPT-2's,
    Split(pattern) -> its pattern."""
    from refllm.tokenizer.bpe import GPT2_REGEX, PRE_TOKENIZER_REGEXES

    steps = (pre_tokenizer or {}).get("pretokenizers") if (pre_tokenizer or {}).get("type") == "Sequence" else [pre_tokenizer or {}]
    regexes: list[str] = []
    for step in steps:
        kind = step.get("type")
        if kind == "Digits":
            regexes.append(r"\p{N}" if step.get("individual_digits") else r"\p{N}+")
        elif kind == "ByteLevel":
            if step.get("use_regex", True):
                regexes.append(GPT2_REGEX)
        elif kind == "Split":
            regexes.append(step.get("pattern", {}).get("Regex", ""))
        else:
            raise UnsupportedModel(f"pre-tokenizer step {kind!r} is not supported by the converter")
    for name, known in PRE_TOKENIZER_REGEXES.items():
        if list(known) == regexes:
            return name
    raise UnsupportedModel(f"the tokenizer's pre-tokenizer regexes {regexes} match no pre-tokenizer refllm knows")
