"""SentencePiece-style BPE (``tokenizer.ggml.model == "llama"``: Gemma, Llama 2, Mistral v1).

llama.cpp's algorithm (``llm_tokenizer_spm_session``), for one fragment of plain text:

    "Hi  there"
      | spaces -> "▁" (U+2581); with add_space_prefix a "▁" is put in front first
      v
    "Hi▁▁there" -> symbols: one per character  [H][i][▁][▁][t][h][e][r][e]
      | repeatedly merge the adjacent pair whose concatenation is a vocabulary token
      |   with the highest score (ties: the leftmost pair)
      v
    [Hi][▁▁][there]
      | a final symbol that is not a token (a character missing from the vocabulary)
      |   becomes its UTF-8 bytes as <0xXX> tokens ("byte fallback")
      v
    ids

No merge list is stored: any pair of tokens whose concatenation is a token can merge.
That is exactly BPE with the merges "left right -> left+right" for every token split
into two tokens, ranked by the merged token's score, which is what we hand to HF
``tokenizers`` (its Rust BPE with byte fallback then runs the loop above). Equal
scores (GGUFs that store none) fall back to the token id, SentencePiece's training
order; llama.cpp breaks such ties by position, which could differ only where two
different equal-score tokens compete for the same characters.

Gemma's user-defined tokens made of spaces ("   "), newlines and tabs never reach this
code: like llama.cpp, ``specials.py`` splits them off the raw text first, so they need
no re-spelling as "▁" runs.
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer, models

from refllm.tokenizer.vocab import Vocab

SPACE_SYMBOL = "▁"  # U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's visible space


def merge_ranks(vocab: Vocab) -> np.ndarray:
    """rank[token_id]: merge priority, 0 = first. Highest score first; equal scores by lower id."""
    order = np.lexsort((np.arange(vocab.size), -vocab.scores.astype(np.float64)))
    rank = np.empty(vocab.size, dtype=np.int64)
    rank[order] = np.arange(vocab.size)
    return rank


def derive_merges(vocab: Vocab) -> list[tuple[str, str]]:
    """Every way to write a token as (token, token), best merged token first.

    Trying every split of every token is O(total characters) set look-ups (1.2 M for
    Gemma's 262k tokens). Done column by column -- all splits at offset k of the tokens
    longer than k -- each step is one list comprehension, which keeps it near 1 s.
    """
    known = set(vocab.token_to_id)
    by_length: dict[int, list[str]] = {}
    for text in known:
        by_length.setdefault(len(text), []).append(text)
    rank = merge_ranks(vocab).tolist()
    pairs: list[tuple[str, str]] = []
    pair_ranks: list[int] = []  # rank of the token each pair merges into
    longer: list[str] = []  # tokens longer than k, for k from the longest length down to 1
    for k in range(max(by_length, default=1) - 1, 0, -1):
        longer += by_length.get(k + 1, [])
        hits = [t for t in longer if t[k:] in known and t[:k] in known]
        pairs += [(t[:k], t[k:]) for t in hits]
        pair_ranks += [rank[i] for i in map(vocab.token_to_id.__getitem__, hits)]
    order = sorted(range(len(pairs)), key=pair_ranks.__getitem__)
    return [pairs[i] for i in order]


def build_sentencepiece_bpe(vocab: Vocab) -> Tokenizer:
    """A HF tokenizer for already ▁-escaped fragments of a SentencePiece-style vocabulary."""
    bpe = models.BPE(
        vocab.token_to_id,
        derive_merges(vocab),
        byte_fallback=True,
        unk_token=vocab.tokens[vocab.unk_id] if vocab.unk_id is not None else None,
    )
    return Tokenizer(bpe)  # no normalizer / pre-tokenizer: the whole fragment is one BPE word


def escape_spaces(text: str) -> str:
    return text.replace(" ", SPACE_SYMBOL)


def unescape_spaces(text: str) -> str:
    return text.replace(SPACE_SYMBOL, " ")
