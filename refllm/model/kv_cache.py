"""The key/value cache: every layer's keys and values of the positions seen so far.

    cache.keys[layer]    f32[n_ctx, n_kv_heads, head_dim]     slot j holds position j
    cache.values[layer]  f32[n_ctx, n_kv_heads, head_dim_v]
    cache.n_past         how many positions are filled (the next token's position)

Prefill writes a whole prompt's keys/values at once, decode one position per call.
``truncate(n)`` rewinds to the first n positions, so a new prompt that shares a
prefix with the cached one only needs its new tokens evaluated.
The arrays are anonymous memory maps (``zeros_committed_as_written``), so memory is
committed page by page (4 KiB) only as positions fill; a backend that computes elsewhere
passes its own allocator (``zeros``: the cuda backend's arrays live on the GPU, and
``store``'s slicing and assignment run there).
"""

from __future__ import annotations

import mmap
from typing import Any, Callable

import numpy as np

from refllm.errors import InvalidRequest


def zeros_committed_as_written(shape: tuple[int, ...]) -> np.ndarray:
    """float32 zeros of ``shape`` whose memory the OS commits 4 KiB page by page on first write.

    ``np.zeros`` is meant to be lazy too, but NumPy advises Linux to back arrays of 4 MiB
    and more with 2 MiB huge pages, and glibc may hand out recycled heap that it must
    clear: measured on Gemma 3 (36 arrays of 4 MiB at num_ctx 4096), a short prompt
    committed 8-28 MB more than with num_ctx 64. An anonymous ``mmap`` does not.
    """
    n_bytes = int(np.prod(shape)) * 4
    return np.frombuffer(mmap.mmap(-1, max(n_bytes, 4)), dtype=np.float32)[: n_bytes // 4].reshape(shape)


class KVCache:
    def __init__(self, n_layers: int, n_ctx: int, n_kv_heads: int, head_dim: int, head_dim_v: int,
                 zeros: Callable[[tuple[int, ...]], Any] | None = None):  # fmt: skip
        if n_ctx <= 0:
            raise InvalidRequest(f"context size must be positive, got {n_ctx}")
        zeros = zeros or zeros_committed_as_written  # float32 zeros of a shape (host memory by default)
        self.n_ctx = n_ctx
        self.n_past = 0
        self.keys = [zeros((n_ctx, n_kv_heads, head_dim)) for _ in range(n_layers)]
        self.values = [zeros((n_ctx, n_kv_heads, head_dim_v)) for _ in range(n_layers)]

    @property
    def n_free(self) -> int:
        return self.n_ctx - self.n_past

    def check_room(self, n_new: int) -> None:
        """Refuse, with a clear message, tokens that would run past the context."""
        if n_new > self.n_free:
            raise InvalidRequest(
                f"{n_new} new tokens do not fit in the context: {self.n_past} of {self.n_ctx} positions "
                f"are used and {self.n_free} remain (raise num_ctx or shorten the input)"
            )

    def store(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Write this call's k [n, kv_heads, hd], v [n, kv_heads, hd_v] at positions n_past...

        Returns the filled part of the cache, k [n_past + n, ...], v [n_past + n, ...].
        (``advance`` moves n_past once every layer has stored.)
        """
        start, stop = self.n_past, self.n_past + k.shape[0]
        self.keys[layer][start:stop] = k
        self.values[layer][start:stop] = v
        return self.keys[layer][:stop], self.values[layer][:stop]

    def advance(self, n: int) -> None:
        self.n_past += n

    def truncate(self, n_tokens: int) -> None:
        """Forget every position from ``n_tokens`` on (keep a shared prompt prefix)."""
        if not 0 <= n_tokens <= self.n_past:
            raise InvalidRequest(f"can't truncate the cache to {n_tokens} tokens: it holds {self.n_past}")
        self.n_past = n_tokens
