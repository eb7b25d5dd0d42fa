"""Write tiny, deterministic GGUF models for tests: every architecture x every weight type.

    python tools/make_tiny_models.py OUTDIR [--arch llama qwen2 ...] [--types Q8_0 Q4_K ...] [--seed 0]

or, from Python (tests use the ``tiny_model`` fixture in tests/conftest.py):

    write_tiny_model(path, "qwen3", "Q4_K", seed=0) -> Path

Each model is a real, loadable GGUF (llama.cpp accepts it, see
tools/check_tiny_models_llamacpp.py) with complete architecture metadata and a
small *real* tokenizer cut out of the packaged models:

* llama / qwen2 / qwen3: the first 1024 tokens of SmolLM2's GPT-2 byte-level BPE
  (17 special tokens, the 256 byte tokens, then the earliest merges) plus every
  merge whose two parts and result survive, and a ChatML chat template;
* gemma3: a SentencePiece ("llama") vocabulary of 1024 pieces: Gemma's control
  tokens, ``<start_of_turn>``/``<end_of_turn>``, the 256 byte-fallback tokens
  ``<0x00>``..``<0xFF>`` and Gemma's highest-scoring pieces.  No single character
  is a piece, so merges start from characters outside the vocabulary (as
  SentencePiece and llama.cpp allow: "▁" + "t" -> "▁t" although "▁" is no token).

The shapes are tiny but not degenerate: every row length is a multiple of 256 (the
K/IQ super-block size), and qwen3 and gemma3 have head_dim 128 != n_embd / n_head,
as their real models do:

    arch    n_embd n_layer n_head n_head_kv head_dim n_ff  extras
    llama    256     2       4       2        64     512   tied output
    qwen2    256     2       4       2        64     512   q/k/v biases, separate output.weight
    qwen3    256     2       4       2       128     512   q_norm/k_norm, tied output
    gemma3   256     2       4       2       128     512   q/k norms, post-norms, sliding window 32

gemma3 note: llama.cpp (like HF) makes every 6th layer a global-attention layer, so both tiny
layers are sliding-window layers, and those use llama.cpp's fixed local RoPE base 10000:
``gemma3.rope.freq_base`` (1e6, for global layers) has no effect on these models (measured:
identical logits with any freq_base).  The 32-token window is easy to exceed in a test.

Weights: every matrix (token embedding, attention, feed-forward, output) is
stored in the requested type; norms and biases are F32.  For types gguf-py can
quantize (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, TQ1_0, TQ2_0, MXFP4) the
weights are seeded Gaussian noise, quantized.  For the others (K-quants and the
IQ family) they are random *valid blocks*: random bytes whose f16 scale fields
are overwritten with finite, positive scales chosen so the weights have a
sensible size.  The model talks nonsense; it only has to be valid, deterministic
and exercise every code path.  ``--write-digests`` records every file's sha256 in
golden/tiny_models.json; tests regenerate the files and compare, so golden data
made from them can't silently go stale.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import gguf
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

T = GGMLQuantizationType

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # lets the script run from a checkout that is not pip-installed
    sys.path.insert(0, str(REPO))

from refllm.quant.testing import F16_SCALE_OFFSETS  # noqa: E402  (where each block type keeps its scales)

ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3")

# Every type the foundation reads for the matmul weights, in the order of the issue.
WEIGHT_TYPES = (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4",
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "TQ1_0", "TQ2_0",
)  # fmt: skip

N_VOCAB = 1024


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TinyConfig:
    arch: str
    n_embd: int = 256
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 64
    n_ff: int = 512
    n_vocab: int = N_VOCAB
    context_length: int = 2048
    rope_freq_base: float = 10000.0
    rms_norm_eps: float = 1e-5
    tied_output: bool = True  # no output.weight: the output layer reuses token_embd
    qkv_bias: bool = False  # qwen2: attn_q/k/v.bias
    qk_norm: bool = False  # qwen3, gemma3: attn_q_norm / attn_k_norm over head_dim
    post_norms: bool = False  # gemma3: post_attention_norm, post_ffw_norm
    sliding_window: int = 0  # gemma3: local attention window (0 = none)


CONFIGS = {
    "llama": TinyConfig("llama", rope_freq_base=100000.0),
    "qwen2": TinyConfig("qwen2", rope_freq_base=1000000.0, rms_norm_eps=1e-6, tied_output=False, qkv_bias=True),
    "qwen3": TinyConfig("qwen3", head_dim=128, rope_freq_base=1000000.0, rms_norm_eps=1e-6, qk_norm=True),
    "gemma3": TinyConfig(
        "gemma3", head_dim=128, rope_freq_base=1000000.0, rms_norm_eps=1e-6, qk_norm=True, post_norms=True, sliding_window=32
    ),
}

# general.file_type written for each weight type (what `ollama show` calls the quantization).
FILE_TYPES = {
    "F32": LlamaFileType.ALL_F32, "F16": LlamaFileType.MOSTLY_F16, "BF16": LlamaFileType.MOSTLY_BF16,
    "Q4_0": LlamaFileType.MOSTLY_Q4_0, "Q4_1": LlamaFileType.MOSTLY_Q4_1, "Q5_0": LlamaFileType.MOSTLY_Q5_0,
    "Q5_1": LlamaFileType.MOSTLY_Q5_1, "Q8_0": LlamaFileType.MOSTLY_Q8_0, "Q2_K": LlamaFileType.MOSTLY_Q2_K,
    "Q3_K": LlamaFileType.MOSTLY_Q3_K_M, "Q4_K": LlamaFileType.MOSTLY_Q4_K_M, "Q5_K": LlamaFileType.MOSTLY_Q5_K_M,
    "Q6_K": LlamaFileType.MOSTLY_Q6_K, "IQ4_NL": LlamaFileType.MOSTLY_IQ4_NL, "IQ4_XS": LlamaFileType.MOSTLY_IQ4_XS,
    "MXFP4": LlamaFileType.MOSTLY_MXFP4_MOE, "IQ1_S": LlamaFileType.MOSTLY_IQ1_S, "IQ1_M": LlamaFileType.MOSTLY_IQ1_M,
    "IQ2_XXS": LlamaFileType.MOSTLY_IQ2_XXS, "IQ2_XS": LlamaFileType.MOSTLY_IQ2_XS, "IQ2_S": LlamaFileType.MOSTLY_IQ2_S,
    "IQ3_XXS": LlamaFileType.MOSTLY_IQ3_XXS, "IQ3_S": LlamaFileType.MOSTLY_IQ3_S,
    "TQ1_0": LlamaFileType.MOSTLY_TQ1_0, "TQ2_0": LlamaFileType.MOSTLY_TQ2_0,
}  # fmt: skip

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# --------------------------------------------------------------------------- tokenizers


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    token_types: list[int]  # gguf.TokenType: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
    scores: list[float] | None = None  # SentencePiece only
    merges: list[str] | None = None  # BPE only


@cache
def bpe_vocab(n_vocab: int = N_VOCAB) -> Vocab:
    """SmolLM2's first ``n_vocab`` tokens and the merges that stay inside them."""
    from refllm.gguf import read
    from refllm.packaged_models import smollm2_path

    meta = read(smollm2_path()).metadata
    tokens = meta["tokenizer.ggml.tokens"][:n_vocab]
    token_types = [int(t) for t in meta["tokenizer.ggml.token_type"][:n_vocab]]
    kept = set(tokens)
    merges = []
    for merge in meta["tokenizer.ggml.merges"]:
        left, right = merge.split(" ", 1)
        if left in kept and right in kept and left + right in kept:
            merges.append(merge)
    return Vocab("gpt2", tokens, token_types, merges=merges)


