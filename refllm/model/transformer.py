"""``Transformer``: one model's config + weights + the forward pass of its family.

    hidden = family.forward(weights, config, ops, token_ids, cache)   # [n, d], final-normed
    logits = ops.linear(hidden, weights.output)                      # [n, d] -> [n, n_vocab]

The family modules (llama.py, qwen.py, gemma3.py) hold the architecture; this
file only checks inputs (token ids in range, room in the context) and applies
the output head, computing it for the last position alone unless asked.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from refllm.errors import InvalidRequest
from refllm.gguf import GGUFFile
from refllm.kernels.reference import Backend
from refllm.model import gemma3, llama, qwen
from refllm.model.config import ModelConfig, config_from_gguf
from refllm.model.kv_cache import KVCache

FAMILIES: dict[str, ModuleType] = {"llama": llama, "qwen2": qwen, "qwen3": qwen, "gemma3": gemma3}


class Transformer:
    def __init__(self, gguf: GGUFFile):
        self.config: ModelConfig = config_from_gguf(gguf)
        self.family = FAMILIES[self.config.architecture]
        self.weights = self.family.load_weights(gguf, self.config)

    def new_cache(self, n_ctx: int, ops: Backend | None = None) -> KVCache:
        """An empty cache of n_ctx positions, in the memory ``ops`` computes in (host by default)."""
        cfg = self.config
        zeros = ops.zeros if ops is not None else None
        return KVCache(cfg.n_layers, int(n_ctx), cfg.n_kv_heads, cfg.head_dim, cfg.head_dim_v, zeros=zeros)

    def check_tokens(self, token_ids) -> np.ndarray:
        """Any sequence of ints -> int64[n]; empty, non-integer or out-of-vocabulary -> InvalidRequest."""
        ids = np.asarray(token_ids)
        if ids.ndim != 1 or ids.size == 0:
            raise InvalidRequest("expected a non-empty 1-D list of token ids")
        if not np.issubdtype(ids.dtype, np.integer):
            raise InvalidRequest(f"token ids must be integers, got {ids.dtype}")
        bad = ids[(ids < 0) | (ids >= self.config.n_vocab)]
        if bad.size:
            raise InvalidRequest(f"token id {int(bad[0])} is out of range (vocabulary of {self.config.n_vocab})")
        return ids.astype(np.int64)

    def hidden_states(self, token_ids, cache: KVCache, ops: Backend) -> np.ndarray:
        """int[n] -> f32[n, d], final-normed; advances the cache by n.

        Arrays are the backend's (``ops.to_host`` makes NumPy of them): see refllm/model/loaded.py.
        """
        ids = self.check_tokens(token_ids)
        cache.check_room(len(ids))
        return self.family.forward(self.weights, self.config, ops, ids, cache)

    def forward(self, token_ids, cache: KVCache, ops: Backend, all_logits: bool = False) -> np.ndarray:
        """int[n] -> logits f32[n_vocab] of the last position, or f32[n, n_vocab] with all_logits."""
        hidden = self.hidden_states(token_ids, cache, ops)  # [n, d]
        if not all_logits:
            return ops.linear(hidden[-1:], self.weights.output)[0]  # [1, d] -> [n_vocab]
        return ops.linear(hidden, self.weights.output)  # [n, d] -> [n, n_vocab]
