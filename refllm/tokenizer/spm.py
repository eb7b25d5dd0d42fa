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

No merge list is stored: two adjacent symbols can merge whenever their concatenation
is a token. A symbol is either one character of the text or a token made by an
earlier merge -- and the character need NOT be a token itself (a small vocabulary may
hold "ll" and "ell" but no "l"). That is BPE with the merges "left right ->
left+right" for every split of every token into two parts that are each a token or a
single character, ranked by the merged token's score. We hand exactly that to HF
``tokenizers`` (its Rust BPE then runs the loop above), after adding each character
that occurs inside some token but is not a token as an *implicit symbol* with an id
past the end of the vocabulary. An implicit symbol left unmerged at the end is what
llama.cpp resegments into bytes, so :meth:`SentencePieceBPE.encode` swaps it for its
<0xXX> byte tokens; a character that occurs in no token never enters the HF vocabulary
and gets HF's own byte fallback, the same bytes. Equal scores (GGUFs that store none)
fall back to the token id, SentencePiece's training order; llama.cpp breaks such ties
by position, which could differ only where two different equal-score tokens compete
for the same characters.

Gemma's user-defined tokens made of spaces ("   "), newlines and tabs never reach this
code: like llama.cpp, ``specials.py`` splits them off the raw text first, so they need
no re-spelling as "▁" runs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from tokenizers import Tokenizer, models

from refllm.tokenizer import merge_cache

from refllm.tokenizer.vocab import Vocab

SPACE_SYMBOL = "▁"  # U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's visible space


def merge_ranks(vocab: Vocab) -> np.ndarray:
    """rank[token_id]: merge priority, 0 = first. Highest score first; equal scores by lower id."""
    order = np.lexsort((np.arange(vocab.size), -vocab.scores.astype(np.float64)))
    rank = np.empty(vocab.size, dtype=np.int64)
    rank[order] = np.arange(vocab.size)
    return rank


def implicit_characters(vocab: Vocab) -> list[str]:
    """Characters that occur inside tokens but are not tokens: symbols a merge can start from."""
    known = vocab.token_to_id
    return sorted(set("".join(known)) - set(known))  # the join makes it one C-speed pass


def derive_merges(vocab: Vocab, implicit: Sequence[str] = ()) -> np.ndarray:
    """Every way to write a token as (symbol, symbol), best merged token first.

    Returns [n_merges, 2] int32 symbol ids (left, right): a token's id, or
    ``vocab.size + j`` for ``implicit[j]``, the characters that are not tokens.
    Trying every split of every token is O(total characters) set look-ups
    (1.2 M for Gemma's 262k tokens). Done column by column -- all splits at
    offset k of the tokens longer than k -- each step is one list comprehension, which
    keeps it near 1 s. ``merge_cache.py`` keeps the result on disk, so a model pays
    this once, not at every start.
    """
    symbol_id = dict(vocab.token_to_id)  # text -> id of every symbol that can take part in a merge
    symbol_id.update((char, vocab.size + j) for j, char in enumerate(implicit))
    by_length: dict[int, list[str]] = {}
    for text in vocab.token_to_id:
        by_length.setdefault(len(text), []).append(text)
    rank = merge_ranks(vocab)  # [n_vocab]
    # per column k: the left / right symbol ids and the merged token's id of each split found
    lefts: list[np.ndarray] = [np.zeros(0, np.int32)]
    rights: list[np.ndarray] = [np.zeros(0, np.int32)]
    merged: list[np.ndarray] = [np.zeros(0, np.int64)]
    longer: list[str] = []  # tokens longer than k, for k from the longest length down to 1
    for k in range(max(by_length, default=1) - 1, 0, -1):
        longer += by_length.get(k + 1, [])
        hits = [t for t in longer if t[k:] in symbol_id and t[:k] in symbol_id]
        lefts.append(np.fromiter(map(symbol_id.__getitem__, [t[:k] for t in hits]), np.int32, len(hits)))
        rights.append(np.fromiter(map(symbol_id.__getitem__, [t[k:] for t in hits]), np.int32, len(hits)))
        merged.append(np.fromiter(map(vocab.token_to_id.__getitem__, hits), np.int64, len(hits)))
    pairs = np.stack([np.concatenate(lefts), np.concatenate(rights)], axis=1)  # [n_pairs, 2]
    order = np.argsort(rank[np.concatenate(merged)], kind="stable")  # same token: in column order
    return np.ascontiguousarray(pairs[order])  # [n_merges, 2]


def merges_as_text(vocab: Vocab, implicit: Sequence[str], merge_ids: np.ndarray) -> list[tuple[str, str]]:
    """[n_merges, 2] symbol ids -> [("left", "right"), ...], the form HF ``tokenizers`` takes.

    The pairs hold the vocabulary's own string objects (no fresh copies), so the list
    costs ~35 MB for Gemma's ~515k merges instead of ~150 MB.
    """
    names = np.array(vocab.tokens + list(implicit), dtype=object)  # symbol id -> text
    return list(zip(names[merge_ids[:, 0]].tolist(), names[merge_ids[:, 1]].tolist()))


class SentencePieceBPE:
    """Encoder for already ▁-escaped fragments of a SentencePiece-style vocabulary."""

    def __init__(self, vocab: Vocab):
        implicit = implicit_characters(vocab)
        # implicit symbol id (vocab.size, vocab.size + 1, ...) -> its UTF-8 bytes as byte tokens
        self._byte_ids: dict[int, list[int]] = {
            vocab.size + j: [_byte_token_id(vocab, b) for b in char.encode("utf-8")]
            for j, char in enumerate(implicit)
        }
        symbols = dict(vocab.token_to_id)
        symbols.update({char: vocab.size + j for j, char in enumerate(implicit)})
        key = merge_cache.cache_key(vocab)
        merge_ids = merge_cache.load_merges(key, n_symbols=vocab.size + len(implicit))  # [n_merges, 2] or None
        if merge_ids is None:  # first start with this vocabulary (or no usable cache): ~1 s
            merge_ids = derive_merges(vocab, implicit)
            merge_cache.save_merges(key, merge_ids)
        self._hf = Tokenizer(models.BPE(  # no normalizer / pre-tokenizer: the fragment is one BPE word
            symbols,
            merges_as_text(vocab, implicit, merge_ids),
            byte_fallback=True,
            unk_token=vocab.tokens[vocab.unk_id] if vocab.unk_id is not None else None,
        ))

    def encode(self, fragment: str) -> list[int]:
        ids = self._hf.encode(fragment, add_special_tokens=False).ids
        if not self._byte_ids or all(i not in self._byte_ids for i in ids):
            return ids
        out: list[int] = []
        for i in ids:  # an unmerged implicit character -> its bytes, like llama.cpp's resegment
            out += self._byte_ids.get(i, [i])
        return out


def _byte_token_id(vocab: Vocab, byte: int) -> int:
    token_id = vocab.token_to_id.get(f"<0x{byte:02X}>", vocab.unk_id)
    return token_id if token_id is not None else 0


def escape_spaces(text: str) -> str:
    return text.replace(" ", SPACE_SYMBOL)


def unescape_spaces(text: str) -> str:
    return text.replace(SPACE_SYMBOL, " ")
