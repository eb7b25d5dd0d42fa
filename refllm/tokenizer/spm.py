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
``tokenizers`` (its Rust BPE with byte fallback then runs the loop above).
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
    longer than k -- each step is one list comprehension. A split is then coded as one
    int, rank * 64 + k, so ordering them is a plain integer sort.
    """
    known = set(vocab.token_to_id)
    longest_first = sorted((t for t in known if len(t) > 1), key=len, reverse=True)
    lengths = [len(t) for t in longest_first]
    if not lengths or lengths[0] >= 64:  # k must fit in the code's low 6 bits
        return _derive_merges_plainly(vocab)
    rank = merge_ranks(vocab).tolist()
    code_of = {t: rank[i] * 64 for t, i in vocab.token_to_id.items()}
    codes: list[int] = []
    n_longer = len(longest_first)
    for k in range(1, lengths[0]):
        while n_longer and lengths[n_longer - 1] <= k:
            n_longer -= 1  # tokens of length <= k have no split at k
        codes += [code_of[t] + k for t in longest_first[:n_longer] if t[k:] in known and t[:k] in known]
    codes.sort()
    tokens = vocab.tokens
    order = merge_order(vocab)
    return [(tokens[order[c >> 6]][: c & 63], tokens[order[c >> 6]][c & 63 :]) for c in codes]


def merge_order(vocab: Vocab) -> list[int]:
    """order[rank] = token id (the inverse of merge_ranks)."""
    return np.lexsort((np.arange(vocab.size), -vocab.scores.astype(np.float64))).tolist()


def _derive_merges_plainly(vocab: Vocab) -> list[tuple[str, str]]:
    """The same, token by token (for vocabularies with tokens of 64+ characters)."""
    known = vocab.token_to_id
    rank = merge_ranks(vocab)
    found = [
        (int(rank[i]), t[:k], t[k:])
        for i, t in enumerate(vocab.tokens) if known[t] == i
        for k in range(1, len(t)) if t[:k] in known and t[k:] in known
    ]
    found.sort(key=lambda item: item[0])
    return [(left, right) for _, left, right in found]


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
