"""The samplers, one small function each, with llama.cpp's semantics.

A sampler narrows or reshapes a set of candidate tokens. Candidates are two parallel arrays,
like llama.cpp's ``llama_token_data_array``: token ids and their logits (float64 here, so the
probability arithmetic is exact enough to test against the formulas).

    logits [n_vocab]
      -> apply_penalties   repeat / presence / frequency, on tokens seen recently
      -> top_k             the k most likely
      -> typical_p         locally typical set
      -> top_p             nucleus
      -> min_p             drop tokens far less likely than the best
      -> temperature       sharpen or flatten; 0 = keep only the best
      -> pick_from         draw one token with the request's random generator

Every function that truncates keeps at least ``min_keep`` tokens (1), so a draw is always possible.
``refllm.sample.sampler.Sampler`` runs them in this order (llama.cpp's default order).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class Candidates:
    ids: np.ndarray  # int64[n]   token ids still in the running
    logits: np.ndarray  # float64[n] their (possibly modified) logits

    @staticmethod
    def from_logits(logits: np.ndarray) -> "Candidates":
        # [n_vocab] float32 -> every token is a candidate
        return Candidates(np.arange(len(logits), dtype=np.int64), np.asarray(logits, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index) -> "Candidates":
        return Candidates(self.ids[index], self.logits[index])

    def sorted(self) -> "Candidates":
        """Most likely first. (Quicksort: several times faster than a stable sort on a whole
        vocabulary; exactly equal logits come in an unspecified but repeatable order.)"""
        return self.take(np.argsort(-self.logits))


def softmax(logits: np.ndarray) -> np.ndarray:
    # [n] logits -> [n] probabilities summing to 1 (max subtracted for stability)
    z = np.exp(logits - np.max(logits))
    return z / z.sum()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    # [n] logits -> [n] log-probabilities: logit - logsumexp(logits)
    logits = np.asarray(logits, dtype=np.float64)
    top = np.max(logits)
    return logits - (top + np.log(np.sum(np.exp(logits - top))))


def greedy(logits: np.ndarray) -> int:
    """The most likely token (the first one on ties, like llama.cpp's argmax)."""
    return int(np.argmax(logits))


def apply_penalties(
    logits: np.ndarray,
    recent_tokens: Iterable[int],
    repeat_penalty: float,
    presence_penalty: float,
    frequency_penalty: float,
) -> np.ndarray:
    """Penalize tokens that appear in ``recent_tokens`` (llama.cpp's penalties sampler).

    For each token seen ``count`` times:
        logit = logit / repeat_penalty  if logit > 0  else logit * repeat_penalty
        logit = logit - count * frequency_penalty - presence_penalty
    The repeat penalty applies once per token, however often it was seen.
    """
    counts = Counter(int(t) for t in recent_tokens)
    if not counts or (repeat_penalty == 1.0 and presence_penalty == 0.0 and frequency_penalty == 0.0):
        return logits
    out = np.array(logits, dtype=np.float64)  # a copy: the model's logits stay untouched
    ids = np.fromiter(counts.keys(), dtype=np.int64)  # [n_seen]
    seen = np.fromiter(counts.values(), dtype=np.float64)  # [n_seen]
    x = out[ids]
    x = np.where(x > 0, x / repeat_penalty, x * repeat_penalty)
    out[ids] = x - seen * frequency_penalty - presence_penalty
    return out


def top_k(c: Candidates, k: int) -> Candidates:
    """Keep the ``k`` highest logits, most likely first; k <= 0 keeps everything."""
    if k <= 0 or k >= len(c):
        return c.sorted()
    best = np.argpartition(c.logits, len(c) - k)[len(c) - k :]  # [k] the largest, unordered
    return c.take(best).sorted()


def top_p(c: Candidates, p: float, min_keep: int = 1) -> Candidates:
    """Nucleus sampling: the smallest most-likely-first prefix whose probability reaches ``p``."""
    if p >= 1.0:
        return c
    c = c.sorted()
    cumulative = np.cumsum(softmax(c.logits))  # [n] running total, most likely first
    reached = np.nonzero(cumulative >= p)[0]
    keep = len(c) if len(reached) == 0 else int(reached[0]) + 1
    return c.take(slice(0, max(keep, min_keep)))


def min_p(c: Candidates, p: float, min_keep: int = 1) -> Candidates:
    """Drop tokens whose probability is below ``p`` times the best token's probability.

    In logit space: keep logit >= max_logit + log(p).
    """
    if p <= 0.0:
        return c
    keep = c.logits >= np.max(c.logits) + math.log(p)  # [n] bool
    if keep.sum() < min_keep:
        return c
    return c.take(keep)


def typical_p(c: Candidates, p: float, min_keep: int = 1) -> Candidates:
    """Locally typical sampling (Meister et al. 2022), as llama.cpp implements it.

    Rank tokens by how far their surprise (-log p) is from the distribution's entropy,
    then keep the closest ones until their probabilities add up to more than ``p``.
    """
    if p >= 1.0:
        return c
    probs = softmax(c.logits)  # [n]
    log_probs = np.log(probs)
    entropy = -np.sum(probs * log_probs)
    distance = np.abs(-log_probs - entropy)  # [n] how atypical each token is
    order = np.argsort(distance, kind="stable")  # most typical first
    cumulative = np.cumsum(probs[order])
    passed = np.nonzero(cumulative > p)[0]
    keep = len(c) if len(passed) == 0 else int(passed[0]) + 1
    return c.take(order[: max(keep, min_keep)])


def temperature(c: Candidates, t: float) -> Candidates:
    """Divide logits by ``t``: below 1 sharpens, above 1 flattens; t <= 0 keeps only the best token."""
    if t <= 0.0:
        return c.take(slice(int(np.argmax(c.logits)), int(np.argmax(c.logits)) + 1))
    return Candidates(c.ids, c.logits / t)


def pick_from(c: Candidates, rng: np.random.Generator) -> int:
    """Draw one token id with probability softmax(logits), by inverting the cumulative distribution."""
    cumulative = np.cumsum(softmax(c.logits))  # [n]
    u = rng.random() * cumulative[-1]
    index = min(int(np.searchsorted(cumulative, u, side="right")), len(c) - 1)
    return int(c.ids[index])


def mirostat_v1(c: Candidates, tau: float, eta: float, mu: float, n_vocab: int, rng: np.random.Generator, m: int = 100) -> tuple[int, float]:
    """Mirostat (Basu et al. 2021), llama.cpp's version. Returns (token id, updated mu).

    1. Estimate the Zipf exponent s from the top ``m`` probabilities.
    2. Choose k so that top-k sampling has expected surprise ~ mu, and sample from the top k.
    3. Move mu toward the target surprise tau by the error of this draw (learning rate eta).
    """
    c = c.sorted()
    s_hat = zipf_exponent(softmax(c.logits), m)
    k = mirostat_k(s_hat, mu, n_vocab)
    kept = top_k(c, max(int(k), 1))
    token, p = _draw_with_probability(kept, rng)
    surprise = -math.log2(p)
    return token, mu - eta * (surprise - tau)


def zipf_exponent(sorted_probs: np.ndarray, m: int = 100) -> float:
    """Least-squares estimate of s in p_i ~ 1 / i^s from the ``m`` most likely probabilities.

    With t_i = log((i+2)/(i+1)) and b_i = log(p_i / p_(i+1)):  s = sum(t_i * b_i) / sum(t_i^2).
    """
    n = min(m - 1, len(sorted_probs) - 1)
    if n <= 0:
        return 1.0
    i = np.arange(n)
    t = np.log((i + 2) / (i + 1))  # [n] log rank ratios
    b = np.log(sorted_probs[:n] / sorted_probs[1 : n + 1])  # [n] log probability ratios
    return float(np.sum(t * b) / np.sum(t * t))


def mirostat_k(s_hat: float, mu: float, n_vocab: int) -> float:
    """Mirostat's k: the top-k size whose expected surprise under a Zipf(s_hat) law is about mu.

    k = (epsilon * 2^mu / (1 - n_vocab^-epsilon)) ^ (1 / s_hat),  epsilon = s_hat - 1
    """
    epsilon = s_hat - 1.0
    if s_hat <= 0 or abs(epsilon) < 1e-12:
        return float(n_vocab)  # a flat distribution: no useful estimate, keep everything
    ratio = epsilon / (1.0 - n_vocab ** (-epsilon))  # > 0 for any epsilon != 0
    log_k = (math.log(ratio) + mu * math.log(2.0)) / s_hat  # the same formula in log space (no overflow)
    return math.exp(min(log_k, math.log(n_vocab) + 1.0))


def mirostat_v2(c: Candidates, tau: float, eta: float, mu: float, rng: np.random.Generator) -> tuple[int, float]:
    """Mirostat 2.0, llama.cpp's version. Returns (token id, updated mu).

    Drop every token whose surprise -log2(p) exceeds mu (keep at least the best), renormalize,
    draw, then move mu toward tau by the error of the draw.
    """
    c = c.sorted()
    surprise = -np.log2(softmax(c.logits))  # [n] ascending
    too_surprising = np.nonzero(surprise > mu)[0]
    keep = len(c) if len(too_surprising) == 0 else max(int(too_surprising[0]), 1)
    token, p = _draw_with_probability(c.take(slice(0, keep)), rng)
    return token, mu - eta * (-math.log2(p) - tau)


def _draw_with_probability(c: Candidates, rng: np.random.Generator) -> tuple[int, float]:
    """Draw a token; also return its probability within ``c``."""
    token = pick_from(c, rng)
    p = softmax(c.logits)[int(np.nonzero(c.ids == token)[0][0])]
    return token, float(p)
