"""Numeric conformance: the other runtime's distributions vs refllm's, position by position.

For each prompt the other runtime generates greedily and reports, at every generated position,
its chosen token and its top-k alternatives with logprobs. refllm then reads the same tokens
(prompt + the other runtime's continuation, teacher-forced) in one forward pass and scores
each position:

    KL          KL(refllm || other) over the shared support: the other runtime's top-k tokens,
                both distributions renormalised over them (the only probabilities it reports)
    top-1       does the other runtime's most likely token equal refllm's? A near-tie is excused:
                refllm's logprob for the other's top token within ``tie_margin`` nats of its own
                top (llama.cpp rounds activations to 8 bits, which flips such ties)
    rank        where the other runtime's chosen token ranks in refllm's distribution (1 = top)
    divergence  the first position where refllm's greedy choice differs: up to it both
                greedy continuations are the same text

Tokens are matched by id where the server reports ids (llama.cpp), else by their bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from refllm.conformance.remote import Remote, RemoteCompletion, RemoteToken
from refllm.conformance.suite import Prompt
from refllm.sample.samplers import log_softmax
from refllm.tokenizer.vocab import TokenType

# When several tokens share the same bytes (SentencePiece "A" and its byte token <0x41>), the
# other runtime most likely meant the ordinary one.
PREFERENCE = {TokenType.NORMAL: 0, TokenType.USER_DEFINED: 1, TokenType.BYTE: 2, TokenType.CONTROL: 3}


class VocabIndex:
    """refllm's vocabulary looked up by bytes: b" the" -> [ids], best-guess id first."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._by_bytes: dict[bytes, list[int]] | None = None

    def token_bytes(self, token_id: int) -> bytes:
        return self.tokenizer.token_bytes(token_id)

    def ids_of(self, data: bytes) -> list[int]:
        if self._by_bytes is None:  # built on first use: ~0.5 s for a 262k vocabulary
            types = self.tokenizer.vocab.types
            index: dict[bytes, list[int]] = {}
            for i in range(self.tokenizer.vocab_size):
                index.setdefault(self.tokenizer.token_bytes(i), []).append(i)
            for ids in index.values():
                ids.sort(key=lambda i: PREFERENCE.get(int(types[i]), 9))
            self._by_bytes = index
        return self._by_bytes.get(data, [])

    def split(self, data: bytes) -> list[int] | None:
        """Ids for bytes the other runtime merged into one entry: one token if there is one, else byte by byte."""
        ids = self.ids_of(data)
        if ids:
            return ids[:1]
        parts = [self.ids_of(bytes([b])) for b in data]
        return [p[0] for p in parts] if all(parts) else None


def line_up(completion: RemoteCompletion, vocab: VocabIndex) -> tuple[list[int], list[RemoteToken | None], list[str]]:
    """(continuation ids, the logprobs entry for each id or None, notes).

    An entry covers one id, or several when the server merged a character split over tokens;
    then it describes the last of them and the others stay unscored.
    """
    notes: list[str] = []
    if completion.token_ids:  # the server told us the ids: give each entry the ids its bytes span
        ids = list(completion.token_ids)
        entries: list[RemoteToken | None] = [None] * len(ids)
        j = 0
        for entry in completion.tokens:
            start, spanned = j, b""
            while j < len(ids) and (j == start or len(spanned) < len(entry.bytes)):
                spanned += vocab.token_bytes(ids[j])
                j += 1
            same_id = entry.id is not None and j == start + 1 and ids[start] == entry.id  # e.g. an end token shown as ""
            if j == start or not (spanned == entry.bytes or same_id):  # ids of another vocabulary, or a bad reply
                notes.append(f"logprobs entry {entry.bytes!r} does not match the returned token ids "
                             f"(refllm reads them as {spanned!r}); scoring stops there")  # fmt: skip
                return ids[:start], entries[:start], notes
            entries[j - 1] = entry
        return ids, entries, notes
    ids, entries = [], []
    for entry in completion.tokens:
        last = entry.id if entry.id is not None else next(iter(vocab.ids_of(entry.bytes)), None)
        if last is None or not 0 <= last < vocab.tokenizer.vocab_size:
            notes.append(f"token {entry.bytes!r} is not in refllm's vocabulary; scoring stops there")
            break
        tail = vocab.token_bytes(last)
        if len(entry.bytes) > len(tail) and entry.bytes.endswith(tail):  # a merged entry (llama.cpp's OpenAI API)
            before = vocab.split(entry.bytes[: len(entry.bytes) - len(tail)])
            if before is None:
                notes.append(f"cannot split the merged entry {entry.bytes!r} into tokens; scoring stops there")
                break
            ids += before
            entries += [None] * len(before)
        ids.append(last)
        entries.append(entry)
    return ids, entries, notes


