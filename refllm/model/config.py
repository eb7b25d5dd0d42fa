"""``ModelConfig``: a transformer's hyper-parameters, read from GGUF metadata only.

GGUF keys are prefixed by the architecture name, e.g. ``llama.block_count`` or
``gemma3.attention.sliding_window``.  A key this runtime needs but the file lacks,
or an architecture it has no forward pass for, is an ``UnsupportedModel`` error
that names what is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from refllm.errors import UnsupportedModel
from refllm.gguf import GGUFFile

# Architectures with a forward pass (refllm/model/<family>.py) and whether their
# GGUF Q/K weights use NEOX-style RoPE (pairs i, i + d/2) or the "normal"
# interleaved pairs (2i, 2i+1) that the llama converter permutes Q/K into.
SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3")
NEOX_ROPE = {"llama": False, "qwen2": True, "qwen3": True, "gemma3": True}

# Gemma 3 constants that llama.cpp hard-codes when the GGUF does not say otherwise.
GEMMA3_LOCAL_ROPE_BASE = 10_000.0
GEMMA3_SLIDING_WINDOW_PATTERN = 6  # 5 local layers, then 1 global


@dataclass(frozen=True)
class RopeScaling:
    """``{arch}.rope.scaling.*``: how RoPE frequencies are stretched for long contexts."""

    type: str = "none"  # "none", "linear", "yarn" (llama3 scaling arrives as a rope_freqs tensor)
    factor: float = 1.0  # context extension factor (frequencies are divided by it)
    original_context_length: int = 0  # yarn: the context the model was trained with
    attn_factor: float = 1.0  # yarn: extra multiplier of cos/sin
    beta_fast: float = 32.0  # yarn: ramp bounds, in rotations over the original context
    beta_slow: float = 1.0


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    n_layers: int  # block_count
    n_embd: int  # embedding_length, the model width d
    n_ff: int  # feed_forward_length, the FFN hidden width
    n_heads: int  # attention.head_count
    n_kv_heads: int  # attention.head_count_kv (GQA when < n_heads)
    head_dim: int  # attention.key_length (default n_embd / n_heads)
    head_dim_v: int  # attention.value_length (default head_dim)
    n_vocab: int  # number of tokens in the vocabulary
    n_ctx_train: int  # context_length
    rms_norm_eps: float  # attention.layer_norm_rms_epsilon
    rope_base: float  # rope.freq_base (global layers)
    rope_dim: int  # rope.dimension_count: how many dims of each head rotate
    rope_neox: bool  # pairing of rotated dims, see refllm.kernels.reference.rope
    rope_scaling: RopeScaling
    attention_scale: float  # multiplies q.k: attention.scale, else 1/sqrt(head_dim)
    # Gemma 3: sliding-window ("local") layers
    sliding_window: int | None = None  # attention.sliding_window
    sliding_layers: tuple[bool, ...] = ()  # per layer: True = sliding window, local rope base
    rope_base_local: float | None = None  # rope base of the sliding-window layers

    def is_sliding(self, layer: int) -> bool:
        return bool(self.sliding_layers) and self.sliding_layers[layer]


def _key(gguf: GGUFFile, arch: str, name: str, default=None, required: bool = True):
    """``{arch}.{name}`` from the metadata; missing and required -> UnsupportedModel."""
    value = gguf.metadata.get(f"{arch}.{name}", default)
    if value is None and required:
        raise UnsupportedModel(f"{gguf.path.name}: GGUF metadata lacks '{arch}.{name}', needed for the {arch} forward pass")
    return value


def _positive_int(gguf: GGUFFile, arch: str, name: str, default=None) -> int:
    value = _key(gguf, arch, name, default)
    if isinstance(value, np.ndarray):  # per-layer arrays (head_count_kv): must be uniform here
        if value.size == 0 or not np.all(value == value.flat[0]):
            raise UnsupportedModel(f"{gguf.path.name}: per-layer '{arch}.{name}' values differ; not supported")
        value = value.flat[0]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise UnsupportedModel(f"{gguf.path.name}: '{arch}.{name}' must be a positive integer, got {value!r}")
    return int(value)


def _positive_float(gguf: GGUFFile, arch: str, name: str, default=None) -> float:
    value = _key(gguf, arch, name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0:
        raise UnsupportedModel(f"{gguf.path.name}: '{arch}.{name}' must be a positive number, got {value!r}")
    return float(value)


def _vocab_size(gguf: GGUFFile, arch: str) -> int:
    """The token count: ``{arch}.vocab_size``, else the tokenizer's token list, else the embedding rows."""
    size = gguf.metadata.get(f"{arch}.vocab_size")
    if size is None and "tokenizer.ggml.tokens" in gguf.metadata:
        size = len(gguf.metadata["tokenizer.ggml.tokens"])
    if size is None and "token_embd.weight" in gguf.tensors:
        size = gguf.tensors["token_embd.weight"].shape[0]
    if size is None:
        raise UnsupportedModel(f"{gguf.path.name}: no vocabulary size ('{arch}.vocab_size' or tokenizer.ggml.tokens)")
    return int(size)


