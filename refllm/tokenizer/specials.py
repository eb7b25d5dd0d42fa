"""Split text on special tokens before BPE (llama.cpp's ``tokenizer_st_partition``).

    "<|im_start|>user\\nHi<|im_end|>"   with parse_special=True
      -> [1, "user\\nHi", 2]            ids for the specials, strings for the text between

Which tokens are matched:
  * user-defined tokens (type 4: Gemma's "\\n\\n", "<div>", runs of spaces) always,
  * control and unknown tokens (type 3/2: "<|im_start|>", "<bos>") only with
    ``parse_special=True``. Plain user text containing "<|im_start|>" is then ordinary
    text, so nobody can inject a turn marker through a prompt.
  * ``protected`` spans (the messages' contents inside a rendered chat prompt) never
    yield control tokens, even with ``parse_special=True``.

Order matters when specials overlap: llama.cpp takes the longest special first and
splits every text fragment on all its occurrences (left to right), then the next
longest, and so on.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from refllm.tokenizer.vocab import TokenType, Vocab

Fragment = str | int  # plain text still to tokenize, or a finished special token id
Span = tuple[int, int]  # [start, end) character positions


SHARED_BEGINNING_CHARS = 4  # see SpecialTokenSplitter.split


class SpecialTokenSplitter:
    def __init__(self, vocab: Vocab):
        by_length: list[tuple[int, int, str, bool]] = []  # (utf-8 length, id, text, is control/unknown)
        special_kinds = [TokenType.USER_DEFINED, TokenType.CONTROL, TokenType.UNKNOWN]
        for token_id in np.flatnonzero(np.isin(vocab.types, special_kinds)).tolist():  # a few thousand of 262k
            text, kind = vocab.tokens[token_id], int(vocab.types[token_id])
            by_length.append((len(text.encode("utf-8")), token_id, text, kind != TokenType.USER_DEFINED))
        by_length.sort(key=lambda item: (-item[0], item[1]))  # longest first
        self.specials = [(text, token_id, on_request) for _, token_id, text, on_request in by_length]

    def split(self, text: str, parse_special: bool, protected: Sequence[Span] = ()) -> list[Fragment]:
        # pieces: (start, end) of text still to tokenize, or a token id; in order
        pieces: list[Span | int] = [(0, len(text))] if text else []
        # Thousands of specials share a few beginnings (Gemma: 6,414 specials, ~6,200 of
        # them "<unused...>"): a beginning absent from the text rules out all its specials
        # with one search (1M characters: ~3 s of searches -> a few ms).
        beginning_present: dict[str, bool] = {}
        for special_text, special_id, on_request in self.specials:
            if on_request and not parse_special:
                continue
            beginning = special_text[:SHARED_BEGINNING_CHARS]
            present = beginning_present.get(beginning)
            if present is None:
                present = beginning_present[beginning] = beginning in text
            if not present or special_text not in text:  # cheap tests on the whole text first
                continue
            guarded = protected if on_request else ()
            pieces = [out for piece in pieces for out in _split_piece(text, piece, special_text, special_id, guarded)]
        return [text[p[0] : p[1]] if isinstance(p, tuple) else p for p in pieces]


def _split_piece(text: str, piece: Span | int, special: str, special_id: int, protected: Sequence[Span]):
    """Split one text piece on every occurrence of one special token (not inside a protected span)."""
    if not isinstance(piece, tuple):
        return [piece]
    start, end = piece
    out: list[Span | int] = []
    search = start
    while True:
        found = text.find(special, search, end)
        if found < 0:
            break
        if any(a < found + len(special) and found < b for a, b in protected):
            search = found + 1  # inside user content: stays text
            continue
        if found > start:
            out.append((start, found))
        out.append(special_id)
        start = search = found + len(special)
    if start < end:
        out.append((start, end))
    return out
