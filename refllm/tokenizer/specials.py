"""Split text on special tokens before BPE (llama.cpp's ``tokenizer_st_partition``).

    "<|im_start|>user\\nHi<|im_end|>"   with parse_special=True
      -> [1, "user\\nHi", 2]            ids for the specials, strings for the text between

Which tokens are matched:
  * user-defined tokens (type 4: Gemma's "\\n\\n", "<div>", runs of spaces) always,
  * control and unknown tokens (type 3/2: "<|im_start|>", "<bos>") only with
    ``parse_special=True``. Plain user text containing "<|im_start|>" is then ordinary
    text, so nobody can inject a turn marker through a prompt.

Order matters when specials overlap: llama.cpp takes the longest special first and
splits every text fragment on all its occurrences, then the next longest, and so on.
"""

from __future__ import annotations

from refllm.tokenizer.vocab import TokenType, Vocab

Fragment = str | int  # plain text still to tokenize, or a finished special token id


class SpecialTokenSplitter:
    def __init__(self, vocab: Vocab):
        always = (TokenType.USER_DEFINED,)
        on_request = (TokenType.CONTROL, TokenType.UNKNOWN)
        by_length: list[tuple[int, str, int]] = []  # (utf-8 length, text, id)
        for token_id, (text, kind) in enumerate(zip(vocab.tokens, vocab.types.tolist())):
            if kind in always or kind in on_request:
                by_length.append((len(text.encode("utf-8")), text, token_id))
        by_length.sort(key=lambda item: (-item[0], item[2]))  # longest first
        self.always = [(text, i) for _, text, i in by_length if vocab.types[i] in always]
        self.all = [(text, i) for _, text, i in by_length]

    def split(self, text: str, parse_special: bool) -> list[Fragment]:
        specials = self.all if parse_special else self.always
        fragments: list[Fragment] = [text] if text else []
        for special_text, special_id in specials:
            if special_text not in text:  # cheap test on the whole text first
                continue
            fragments = [piece for fragment in fragments for piece in _split_one(fragment, special_text, special_id)]
        return fragments


def _split_one(fragment: Fragment, special_text: str, special_id: int) -> list[Fragment]:
    """Split one text fragment on every occurrence of one special token."""
    if not isinstance(fragment, str) or special_text not in fragment:
        return [fragment]
    pieces: list[Fragment] = []
    for i, part in enumerate(fragment.split(special_text)):
        if i:
            pieces.append(special_id)
        if part:
            pieces.append(part)
    return pieces
