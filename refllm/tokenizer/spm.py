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

The loop, on "▁hello" with Gemma 3's real scores. The symbols sit in a linked list; a
max-heap holds every adjacent pair ("bigram") whose concatenation is a token, keyed by
that token's score, then by the pair's position (leftmost first):

    symbols                 pop (score)        pushed (the merged symbol's new pairs)
    [▁][h][e][l][l][o]      start              ▁h -40, he -5, el -41, ll -365, lo -350
    [▁][he][l][l][o]        he -5              ▁he -174, hel -3489
                            ▁h -40, el -41     stale: "h" / "e" are gone -> skip
    [▁he][l][l][o]          ▁he -174           ▁hel -900
    [▁he][l][lo]            lo -350            llo -174849
                            ll -365            stale: the right "l" is now "lo" -> skip
    [▁hel][lo]              ▁hel -900          ▁hello -28610
                            hel -3489          stale
    [▁hello]                ▁hello -28610      (no neighbours); llo: stale; heap empty

    -> "▁hello" is a token: [29104]

A popped pair is stale when either side has since merged into something else: llama.cpp
checks that both symbols still exist and still have the lengths the pair was pushed with.

No merge list is needed: two adjacent symbols can merge whenever their concatenation is
a token. A symbol is one character of the text or a token made by an earlier merge, and
the character need NOT be a token itself (a small vocabulary may hold "ll" and "ell" but
no "l"). So each final symbol is a token, or a single character that no merge took in.
llama.cpp's ``resegment`` splits a non-token symbol back along the merges that made it;
since merged symbols are always tokens, that only ever meets single characters, which it
writes as their UTF-8 bytes (``byte_to_token``: <0xXX>). Construction needs only the
vocabulary's text -> id dict and its scores, ranked once.

Long fragments (a 1 MB line): the loop costs ~4 us per character in Python and its lists
~120 bytes per character, so ``encode`` first cuts a long fragment between two characters
that sit next to each other in no token -- no merge can cross there, so the ids do not
change -- and merges the pieces (mostly single words) one by one, each distinct piece once:

    "▁The▁dog,▁(a▁cat)▁sat."  ->  ▁The | ▁dog | , | ▁( | a | ▁cat | ) | ▁sat | .

Measured (tools/bench_spm_tokenizer.py --huge, one-line English): 1M characters 3.9-8.7 s
and +122 MiB in one loop -> 0.24 s and +39 MiB cut; 16M: 130 s and +2 GB -> 2.9 s and +61 MiB.
A fragment with no such point (10^6 x "a") still goes through the loop in one piece (~3 s);
``generate`` refuses prompts too long for the context before they get here.

Gemma's user-defined tokens made of spaces ("   "), newlines and tabs never reach this
code: like llama.cpp, ``specials.py`` splits them off the raw text first, so they need
no re-spelling as "▁" runs.
"""

from __future__ import annotations

import heapq
from typing import Iterator

import numpy as np

from refllm.tokenizer.vocab import Vocab

SPACE_SYMBOL = "▁"  # U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's visible space


class SentencePieceBPE:
    """Encoder for already ▁-escaped fragments of a SentencePiece-style vocabulary."""

    def __init__(self, vocab: Vocab):
        self.token_to_id = vocab.token_to_id  # text -> id
        # rank[id]: 0 for the highest score, 1 for the next distinct score, ...; equal scores share a rank
        _, rank = np.unique(-vocab.scores.astype(np.float64), return_inverse=True)  # [n_vocab]
        self.rank: list[int] = rank.ravel().tolist()
        self.byte_ids = [_byte_token_id(vocab, byte) for byte in range(256)]  # byte -> id of <0xXX>
        self._token_pairs: np.ndarray | None = None  # built on the first long fragment: see token_pairs()

    def encode(self, fragment: str) -> list[int]:
        """Token ids of one ▁-escaped fragment: llama.cpp's merge loop, then byte fallback.

        A long fragment is first cut where no merge can ever cross (``safe_pieces``: mostly
        words) and each piece merged on its own: the same ids, in time and memory linear in
        its length. Pieces repeat ("▁the"), so each distinct one is merged once per call.
        """
        if len(fragment) <= LONG_FRAGMENT_CHARS:
            return self.merge(fragment)
        ids: list[int] = []
        merged: dict[str, list[int]] = {}  # piece -> its ids, for this fragment only
        for piece in self.safe_pieces(fragment):
            piece_ids = merged.get(piece)
            if piece_ids is None:
                if len(merged) >= MAX_REMEMBERED_PIECES:  # all distinct: keep memory bounded
                    merged.clear()
                piece_ids = merged[piece] = self.merge(piece)
            ids += piece_ids
        return ids

    def merge(self, fragment: str) -> list[int]:
        """llama.cpp's merge loop over the whole fragment at once, then byte fallback."""
        n = len(fragment)
        # Symbol i starts at character i and spans length[i] characters; a merge folds the right
        # symbol into the left one (its length becomes 0). prev/next_ link the live symbols.
        length = [1] * n
        prev = list(range(-1, n - 1))
        next_ = list(range(1, n)) + [-1]

        def bigram(left: int, right: int) -> int | None:
            """Heap key of merging symbols left and right, or None if their text is no token.

            One int that sorts like (rank of the merged token, left) and carries the pair's
            size: heapq pops the smallest, so the best score comes first and, among equal
            scores, the leftmost pair -- llama.cpp's order. (Ints compare ~2x faster than tuples.)
            """
            size = length[left] + length[right]
            token_id = self.token_to_id.get(fragment[left : left + size])
            if token_id is None:
                return None
            return (self.rank[token_id] * n + left) * (n + 1) + size

        heap = [key for left in range(n - 1) if (key := bigram(left, left + 1)) is not None]
        heapq.heapify(heap)
        while heap:
            rank_and_left, size = divmod(heapq.heappop(heap), n + 1)
            left = rank_and_left % n
            right = next_[left]
            # stale: left was merged away, or either side grew since the push (lengths only
            # grow, so they add up to the pushed size only if neither changed)
            if length[left] == 0 or right < 0 or length[left] + length[right] != size:
                continue
            length[left], length[right] = size, 0  # merge right into left ...
            next_[left] = next_[right]  # ... and unlink right
            if next_[left] >= 0:
                prev[next_[left]] = left
            for pair in ((prev[left], left), (left, next_[left])):  # the merged symbol's new neighbours
                if pair[0] >= 0 and pair[1] >= 0 and (key := bigram(*pair)) is not None:
                    heapq.heappush(heap, key)
        ids: list[int] = []
        symbol = 0 if n else -1
        while symbol >= 0:  # walk the final symbols left to right
            text = fragment[symbol : symbol + length[symbol]]
            token_id = self.token_to_id.get(text)
            if token_id is not None:
                ids.append(token_id)
            else:  # a single character that is not a token: its UTF-8 bytes
                ids += [self.byte_ids[byte] for byte in text.encode("utf-8")]
            symbol = next_[symbol]
        return ids

    # ------------------------------------------------------------------ long fragments

    def token_pairs(self) -> np.ndarray:
        """Every two neighbouring characters inside any token, as sorted ``pair_code``s.

        Built once, on the first long fragment (Gemma's 262k tokens: 34k pairs, ~0.05 s),
        so building the tokenizer (start-up) never pays for it.
        """
        if self._token_pairs is None:
            texts = list(self.token_to_id)  # exactly the texts a merge can produce
            lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))  # [n_vocab]
            chars = _code_points("".join(texts))  # [total characters]
            codes = pair_code(chars[:-1], chars[1:])  # [total - 1]: code i = chars i and i + 1
            starts = np.cumsum(lengths)[:-1]  # where tokens 1.. begin
            inside = np.ones(len(codes), dtype=bool)
            inside[starts[(starts > 0) & (starts <= len(codes))] - 1] = False  # a pair that runs into the next token
            codes = np.sort(codes[inside])  # (np.sort + a mask: ~20x faster than np.unique here)
            self._token_pairs = codes[np.append(True, codes[1:] != codes[:-1])]  # [n_pairs], sorted, distinct
        return self._token_pairs

    def safe_points(self, text: str) -> np.ndarray:
        """Positions i (0 < i < len(text)) where text[i-1] text[i] is no pair inside a token.

        No merge crosses such a point: every merged symbol is a token, so a symbol spanning
        it would be a token holding that pair. The merges on either side, and their order
        (by score, then position), are those of the whole fragment -> identical ids.

            Gemma 3:  "▁The▁dog,▁(a▁cat)"   no token holds "e▁", "g,", ",▁", "(a", "a▁" or "t)"
                       -> "▁The" "▁dog" "," "▁(" "a" "▁cat" ")"   merged one at a time
        """
        chars = _code_points(text)  # [n]
        codes = pair_code(chars[:-1], chars[1:])  # [n - 1]: code i = characters i and i + 1
        pairs = self.token_pairs()
        found = np.searchsorted(pairs, codes)  # [n - 1] index of the first pair >= code
        in_a_token = pairs[np.minimum(found, len(pairs) - 1)] == codes if len(pairs) else np.zeros(len(codes), bool)
        return np.flatnonzero(~in_a_token) + 1  # pair i sits between characters i and i + 1

    def safe_pieces(self, fragment: str) -> Iterator[str]:
        """The pieces of ``fragment`` between its safe points, left to right.

        A stretch without safe points (10^6 x "a") stays one piece. The safe points are
        looked up SAFE_POINT_WINDOW characters at a time, so the lookup's arrays stay small.
        """
        start = 0
        for window in range(0, len(fragment), SAFE_POINT_WINDOW):
            points = self.safe_points(fragment[window : window + SAFE_POINT_WINDOW + 1]) + window
            for point in points.tolist():
                yield fragment[start:point]
                start = point
        yield fragment[start:]


LONG_FRAGMENT_CHARS = 4096  # longer fragments are cut at safe points before merging
MAX_REMEMBERED_PIECES = 100_000  # distinct pieces whose ids one encode() call keeps for reuse
SAFE_POINT_WINDOW = 1 << 16  # characters looked up at once when finding safe points


def pair_code(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two code points (< 2^21) as one uint64, so pairs sort and compare as numbers."""
    return (first << np.uint64(21)) | second


def _code_points(text: str) -> np.ndarray:
    """[len(text)] uint64 code points (a lone surrogate too, unchanged)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)


def _byte_token_id(vocab: Vocab, byte: int) -> int:
    token_id = vocab.token_to_id.get(f"<0x{byte:02X}>", vocab.unk_id)
    return token_id if token_id is not None else 0


def escape_spaces(text: str) -> str:
    return text.replace(" ", SPACE_SYMBOL)


def unescape_spaces(text: str) -> str:
    return text.replace(SPACE_SYMBOL, " ")