@cache
def spm_vocab(n_vocab: int = N_VOCAB) -> Vocab:
    """A small Gemma-style SentencePiece vocabulary: controls, turn markers, bytes, top pieces."""
    from refllm.gguf import read
    from refllm.packaged_models import gemma3_path

    meta = read(gemma3_path()).metadata
    gemma_tokens = meta["tokenizer.ggml.tokens"]
    gemma_types = np.asarray(meta["tokenizer.ggml.token_type"])
    gemma_scores = np.asarray(meta["tokenizer.ggml.scores"])

    control = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
    tokens = list(control)
    token_types = [int(gguf.TokenType.CONTROL)] * len(control)
    scores = [-1000.0] * len(control)
    tokens += [f"<0x{b:02X}>" for b in range(256)]  # byte fallback for anything unknown
    token_types += [int(gguf.TokenType.BYTE)] * 256
    scores += [0.0] * 256
    # Gemma's normal pieces, best score first (Gemma stores them that way, from id 494 on).
    normal_ids = np.flatnonzero(gemma_types == gguf.TokenType.NORMAL)
    normal_ids = normal_ids[np.argsort(-gemma_scores[normal_ids], kind="stable")]
    for i in normal_ids[: n_vocab - len(tokens)]:
        tokens.append(gemma_tokens[int(i)])
        token_types.append(int(gguf.TokenType.NORMAL))
        scores.append(float(gemma_scores[i]))
    return Vocab("llama", tokens, token_types, scores=scores)


