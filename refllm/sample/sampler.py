"""``Sampler``: the per-request sampling chain, its random generator and its Mirostat state.

    sampler = Sampler(options, n_vocab)
    token = sampler.sample(logits, recent_tokens)   # logits: float32[n_vocab]

Order (llama.cpp's default, documented in refllm.sample.samplers):

    penalties -> top_k -> typical_p -> top_p -> min_p -> temperature -> draw
    temperature == 0:   penalties -> the most likely token (greedy)
    mirostat 1 or 2:    penalties -> temperature -> Mirostat (replaces top_k ... min_p)

The penalties look at the last ``repeat_last_n`` tokens of the whole context, prompt
included (as llama.cpp's server feeds the prompt to its penalty sampler).

The same ``seed`` and options give the same tokens: each request owns one
``np.random.Generator`` seeded from ``options.seed`` (a fresh OS seed when it is None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from refllm.sample import samplers as s
from refllm.sample.options import Options


@dataclass(frozen=True)
class TokenLogprob:
    """A token's log-probability under the model's raw distribution (before any sampler).

    The shape OpenAI and llama.cpp report: the token's text and UTF-8 bytes (a token can hold
    part of a character), and the most likely alternatives at that position, best first.
    """

    token_id: int
    logprob: float
    token: str = ""
    bytes: tuple[int, ...] = ()
    top_logprobs: tuple["TokenLogprob", ...] = ()


def token_logprob(logits: np.ndarray, token_id: int, top_n: int = 0, token_bytes: Callable[[int], bytes] | None = None) -> TokenLogprob:
    """log_softmax of the raw logits at ``token_id``, plus the ``top_n`` most likely tokens.

    This is what llama.cpp, Ollama and OpenAI report as ``logprobs``/``top_logprobs``.
    ``token_bytes(id)`` (the tokenizer's) fills in each token's text and bytes.
    """
    log_probs = s.log_softmax(logits)  # [n_vocab]

    def entry(i: int, top=()) -> TokenLogprob:
        data = token_bytes(i) if token_bytes else b""
        return TokenLogprob(i, float(log_probs[i]), data.decode("utf-8", errors="replace"), tuple(data), top)

    top: tuple[TokenLogprob, ...] = ()
    if top_n > 0:
        best = s.top_k(s.Candidates.from_logits(log_probs), top_n)  # [top_n] most likely first
        top = tuple(entry(int(i)) for i in best.ids)
    return entry(int(token_id), top)


class Sampler:
    def __init__(self, options: Options, n_vocab: int):
        self.options = options
        self.n_vocab = n_vocab
        self.rng = np.random.default_rng(options.seed)  # seed None -> fresh entropy from the OS
        self.mu = 2.0 * options.mirostat_tau  # Mirostat's running surprise bound, as llama.cpp starts it

    def penalty_window(self, recent_tokens: list[int], num_ctx: int) -> list[int]:
        """The tokens the penalties look at: the last repeat_last_n (-1 = the whole context)."""
        n = self.options.repeat_last_n
        if n == 0:
            return []
        if n < 0:
            n = num_ctx
        return recent_tokens[-n:]

    def sample(self, logits: np.ndarray, recent_tokens: list[int] = (), num_ctx: int | None = None) -> int:
        """Pick the next token from ``logits`` [n_vocab]; ``recent_tokens`` = context so far."""
        o = self.options
        window = self.penalty_window(list(recent_tokens), num_ctx or len(recent_tokens))
        logits = s.apply_penalties(logits, window, o.repeat_penalty, o.presence_penalty, o.frequency_penalty)
        if o.temperature <= 0.0:
            return s.greedy(logits)
        c = s.Candidates.from_logits(logits)  # every token, [n_vocab]
        if o.mirostat == 1:
            token, self.mu = s.mirostat_v1(s.temperature(c, o.temperature), o.mirostat_tau, o.mirostat_eta, self.mu, self.n_vocab, self.rng)
            return token
        if o.mirostat == 2:
            token, self.mu = s.mirostat_v2(s.temperature(c, o.temperature), o.mirostat_tau, o.mirostat_eta, self.mu, self.rng)
            return token
        c = s.top_k(c, o.top_k)  # [k] most likely first
        c = s.typical_p(c, o.typical_p)
        c = s.top_p(c, o.top_p)
        c = s.min_p(c, o.min_p)
        c = s.temperature(c, o.temperature)
        return s.pick_from(c, self.rng)
