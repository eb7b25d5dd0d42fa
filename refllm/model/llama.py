"""The llama family: Llama 2/3, Mistral, TinyLlama, SmolLM2 — read it top to bottom.

    token ids
      -> embedding rows                                         x [n, d]
      -> n_layers x:
           x += Wo . attention(RoPE(Wq . norm(x)), RoPE(Wk . norm(x)), Wv . norm(x))
           x += W_down . (silu(W_gate . norm(x)) * (W_up . norm(x)))      (SwiGLU)
      -> final RMSNorm                                          [n, d]
    (the output head, shared by every family, is in refllm/model/transformer.py)

RoPE: llama-arch GGUFs use the "normal" pairing of adjacent dims (the converter
permuted HF's Q/K rows into it).  Grouped-query attention: n_kv_heads <= n_heads.
Llama 3 frequency scaling comes as a ``rope_freqs.weight`` tensor; linear/yarn
scaling from ``rope.scaling.*`` (see refllm/model/rope.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refllm.gguf import GGUFFile, TensorInfo
from refllm.kernels.reference import Backend
from refllm.model.config import ModelConfig
from refllm.model.kv_cache import KVCache
from refllm.model.rope import rope_frequencies
from refllm.model.weights import matrix, optional_vector, output_head, vector


@dataclass
class LlamaLayer:
    attn_norm: np.ndarray  # f32[d]
    wq: TensorInfo  # [heads * hd, d]
    wk: TensorInfo  # [kv_heads * hd, d]
    wv: TensorInfo  # [kv_heads * hd_v, d]
    wo: TensorInfo  # [d, heads * hd_v]
    ffn_norm: np.ndarray  # f32[d]
    w_gate: TensorInfo  # [n_ff, d]
    w_up: TensorInfo  # [n_ff, d]
    w_down: TensorInfo  # [d, n_ff]
    # Qwen additions (None for llama): attention biases (qwen2), QK-norm (qwen3)
    bq: np.ndarray | None = None  # f32[heads * hd]
    bk: np.ndarray | None = None  # f32[kv_heads * hd]
    bv: np.ndarray | None = None  # f32[kv_heads * hd_v]
    q_norm: np.ndarray | None = None  # f32[hd]
    k_norm: np.ndarray | None = None  # f32[hd]


@dataclass
class LlamaWeights:
    token_embd: TensorInfo  # [n_vocab, d]
    layers: list[LlamaLayer]
    output_norm: np.ndarray  # f32[d]
    output: TensorInfo  # [n_vocab, d] (token_embd when tied)
    inv_freq: np.ndarray  # f32[rope_dim / 2], see refllm/model/rope.py
    rope_mscale: float


def load_layer(gguf: GGUFFile, cfg: ModelConfig, il: int) -> LlamaLayer:
    d, hd, hd_v = cfg.n_embd, cfg.head_dim, cfg.head_dim_v
    q_rows, kv_rows, v_rows = cfg.n_heads * hd, cfg.n_kv_heads * hd, cfg.n_kv_heads * hd_v
    p = f"blk.{il}."
    return LlamaLayer(
        attn_norm=vector(gguf, p + "attn_norm.weight", d),
        wq=matrix(gguf, p + "attn_q.weight", (q_rows, d)),
        wk=matrix(gguf, p + "attn_k.weight", (kv_rows, d)),
        wv=matrix(gguf, p + "attn_v.weight", (v_rows, d)),
        wo=matrix(gguf, p + "attn_output.weight", (d, cfg.n_heads * hd_v)),
        ffn_norm=vector(gguf, p + "ffn_norm.weight", d),
        w_gate=matrix(gguf, p + "ffn_gate.weight", (cfg.n_ff, d)),
        w_up=matrix(gguf, p + "ffn_up.weight", (cfg.n_ff, d)),
        w_down=matrix(gguf, p + "ffn_down.weight", (d, cfg.n_ff)),
        bq=optional_vector(gguf, p + "attn_q.bias", q_rows),
        bk=optional_vector(gguf, p + "attn_k.bias", kv_rows),
        bv=optional_vector(gguf, p + "attn_v.bias", v_rows),
        q_norm=optional_vector(gguf, p + "attn_q_norm.weight", hd),
        k_norm=optional_vector(gguf, p + "attn_k_norm.weight", hd),
    )


def load_weights(gguf: GGUFFile, cfg: ModelConfig) -> LlamaWeights:
    freq_factors = optional_vector(gguf, "rope_freqs.weight", cfg.rope_dim // 2)  # llama 3 scaling
    inv_freq, mscale = rope_frequencies(cfg.rope_dim, cfg.rope_base, cfg.rope_scaling, freq_factors)
    return LlamaWeights(
        token_embd=matrix(gguf, "token_embd.weight", (cfg.n_vocab, cfg.n_embd)),
        layers=[load_layer(gguf, cfg, il) for il in range(cfg.n_layers)],
        output_norm=vector(gguf, "output_norm.weight", cfg.n_embd),
        output=output_head(gguf, cfg.n_vocab, cfg.n_embd),
        inv_freq=inv_freq,
        rope_mscale=mscale,
    )


def feed_forward(ops: Backend, layer: LlamaLayer, h: np.ndarray) -> np.ndarray:
    """SwiGLU: W_down . (silu(W_gate . h) * (W_up . h)).   [n, d] -> [n, d]"""
    gate, up = ops.linears(h, [layer.w_gate, layer.w_up])  # [n, d] -> [n, n_ff] each
    return ops.linear(ops.silu(gate) * up, layer.w_down)  # [n, n_ff] -> [n, d]


def forward(w: LlamaWeights, cfg: ModelConfig, ops: Backend, token_ids: np.ndarray, cache: KVCache) -> np.ndarray:
    """Run n new tokens through the model, appending their keys/values to ``cache``.

    token_ids: int[n] (the whole prompt in prefill, one token in decode)
    returns f32[n, d]: the final-normed hidden state of each new token
    """
    n = len(token_ids)
    positions = np.arange(cache.n_past, cache.n_past + n)  # [n], absolute positions
    x = ops.embedding_rows(w.token_embd, token_ids)  # [n] -> [n, d]

    for il, layer in enumerate(w.layers):
        # ---- attention block
        h = ops.rms_norm(x, layer.attn_norm, cfg.rms_norm_eps)  # [n, d]
        q, k, v = ops.linears(h, [layer.wq, layer.wk, layer.wv])  # the three projections of h
        q = q.reshape(n, cfg.n_heads, cfg.head_dim)  # [n, heads, hd]
        k = k.reshape(n, cfg.n_kv_heads, cfg.head_dim)  # [n, kv_heads, hd]
        v = v.reshape(n, cfg.n_kv_heads, cfg.head_dim_v)  # [n, kv_heads, hd_v]
        q = ops.rope(q, positions, w.inv_freq, cfg.rope_neox, w.rope_mscale)  # rotate by position
        k = ops.rope(k, positions, w.inv_freq, cfg.rope_neox, w.rope_mscale)
        k_all, v_all = cache.store(il, k, v)  # [n_past + n, kv_heads, hd(_v)]
        att = ops.attention(q, k_all, v_all, positions, cfg.attention_scale)  # [n, heads, hd_v]
        x = x + ops.linear(att.reshape(n, -1), layer.wo)  # [n, heads * hd_v] -> [n, d], residual

        # ---- feed-forward block
        h = ops.rms_norm(x, layer.ffn_norm, cfg.rms_norm_eps)  # [n, d]
        x = x + feed_forward(ops, layer, h)  # [n, d], residual

    cache.advance(n)
    return ops.rms_norm(x, w.output_norm, cfg.rms_norm_eps)  # [n, d]