def refllm_log_probs(model, prompt_ids: list[int], continuation: list[int]) -> np.ndarray:
    """float64[len(continuation), n_vocab]: refllm's log-probabilities for each continuation position.

    Row k is the distribution after prompt + continuation[:k] (the row that predicts continuation[k]).
    """
    cache = model.new_cache(len(prompt_ids) + len(continuation))
    if len(prompt_ids) > 1:
        model.forward(prompt_ids[:-1], cache)  # the prompt but its last token: logits not needed
    inputs = [prompt_ids[-1], *continuation[:-1]]
    logits = model.forward(inputs, cache, all_logits=True)  # [len(continuation), n_vocab]
    return np.stack([log_softmax(row) for row in logits])


@dataclass
class PositionScore:
    position: int  # index in the continuation (0 = the first generated token)
    token: str  # the other runtime's chosen token
    refllm_token: str  # refllm's most likely token at the same position
    other_logprob: float | None  # the chosen token's logprob, as the other runtime reports it (None: unscored)
    refllm_logprob: float  # the same token's logprob under refllm
    rank: int  # the chosen token's rank in refllm's distribution (1 = refllm's top choice)
    kl: float | None  # KL(refllm || other) over the other runtime's top-k (None: unscored)
    top1_agrees: bool | None  # the other runtime's most likely token == refllm's (None: unscored)
    margin: float | None  # refllm's top logprob minus its logprob of the other's top token (0 when they agree)
    greedy_agrees: bool  # the chosen token == refllm's most likely (same bytes)
    # where the top-1s differ: the other's top logprob minus its logprob of refllm's top (None: not in its top-k)
    other_margin: float | None = None


@dataclass
class PromptScore:
    id: str
    kind: str
    prompt_tokens: int  # refllm's count
    remote_prompt_tokens: int | None  # the server's count (None: not reported)
    positions: list[PositionScore] = field(default_factory=list)
    continuation: str = ""  # the other runtime's text
    context_before_divergence: str = ""  # the text just before the first divergence
    notes: list[str] = field(default_factory=list)
    prompt_mismatch: bool = False  # the server counted more prompt tokens than refllm: it read another prompt

    @property
    def scored(self) -> list[PositionScore]:
        return [p for p in self.positions if p.top1_agrees is not None]

    def top1_agreement(self, tie_margin: float = 0.0) -> float:
        """The fraction of scored positions whose top-1 agrees, near-ties within ``tie_margin`` nats excused."""
        scored = self.scored
        return sum(top1_agrees(p, tie_margin) for p in scored) / len(scored) if scored else math.nan

    @property
    def kls(self) -> list[float]:
        return [p.kl for p in self.scored if p.kl is not None]

    @property
    def mean_kl(self) -> float:
        return float(np.mean(self.kls)) if self.kls else math.nan

    @property
    def max_kl(self) -> float:
        return float(np.max(self.kls)) if self.kls else math.nan

    @property
    def first_divergence(self) -> PositionScore | None:
        return next((p for p in self.positions if not p.greedy_agrees), None)


def top1_agrees(p: PositionScore, tie_margin: float) -> bool:
    return bool(p.top1_agrees or (p.margin is not None and p.margin <= tie_margin))


def shared_support_kl(refllm_lp: np.ndarray, other_lp: np.ndarray) -> float:
    """KL(p || q) with p, q the two distributions renormalised over the same few tokens."""
    if len(refllm_lp) < 2:
        return 0.0
    p_log = refllm_lp - np.logaddexp.reduce(refllm_lp)
    q_log = other_lp - np.logaddexp.reduce(other_lp)
    return float(max(0.0, np.sum(np.exp(p_log) * (p_log - q_log))))


