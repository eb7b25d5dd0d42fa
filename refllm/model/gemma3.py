"""Gemma 3 (text) — read it top to bottom.

    token ids
      -> embedding rows * sqrt(d)                                        x [n, d]
      -> n_layers x:
           a  = attention(RoPE(qnorm(Wq . norm(x))), RoPE(knorm(Wk . norm(x))), Wv . norm(x))
           x += post_attention_norm(Wo . a)
           x += post_ffw_norm(W_down . (gelu_tanh(W_gate . norm(x)) * (W_up . norm(x))))
      -> final RMSNorm                                                   [n, d]

Differences from llama, all checked against HF transformers' Gemma3:
  * the embedding is multiplied by sqrt(n_embd);
  * Gemma's RMSNorm multiplies by (1 + w); the GGUF converter already stored
    1 + w, so the plain ``rms_norm`` with the stored weight is right;
  * extra norms after attention and after the FFN, and QK-norm per head;
  * GELU (tanh approximation) gates the FFN instead of SiLU;
  * layers alternate: sliding-window ("local") layers see only the last
    ``sliding_window`` positions and use RoPE base 10000 without scaling;
    every sliding_window_pattern-th layer is global, with ``rope.freq_base``
    and any ``rope.scaling``;
  * NEOX RoPE; queries scaled by 1/sqrt(key_length) unless ``attention.scale`` says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from refllm.gguf import GGUFFile, TensorInfo
from refllm.kernels.reference import Backend
from refllm.model.config import ModelConfig
from refllm.model.kv_cache import KVCache
from refllm.model.rope import rope_frequencies
from refllm.model.weights import matrix, output_head, vector


@dataclass
class Gemma3Layer:
    attn_norm: np.ndarray  # f32[d]
    wq: TensorInfo  # [heads * hd, d]
    wk: TensorInfo  # [kv_heads * hd, d]
    wv: TensorInfo  # [kv_heads * hd_v, d]
    q_norm: np.ndarray  # f32[hd]
    k_norm: np.ndarray  # f32[hd]
    wo: TensorInfo  # [d, heads * hd_v]
    post_attention_norm: np.ndarray  # f32[d]
    ffn_norm: np.ndarray  # f32[d]
    w_gate: TensorInfo  # [n_ff, d]
    w_up: TensorInfo  # [n_ff, d]
    w_down: TensorInfo  # [d, n_ff]
    post_ffw_norm: np.ndarray  # f32[d]


@dataclass
class Gemma3Weights:
    token_embd: TensorInfo  # [n_vocab, d]
    layers: list[Gemma3Layer]
    output_norm: np.ndarray  # f32[d]
    output: TensorInfo  # [n_vocab, d] (token_embd: Gemma ties them)
    inv_freq_global: np.ndarray  # f32[rope_dim / 2]
    mscale_global: float
    inv_freq_local: np.ndarray  # f32[rope_dim / 2], sliding-window layers


def load_layer(gguf: GGUFFile, cfg: ModelConfig, il: int) -> Gemma3Layer:
    d, hd, hd_v = cfg.n_embd, cfg.head_dim, cfg.head_dim_v
    p = f"blk.{il}."
    return Gemma3Layer(
        attn_norm=vector(gguf, p + "attn_norm.weight", d),
        wq=matrix(gguf, p + "attn_q.weight", (cfg.n_heads * hd, d)),
        wk=matrix(gguf, p + "attn_k.weight", (cfg.n_kv_heads * hd, d)),
        wv=matrix(gguf, p + "attn_v.weight", (cfg.n_kv_heads * hd_v, d)),
        q_norm=vector(gguf, p + "attn_q_norm.weight", hd),
        k_norm=vector(gguf, p + "attn_k_norm.weight", hd),
        wo=matrix(gguf, p + "attn_output.weight", (d, cfg.n_heads * hd_v)),
        post_attention_norm=vector(gguf, p + "post_attention_norm.weight", d),
        ffn_norm=vector(gguf, p + "ffn_norm.weight", d),
        w_gate=matrix(gguf, p + "ffn_gate.weight", (cfg.n_ff, d)),
        w_up=matrix(gguf, p + "ffn_up.weight", (cfg.n_ff, d)),
        w_down=matrix(gguf, p + "ffn_down.weight", (d, cfg.n_ff)),
        post_ffw_norm=vector(gguf, p + "post_ffw_norm.weight", d),
    )


def load_weights(gguf: GGUFFile, cfg: ModelConfig) -> Gemma3Weights:
    inv_freq_global, mscale_global = rope_frequencies(cfg.rope_dim, cfg.rope_base, cfg.rope_scaling)
    inv_freq_local, _ = rope_frequencies(cfg.rope_dim, cfg.rope_base_local)  # no scaling on local layers
    return Gemma3Weights(
        token_embd=matrix(gguf, "token_embd.weight", (cfg.n_vocab, cfg.n_embd)),
        layers=[load_layer(gguf, cfg, il) for il in range(cfg.n_layers)],
        output_norm=vector(gguf, "output_norm.weight", cfg.n_embd),
        output=output_head(gguf, cfg.n_vocab, cfg.n_embd),
        inv_freq_global=inv_freq_global,
        mscale_global=mscale_global,
        inv_freq_local=inv_freq_local,
    )


def forward(w: Gemma3Weights, cfg: ModelConfig, ops: Backend, token_ids: np.ndarray, cache: KVCache) -> np.ndarray:
    """token_ids int[n] -> f32[n, d], the final-normed hidden states; appends to ``cache``."""
    n = len(token_ids)
    eps = cfg.rms_norm_eps
    positions = np.arange(cache.n_past, cache.n_past + n)  # [n]
    x = ops.embedding_rows(w.token_embd, token_ids)  # [n] -> [n, d]
    x = x * np.float32(math.sqrt(cfg.n_embd))  # [n, d], Gemma scales the embedding

    for il, layer in enumerate(w.layers):
        sliding = cfg.is_sliding(il)
        inv_freq, mscale = (w.inv_freq_local, 1.0) if sliding else (w.inv_freq_global, w.mscale_global)
        window = cfg.sliding_window if sliding else None

        # ---- attention block
        h = ops.rms_norm(x, layer.attn_norm, eps)  # [n, d]
        q, k, v = ops.linears(h, [layer.wq, layer.wk, layer.wv])  # the three projections of h
        q = q.reshape(n, cfg.n_heads, cfg.head_dim)  # [n, heads, hd]
        k = k.reshape(n, cfg.n_kv_heads, cfg.head_dim)  # [n, kv_heads, hd]
        v = v.reshape(n, cfg.n_kv_heads, cfg.head_dim_v)  # [n, kv_heads, hd_v]
        q = ops.rms_norm(q, layer.q_norm, eps)  # QK-norm, over each head's hd values
        k = ops.rms_norm(k, layer.k_norm, eps)
        q = ops.rope(q, positions, inv_freq, cfg.rope_neox, mscale)  # [n, heads, hd]
        k = ops.rope(k, positions, inv_freq, cfg.rope_neox, mscale)  # [n, kv_heads, hd]
        k_all, v_all = cache.store(il, k, v)  # [n_past + n, kv_heads, hd(_v)]
        att = ops.attention(q, k_all, v_all, positions, cfg.attention_scale, window)  # [n, heads, hd_v]
        att = ops.linear(att.reshape(n, -1), layer.wo)  # [n, heads * hd_v] -> [n, d]
        x = x + ops.rms_norm(att, layer.post_attention_norm, eps)  # [n, d], residual

        # ---- feed-forward block (GELU-gated)
        h = ops.rms_norm(x, layer.ffn_norm, eps)  # [n, d]
        gate, up = ops.linears(h, [layer.w_gate, layer.w_up])  # [n, d] -> [n, n_ff] each
        ffn = ops.linear(ops.gelu_tanh(gate) * up, layer.w_down)  # [n, n_ff] -> [n, d]
        x = x + ops.rms_norm(ffn, layer.post_ffw_norm, eps)  # [n, d], residual

    cache.advance(n)
    return ops.rms_norm(x, w.output_norm, eps)  # [n, d]
