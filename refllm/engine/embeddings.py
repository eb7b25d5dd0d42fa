"""Sentence embeddings from a generative model: pool its final hidden states, then L2-normalise.

    text ──tokenize──► ids [n] ──model.hidden_states──► [n, n_embd] ──pool──► [n_embd]
         ──(keep the first `dimensions`)──► / ||v||₂ ──► unit vector

Pooling follows the GGUF's ``<arch>.pooling_type`` (llama.cpp numbering: 1 mean,
2 cls = first token, 3 last token); generative models without one use mean pooling.
"""

from __future__ import annotations

import numpy as np

from refllm.errors import InvalidRequest

POOLING_MEAN, POOLING_CLS, POOLING_LAST = 1, 2, 3


def pooling_type(model) -> int:
    metadata = getattr(model, "metadata", {}) or {}
    value = metadata.get(f"{getattr(model, 'architecture', '')}.pooling_type")
    return int(value) if value in (POOLING_MEAN, POOLING_CLS, POOLING_LAST) else POOLING_MEAN


def pool(hidden: np.ndarray, pooling: int) -> np.ndarray:
    """[n_tokens, n_embd] -> [n_embd]"""
    if pooling == POOLING_LAST:
        return hidden[-1]
    if pooling == POOLING_CLS:
        return hidden[0]
    return hidden.mean(axis=0)


def normalize(vector: np.ndarray, dimensions: int | None = None) -> np.ndarray:
    """Keep the first ``dimensions`` values (all when None) and scale to unit length."""
    if dimensions is not None:
        vector = vector[:dimensions]
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def context_length(model, options: dict) -> int:
    """``num_ctx`` from the (validated) options, capped at the model's training context."""
    from refllm.sample import Options

    num_ctx = Options.from_dict(options).num_ctx  # unknown or mistyped options: InvalidRequest
    return min(num_ctx, int(getattr(model, "n_ctx_train", 0) or num_ctx))


TRUNCATE_MARGIN_TOKENS = 64  # tokens encoded past n_ctx before cutting (see text_to_tokenize)


def text_to_tokenize(model, text: str, n_ctx: int, truncate: bool) -> str:
    """As much of ``text`` as can matter for ``n_ctx`` tokens: a huge input is never tokenized whole.

    No token stands for more than ``longest_token_chars`` characters, so the first
    (n_ctx + margin) x that many characters give at least n_ctx + margin tokens. Only the last
    few tokens before the cut can differ from the whole text's (a word cut in half), and the
    margin keeps them past n_ctx, where truncation drops them anyway. Without truncation, a
    text that cannot fit is refused before tokenizing (the same message as after).
    """
    tokenizer = getattr(model, "tokenizer", None)
    if getattr(tokenizer, "longest_token_chars", None) is None:
        return text
    if truncate:
        return text[: (n_ctx + TRUNCATE_MARGIN_TOKENS) * tokenizer.longest_token_chars]
    at_least = tokenizer.fewest_tokens(len(text))
    if at_least > n_ctx:
        raise InvalidRequest(f"input length at least {at_least} tokens exceeds the context length {n_ctx} (set truncate: true to cut it)")
    return text


def embed_texts(model, texts: list[str], *, truncate: bool = True, dimensions: int | None = None,
                options: dict | None = None) -> tuple[list[list[float]], int]:
    """Unit-length embeddings of ``texts`` and the number of tokens read."""
    n_embd = int(getattr(model, "n_embd", 0) or getattr(getattr(model, "config", None), "n_embd", 0) or 0)
    if dimensions is not None and (dimensions < 1 or (n_embd and dimensions > n_embd)):
        raise InvalidRequest(f"dimensions must be between 1 and {n_embd or 'the embedding size'}")
    n_ctx = context_length(model, options or {})
    pooling = pooling_type(model)
    vectors, n_tokens = [], 0
    for text in texts:
        ids = model.tokenize(text_to_tokenize(model, text, n_ctx, truncate), add_special=True, parse_special=False)
        if not ids:
            raise InvalidRequest("input is empty: nothing to embed")
        if len(ids) > n_ctx:
            if not truncate:
                raise InvalidRequest(f"input length {len(ids)} tokens exceeds the context length {n_ctx} (set truncate: true to cut it)")
            ids = ids[:n_ctx]
        hidden = np.asarray(model.hidden_states(ids), dtype=np.float32)  # [n_tokens, n_embd]
        vectors.append(normalize(pool(hidden, pooling), dimensions).astype(np.float32).tolist())
        n_tokens += len(ids)
    return vectors, n_tokens