def score_position(k: int, log_probs: np.ndarray, chosen: int, entry: RemoteToken | None, vocab: VocabIndex) -> PositionScore:
    """Compare one position: refllm's log_probs [n_vocab] vs the other runtime's entry for it."""
    best = int(np.argmax(log_probs))
    text = lambda i: vocab.token_bytes(i).decode("utf-8", errors="backslashreplace")  # noqa: E731  (b"\xe3" shows)
    rank = int(np.sum(log_probs > log_probs[chosen])) + 1
    greedy_agrees = best == chosen or vocab.token_bytes(best) == vocab.token_bytes(chosen)
    score = PositionScore(k, text(chosen), text(best), None, float(log_probs[chosen]), rank, None, None, None, greedy_agrees)
    if entry is None:
        return score
    score.other_logprob = entry.logprob

    # the other runtime's alternatives, keyed by id where it tells ids, else by bytes
    other: dict[object, float] = {}
    mine: dict[object, float] = {}
    for alt in entry.top:
        ids = [alt.id] if alt.id is not None else vocab.ids_of(alt.bytes)
        if not ids:
            continue  # a token refllm's vocabulary does not have: outside the shared support
        key = alt.id if alt.id is not None else alt.bytes
        other[key] = float(np.logaddexp(other.get(key, -np.inf), alt.logprob))
        mine[key] = float(np.logaddexp.reduce(log_probs[ids]))
    if other:
        keys = list(other)
        score.kl = shared_support_kl(np.array([mine[k] for k in keys]), np.array([other[k] for k in keys]))
        top_key = max(keys, key=lambda key: other[key])
        score.top1_agrees = top_key == best if isinstance(top_key, int) else top_key == vocab.token_bytes(best)
        score.margin = 0.0 if score.top1_agrees else float(log_probs[best] - mine[top_key])
        refllm_key = best if isinstance(top_key, int) else vocab.token_bytes(best)
        if not score.top1_agrees and refllm_key in other:
            score.other_margin = other[top_key] - other[refllm_key]
    else:  # no alternatives reported: the chosen token stands for the top-1
        score.top1_agrees = greedy_agrees
        score.margin = float(log_probs[best] - log_probs[chosen])
    return score


def score_prompt(model, remote: Remote, prompt: Prompt, n_predict: int, top_k: int, num_ctx: int,
                 vocab: VocabIndex) -> PromptScore:  # fmt: skip
    """Ask the other runtime for ``prompt``'s greedy continuation and score every position."""
    prompt_ids = model.tokenize(prompt.text, add_special=True, parse_special=True)
    completion = remote.complete(prompt.text, n_predict, top_k, num_ctx)
    result = PromptScore(prompt.id, prompt.kind, len(prompt_ids), completion.prompt_tokens, continuation=completion.text)
    counted = completion.prompt_tokens
    if counted is not None and counted > len(prompt_ids):  # more tokens than the raw prompt: not what refllm reads
        result.prompt_mismatch = True
        result.notes.append(f"the server counted {counted} prompt tokens, refllm {len(prompt_ids)}: it did not read the "
                            "raw prompt (a chat template on this route? Ollama's /v1/completions applies one; use "
                            "--api ollama) or the tokenizers disagree (see the tokenizer check)")  # fmt: skip
    elif counted and counted < len(prompt_ids):  # servers that reuse a cached prefix may count only the rest
        result.notes.append(f"the server counted {counted} prompt tokens, refllm {len(prompt_ids)} (a cached prefix?)")
    if result.prompt_mismatch:
        return result  # its numbers describe another prompt: nothing to compare
    ids, entries, notes = line_up(completion, vocab)
    result.notes += notes
    if not ids:
        if not notes:
            result.notes.append("the other runtime generated no tokens")
        return result
    ids = ids[: max(0, model.n_ctx_train - len(prompt_ids))]
    log_probs = refllm_log_probs(model, prompt_ids, ids)  # [len(ids), n_vocab]
    result.positions = [score_position(k, log_probs[k], ids[k], entries[k], vocab) for k in range(len(ids))]
    divergence = result.first_divergence
    if divergence is not None:
        before = model.detokenize(prompt_ids + ids[: divergence.position])
        result.context_before_divergence = before[-60:]
    return result


def run_numeric(model, remote: Remote, prompts: list[Prompt], n_predict: int = 32, top_k: int = 20,
                num_ctx: int = 4096, progress: Callable[[dict], None] | None = None) -> list[PromptScore]:  # fmt: skip
    """Score every prompt; ``progress`` gets {"status", "total", "completed", "unit"} events."""
    vocab = VocabIndex(model.tokenizer)
    scores = []
    for i, prompt in enumerate(prompts):
        if progress:
            progress({"status": "scoring prompts", "total": len(prompts), "completed": i, "unit": "prompts"})
        scores.append(score_prompt(model, remote, prompt, n_predict, top_k, num_ctx, vocab))
    if progress:
        progress({"status": "scoring prompts", "total": len(prompts), "completed": len(prompts), "unit": "prompts"})
    return scores