def add_tokenizer(writer: gguf.GGUFWriter, arch: str, n_vocab: int = N_VOCAB) -> None:
    if arch == "gemma3":
        vocab = spm_vocab(n_vocab)
        writer.add_tokenizer_model(vocab.model)
        writer.add_tokenizer_pre("default")
        writer.add_token_list(vocab.tokens)
        writer.add_token_scores(vocab.scores)
        writer.add_token_types(vocab.token_types)
        writer.add_bos_token_id(vocab.tokens.index("<bos>"))
        writer.add_eos_token_id(vocab.tokens.index("<eos>"))
        writer.add_unk_token_id(vocab.tokens.index("<unk>"))
        writer.add_pad_token_id(vocab.tokens.index("<pad>"))
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(False)
        return  # like the real Gemma 3 GGUF: no chat template
    vocab = bpe_vocab(n_vocab)
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre("smollm" if arch == "llama" else "qwen2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    endoftext, im_start, im_end = (vocab.tokens.index(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    if arch == "llama":  # SmolLM2's choices
        writer.add_bos_token_id(im_start)
        writer.add_eos_token_id(im_end)
        writer.add_unk_token_id(endoftext)
        writer.add_pad_token_id(im_end)
    else:  # Qwen's choices
        writer.add_bos_token_id(endoftext)
        writer.add_eos_token_id(im_end)
        writer.add_pad_token_id(endoftext)
    writer.add_add_bos_token(False)
    writer.add_add_space_prefix(False)
    writer.add_chat_template(CHATML_TEMPLATE)


# --------------------------------------------------------------------------- weights

# Types gguf-py can quantize: we quantize Gaussian noise.
QUANTIZABLE = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0", "MXFP4"}

# Types we fill with random valid blocks.  Where each block keeps its f16 scale fields comes
# from refllm.quant.testing (e.g. Q6_K = ql[128] qh[64] scales[16] d:f16, so d is at byte 208).
# The K-quants with a minimum (x = d*sc*q - dmin*m) get dmin = mean(q) * d, which keeps the
# random weights centred on zero.
DMIN_OVER_D = {"Q2_K": 1.5, "Q4_K": 7.5, "Q5_K": 15.5}  # mean of q in 0..3, 0..15, 0..31
IQ1_M_SCALES_OFFSET = 48


def set_block_scales(blocks: np.ndarray, qtype: str, scales: np.ndarray) -> None:
    """Write one f16 scale per block into ``blocks`` ([n_blocks, type_size] uint8), in place."""
    if qtype == "IQ1_M":  # qs[32] qh[16] scales:u16[4]: its f16 scale is the top nibble of each u16
        bits = scales.astype(np.float16).view(np.uint16)  # [n_blocks]
        sc = blocks[:, IQ1_M_SCALES_OFFSET : IQ1_M_SCALES_OFFSET + 8].copy().view("<u2")  # [n_blocks, 4]
        for i in range(4):
            sc[:, i] = (sc[:, i] & 0x0FFF) | (((bits >> (4 * i)) & 0xF) << 12)
        blocks[:, IQ1_M_SCALES_OFFSET : IQ1_M_SCALES_OFFSET + 8] = sc.view(np.uint8)
        return
    d_offset, *dmin_offset = F16_SCALE_OFFSETS[T[qtype]]
    fields = [(d_offset, scales)] + [(o, scales * DMIN_OVER_D[qtype]) for o in dmin_offset]
    for offset, values in fields:
        blocks[:, offset : offset + 2] = values.astype(np.float16).view(np.uint8).reshape(-1, 2)  # [n_blocks, 2]


@cache
def unit_scale_rms(qtype: str) -> float:
    """RMS of the weights random blocks decode to when every scale is 1 (measured with gguf-py)."""
    block_size, type_size = GGML_QUANT_SIZES[T[qtype]]
    rng = np.random.default_rng(12345)
    blocks = rng.integers(0, 256, size=(256, type_size), dtype=np.uint8)
    set_block_scales(blocks, qtype, np.ones(256))
    values = gguf.quants.dequantize(blocks, T[qtype])
    return float(np.sqrt(np.mean(values.astype(np.float64) ** 2)))


def random_blocks(rng: np.random.Generator, shape: tuple[int, int], qtype: str, rms: float) -> np.ndarray:
    """[rows, cols] weights as random valid blocks of ``qtype`` with weight RMS about ``rms``."""
    block_size, type_size = GGML_QUANT_SIZES[T[qtype]]
    rows, cols = shape
    n_blocks = rows * cols // block_size
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)  # [n_blocks, type_size]
    scales = rms / unit_scale_rms(qtype) * rng.uniform(0.5, 1.5, size=n_blocks)  # a little spread per block
    set_block_scales(blocks, qtype, scales)
    return blocks.reshape(rows, cols // block_size * type_size)  # [rows, bytes per row]


def weight(rng: np.random.Generator, shape: tuple[int, int], qtype: str) -> np.ndarray:
    """A [rows, cols] matrix (cols = fan-in) encoded as ``qtype``: floats, or uint8 rows of blocks."""
    rms = 1.0 / np.sqrt(shape[1])  # keeps activations O(1) through each matmul
    if qtype in QUANTIZABLE:
        values = (rng.standard_normal(shape) * rms).astype(np.float32)  # [rows, cols]
        return values if qtype == "F32" else gguf.quants.quantize(values, T[qtype])
    return random_blocks(rng, shape, qtype, rms)


def tensor_plan(cfg: TinyConfig) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, NumPy shape, kind) for every tensor; kind is "matrix", "norm" or "bias"."""
    q_dim, kv_dim = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
    plan = [("token_embd.weight", (cfg.n_vocab, cfg.n_embd), "matrix")]
    for i in range(cfg.n_layer):
        b = f"blk.{i}"
        plan.append((f"{b}.attn_norm.weight", (cfg.n_embd,), "norm"))
        plan.append((f"{b}.attn_q.weight", (q_dim, cfg.n_embd), "matrix"))
        plan.append((f"{b}.attn_k.weight", (kv_dim, cfg.n_embd), "matrix"))
        plan.append((f"{b}.attn_v.weight", (kv_dim, cfg.n_embd), "matrix"))
        if cfg.qkv_bias:
            plan.append((f"{b}.attn_q.bias", (q_dim,), "bias"))
            plan.append((f"{b}.attn_k.bias", (kv_dim,), "bias"))
            plan.append((f"{b}.attn_v.bias", (kv_dim,), "bias"))
        if cfg.qk_norm:
            plan.append((f"{b}.attn_q_norm.weight", (cfg.head_dim,), "norm"))
            plan.append((f"{b}.attn_k_norm.weight", (cfg.head_dim,), "norm"))
        plan.append((f"{b}.attn_output.weight", (cfg.n_embd, q_dim), "matrix"))
        if cfg.post_norms:
            plan.append((f"{b}.post_attention_norm.weight", (cfg.n_embd,), "norm"))
        plan.append((f"{b}.ffn_norm.weight", (cfg.n_embd,), "norm"))
        plan.append((f"{b}.ffn_gate.weight", (cfg.n_ff, cfg.n_embd), "matrix"))
        plan.append((f"{b}.ffn_up.weight", (cfg.n_ff, cfg.n_embd), "matrix"))
        plan.append((f"{b}.ffn_down.weight", (cfg.n_embd, cfg.n_ff), "matrix"))
        if cfg.post_norms:
            plan.append((f"{b}.post_ffw_norm.weight", (cfg.n_embd,), "norm"))
    plan.append(("output_norm.weight", (cfg.n_embd,), "norm"))
    if not cfg.tied_output:
        plan.append(("output.weight", (cfg.n_vocab, cfg.n_embd), "matrix"))
    return plan


# --------------------------------------------------------------------------- the file


def add_hyperparameters(writer: gguf.GGUFWriter, cfg: TinyConfig, qtype: str) -> None:
    a = cfg.arch
    writer.add_name(f"tiny-{a}-{qtype}")
    writer.add_type("model")
    writer.add_license("apache-2.0")
    writer.add_file_type(int(FILE_TYPES[qtype]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_uint32(f"{a}.context_length", cfg.context_length)
    writer.add_uint32(f"{a}.embedding_length", cfg.n_embd)
    writer.add_uint32(f"{a}.block_count", cfg.n_layer)
    writer.add_uint32(f"{a}.feed_forward_length", cfg.n_ff)
    writer.add_uint32(f"{a}.attention.head_count", cfg.n_head)
    writer.add_uint32(f"{a}.attention.head_count_kv", cfg.n_head_kv)
    writer.add_float32(f"{a}.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps)
    writer.add_float32(f"{a}.rope.freq_base", cfg.rope_freq_base)
    writer.add_uint32(f"{a}.rope.dimension_count", cfg.head_dim)
    if cfg.head_dim * cfg.n_head != cfg.n_embd or a in ("qwen3", "gemma3"):
        writer.add_uint32(f"{a}.attention.key_length", cfg.head_dim)
        writer.add_uint32(f"{a}.attention.value_length", cfg.head_dim)
    if cfg.sliding_window:
        writer.add_uint32(f"{a}.attention.sliding_window", cfg.sliding_window)
    writer.add_uint32(f"{a}.vocab_size", cfg.n_vocab)


def write_tiny_model(path: str | Path, arch: str, qtype: str, seed: int = 0, config: TinyConfig | None = None) -> Path:
    """Write the tiny ``arch`` model with its matrices in ``qtype``; same seed, same bytes.

    ``config`` replaces the architecture's default shapes (e.g. a still smaller model
    for the CUDA simulator); its ``arch`` must be ``arch``.
    """
    if arch not in CONFIGS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    qtype = str(getattr(qtype, "name", qtype)).upper()
    if qtype not in FILE_TYPES:
        raise ValueError(f"unsupported weight type {qtype!r}; choose from {', '.join(WEIGHT_TYPES)}")
    cfg = config or CONFIGS[arch]
    if cfg.arch != arch:
        raise ValueError(f"config is for {cfg.arch!r}, not {arch!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, ARCHITECTURES.index(arch), WEIGHT_TYPES.index(qtype)])

    writer = gguf.GGUFWriter(path, arch)
    add_hyperparameters(writer, cfg, qtype)
    add_tokenizer(writer, arch, cfg.n_vocab)
    for name, shape, kind in tensor_plan(cfg):
        if kind == "matrix":
            data = weight(rng, shape, qtype)
            raw_dtype = None if qtype == "F32" else T[qtype]
            writer.add_tensor(name, data, raw_dtype=raw_dtype)  # uint8 rows: gguf-py derives the shape
        elif kind == "norm":  # RMSNorm gains near 1 (Gemma's GGUFs store 1 + w too)
            writer.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32))
        else:  # bias
            writer.add_tensor(name, (0.1 * rng.standard_normal(shape)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_model_filename(arch: str, qtype: str, seed: int = 0) -> str:
    return f"tiny-{arch}-{qtype}" + (f"-s{seed}" if seed else "") + ".gguf"


GOLDEN_DIGESTS = REPO / "golden" / "tiny_models.json"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--arch", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    parser.add_argument("--types", nargs="+", default=list(WEIGHT_TYPES), choices=WEIGHT_TYPES, metavar="TYPE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-digests", action="store_true",
                        help=f"record every file's sha256 in {GOLDEN_DIGESTS.relative_to(REPO)} (tests check them)")
    args = parser.parse_args(argv)
    digests = {}
    for arch in args.arch:
        for qtype in args.types:
            path = write_tiny_model(args.outdir / tiny_model_filename(arch, qtype, args.seed), arch, qtype, args.seed)
            digests[path.name] = sha256_file(path)
            print(f"{path}  {path.stat().st_size / 1e6:.2f} MB  sha256 {digests[path.name][:16]}")
    if args.write_digests:
        record = {
            "command": "python tools/make_tiny_models.py OUTDIR --write-digests",
            "seed": args.seed,
            "versions": {"numpy": np.__version__, "gguf": importlib.metadata.version("gguf")},
            "sha256": digests,
        }
        GOLDEN_DIGESTS.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {GOLDEN_DIGESTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
