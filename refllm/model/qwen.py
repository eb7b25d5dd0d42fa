"""The Qwen family: Qwen2 / Qwen2.5 and Qwen3 — the llama block with two changes.

    qwen2:  the Q, K and V projections have biases          q = Wq . h + bq
    qwen3:  no biases, but QK-norm: an RMSNorm over each head of q and k
            (weights of size head_dim) before RoPE

Both use NEOX RoPE (dim i pairs with dim i + rope_dim/2).  Weights, SwiGLU
feed-forward and the cache are the llama family's (refllm/model/llama.py).
"""

from __future__ import annotations

import numpy as np

from refllm.errors import UnsupportedModel
from refllm.gguf import GGUFFile
from refllm.kernels.reference import Backend
from refllm.model.config import ModelConfig
from refllm.model.kv_cache import KVCache
from refllm.model.llama import LlamaWeights, feed_forward
from refllm.model.llama import load_weights as load_llama_weights


def load_weights(gguf: GGUFFile, cfg: ModelConfig) -> LlamaWeights:
    w = load_llama_weights(gguf, cfg)
    for il, layer in enumerate(w.layers):
        if cfg.architecture == "qwen2" and (layer.bq is None or layer.bk is None or layer.bv is None):
            raise UnsupportedModel(f"{gguf.path.name}: qwen2 layer {il} lacks attn_q/k/v.bias")
        if cfg.architecture == "qwen3" and (layer.q_norm is None or layer.k_norm is None):
            raise UnsupportedModel(f"{gguf.path.name}: qwen3 layer {il} lacks attn_q_norm/attn_k_norm")
    return w


def forward(w: LlamaWeights, cfg: ModelConfig, ops: Backend, token_ids: np.ndarray, cache: KVCache) -> np.ndarray:
    """token_ids int[n] -> f32[n, d], the final-normed hidden states; appends to ``cache``."""
    n = len(token_ids)
    positions = np.arange(cache.n_past, cache.n_past + n)  # [n]
    x = ops.embedding_rows(w.token_embd, token_ids)  # [n] -> [n, d]

    for il, layer in enumerate(w.layers):
        # ---- attention block
        h = ops.rms_norm(x, layer.attn_norm, cfg.rms_norm_eps)  # [n, d]
        q, k, v = ops.linears(h, [layer.wq, layer.wk, layer.wv])  # [n, heads * hd], [n, kv_heads * hd], [n, kv_heads * hd_v]
        if layer.bq is not None:  # qwen2: projection biases
            q, k, v = q + layer.bq, k + layer.bk, v + layer.bv
        q = q.reshape(n, cfg.n_heads, cfg.head_dim)  # [n, heads, hd]
        k = k.reshape(n, cfg.n_kv_heads, cfg.head_dim)  # [n, kv_heads, hd]
        v = v.reshape(n, cfg.n_kv_heads, cfg.head_dim_v)  # [n, kv_heads, hd_v]
        if layer.q_norm is not None:  # qwen3: RMSNorm over each head
            q = ops.rms_norm(q, layer.q_norm, cfg.rms_norm_eps)
            k = ops.rms_norm(k, layer.k_norm, cfg.rms_norm_eps)
        q = ops.rope(q, positions, w.inv_freq, cfg.rope_neox, w.rope_mscale)
        k = ops.rope(k, positions, w.inv_freq, cfg.rope_neox, w.rope_mscale)
        k_all, v_all = cache.store(il, k, v)  # [n_past + n, kv_heads, hd(_v)]
        att = ops.attention(q, k_all, v_all, positions, cfg.attention_scale)  # [n, heads, hd_v]
        x = x + ops.linear(att.reshape(n, -1), layer.wo)  # [n, d], residual

        # ---- feed-forward block (SwiGLU)
        h = ops.rms_norm(x, layer.ffn_norm, cfg.rms_norm_eps)  # [n, d]
        x = x + feed_forward(ops, layer, h)  # [n, d], residual

    cache.advance(n)
    return ops.rms_norm(x, w.output_norm, cfg.rms_norm_eps)  # [n, d]