def _rope_scaling(gguf: GGUFFile, arch: str) -> RopeScaling:
    kind = str(gguf.metadata.get(f"{arch}.rope.scaling.type", "none"))
    factor = gguf.metadata.get(f"{arch}.rope.scaling.factor")
    if factor is None and f"{arch}.rope.scale_linear" in gguf.metadata:  # older GGUFs
        kind, factor = "linear", gguf.metadata[f"{arch}.rope.scale_linear"]
    if kind == "none" or factor is None or float(factor) in (0.0, 1.0):
        return RopeScaling()
    if kind not in ("linear", "yarn"):
        raise UnsupportedModel(f"{gguf.path.name}: rope scaling type '{kind}' is not supported (linear, yarn are)")
    return RopeScaling(
        type=kind,
        factor=float(factor),
        original_context_length=int(gguf.metadata.get(f"{arch}.rope.scaling.original_context_length", 0) or 0),
        attn_factor=float(gguf.metadata.get(f"{arch}.rope.scaling.attn_factor", 1.0) or 1.0),
        beta_fast=float(gguf.metadata.get(f"{arch}.rope.scaling.yarn_beta_fast", 32.0)),
        beta_slow=float(gguf.metadata.get(f"{arch}.rope.scaling.yarn_beta_slow", 1.0)),
    )


def _sliding_layers(gguf: GGUFFile, arch: str, n_layers: int) -> tuple[bool, ...]:
    """Gemma 3's local/global layer pattern.

    ``{arch}.attention.sliding_window_pattern`` may be a period P (layer il is global
    iff (il + 1) % P == 0) or a per-layer bool array (True = sliding).  Absent, llama.cpp
    uses P = 6: five sliding-window layers, then one global layer.
    """
    pattern = gguf.metadata.get(f"{arch}.attention.sliding_window_pattern", GEMMA3_SLIDING_WINDOW_PATTERN)
    if isinstance(pattern, np.ndarray):
        if pattern.shape != (n_layers,):
            raise UnsupportedModel(f"{gguf.path.name}: sliding_window_pattern has {pattern.size} entries for {n_layers} layers")
        return tuple(bool(v) for v in pattern)
    period = int(pattern)
    if period <= 0:
        return tuple(False for _ in range(n_layers))
    return tuple((il + 1) % period != 0 for il in range(n_layers))


def config_from_gguf(gguf: GGUFFile) -> ModelConfig:
    """Fill a ``ModelConfig`` from the file's metadata (raises UnsupportedModel)."""
    arch = gguf.metadata.get("general.architecture")
    if arch is None:
        raise UnsupportedModel(f"{gguf.path.name}: GGUF metadata lacks 'general.architecture'")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModel(
            f"{gguf.path.name}: architecture '{arch}' is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )

    n_embd = _positive_int(gguf, arch, "embedding_length")
    n_heads = _positive_int(gguf, arch, "attention.head_count")
    n_kv_heads = _positive_int(gguf, arch, "attention.head_count_kv", default=n_heads)
    if n_heads % n_kv_heads != 0:
        raise UnsupportedModel(f"{gguf.path.name}: {n_heads} query heads can't share {n_kv_heads} key/value heads evenly")
    head_dim = _positive_int(gguf, arch, "attention.key_length", default=n_embd // n_heads)
    head_dim_v = _positive_int(gguf, arch, "attention.value_length", default=head_dim)
    rope_dim = _positive_int(gguf, arch, "rope.dimension_count", default=head_dim)
    if rope_dim > head_dim or rope_dim % 2:
        raise UnsupportedModel(f"{gguf.path.name}: rope.dimension_count {rope_dim} doesn't fit head dim {head_dim}")
    attention_scale = gguf.metadata.get(f"{arch}.attention.scale")
    n_layers = _positive_int(gguf, arch, "block_count")

    sliding = {}
    if arch == "gemma3":
        sliding = dict(
            sliding_window=_positive_int(gguf, arch, "attention.sliding_window"),
            sliding_layers=_sliding_layers(gguf, arch, n_layers),
            rope_base_local=GEMMA3_LOCAL_ROPE_BASE,
        )

    return ModelConfig(
        architecture=arch,
        n_layers=n_layers,
        n_embd=n_embd,
        n_ff=_positive_int(gguf, arch, "feed_forward_length"),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        head_dim_v=head_dim_v,
        n_vocab=_vocab_size(gguf, arch),
        n_ctx_train=_positive_int(gguf, arch, "context_length"),
        rms_norm_eps=_positive_float(gguf, arch, "attention.layer_norm_rms_epsilon"),
        rope_base=_positive_float(gguf, arch, "rope.freq_base", default=10_000.0),
        rope_dim=rope_dim,
        rope_neox=NEOX_ROPE[arch],
        rope_scaling=_rope_scaling(gguf, arch),
        attention_scale=float(attention_scale) if attention_scale else 1.0 / math.sqrt(head_dim),
        **sliding,
    )
