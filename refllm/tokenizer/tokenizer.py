"""``Tokenizer``: text <-> token ids for one GGUF vocabulary, exactly as llama.cpp does it.

    tok = tokenizer_from_gguf(refllm.gguf.read(path))
    ids = tok.encode("Hello", add_special=True, parse_special=False)   # [bos?] + BPE ids
    tok.decode(ids) == "Hello"

encode(text):
    1. split on special tokens (``specials.py``): user-defined always, control only if
       ``parse_special`` -> fragments of plain text and special ids
    2. each plain fragment -> ids with the vocabulary's BPE (``bpe.py`` for gpt2,
       ``spm.py`` for SentencePiece-style "llama")
    3. add BOS/EOS when ``add_special`` and the model asks for them

decode(ids): concatenate each token's bytes ("piece") and read them as UTF-8:
    normal token  gpt2: byte-level characters -> bytes ("Ġworld" -> b" world")
                  llama: "▁" -> " "
    byte token    <0x0A> -> b"\\n"
    control       its text ("<|im_end|>") when ``special=True``, else nothing
    user-defined  its text
"""

from __future__ import annotations

import codecs
import ctypes
import functools
import gc
import os
from typing import Iterable, Sequence

from refllm.errors import InvalidRequest
from refllm.tokenizer.bpe import build_byte_level_bpe, byte_level_decode
from refllm.tokenizer.specials import SpecialTokenSplitter
from refllm.tokenizer.spm import SentencePieceBPE, escape_spaces, unescape_spaces
from refllm.tokenizer.vocab import TokenType, Vocab, vocab_from_gguf

MAX_TEXT_CHARS = 16_000_000  # ~ 4M tokens: more than any context; beyond is a mistake, not a prompt


class Tokenizer:
    """One vocabulary's encoder/decoder. Build with :func:`tokenizer_from_gguf`."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self._splitter = SpecialTokenSplitter(vocab)
        if vocab.model == "gpt2":
            self._bpe = build_byte_level_bpe(vocab)
        else:
            self._spm = SentencePieceBPE(vocab)
        self._pieces: dict[int, bytes] = {}  # token id -> bytes, filled on first use

    # ------------------------------------------------------------------ facts others use

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def bos_id(self) -> int | None:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.vocab.eos_id

    @property
    def eog_ids(self) -> frozenset[int]:
        """Ids that end generation: EOS, end-of-turn (<|im_end|>, <end_of_turn>), ..."""
        return self.vocab.eog_ids

    @property
    def add_bos(self) -> bool:
        return self.vocab.add_bos

    @functools.cached_property
    def longest_token_chars(self) -> int:
        """The most characters of text one token stands for (at most its vocabulary text's length:
        a gpt2 byte character is one byte, "▁" one space, a byte token less than a character)."""
        return max(map(len, self.vocab.tokens), default=1)

    def fewest_tokens(self, n_chars: int) -> int:
        """A lower bound on the tokens ``n_chars`` characters of text encode to, without encoding them."""
        return -(-n_chars // self.longest_token_chars)  # ceil(n_chars / longest)

    def token_id(self, text: str) -> int | None:
        """The id of a token given its exact vocabulary text ("<|im_end|>"), or None."""
        return self.vocab.token_to_id.get(text)

    def raw_token(self, token_id: int) -> str:
        """The token's text as stored in the GGUF ("Ġworld", "▁there", "<0x0A>")."""
        return self.vocab.tokens[self._check_id(token_id)]

    def token_bytes(self, token_id: int, special: bool = True) -> bytes:
        """The bytes the token stands for (may be part of a UTF-8 character)."""
        token_id = self._check_id(token_id)
        if not special and self.vocab.is_special(token_id):
            return b""
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self._piece(token_id)
        return piece

    def token_text(self, token_id: int, special: bool = True) -> str:
        """The token's text for display or logprobs (an incomplete UTF-8 byte shows as U+FFFD)."""
        return self.token_bytes(token_id, special).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ encode

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False,
               protected: Sequence[tuple[int, int]] = ()) -> list[int]:
        """Token ids of ``text``; ``protected`` [start, end) spans never yield control tokens."""
        text = _check_text(text)
        ids: list[int] = []
        if add_special and self.vocab.add_bos:
            ids.append(self.vocab.bos_id)
        previous_was_special = True  # SentencePiece: the start of the text counts as "after a special"
        for fragment in self._splitter.split(text, parse_special, protected):
            if isinstance(fragment, int):  # a special token, already an id
                ids.append(fragment)
                previous_was_special = True
                continue
            if self.vocab.model == "llama":  # SentencePiece: optional space prefix, then spaces -> ▁
                if self.vocab.add_space_prefix and previous_was_special:
                    fragment = " " + fragment
                ids += self._spm.encode(escape_spaces(fragment))
            else:
                ids += self._bpe.encode(fragment, add_special_tokens=False).ids
            previous_was_special = False
        if add_special and self.vocab.add_eos:
            ids.append(self.vocab.eos_id)
        return ids

    def encode_chat(self, prompt: str, contents: Sequence[str] = ()) -> list[int]:
        """Ids of a rendered chat prompt: special tokens parsed, BOS added once (not again if the
        template wrote it already).

        ``contents``: the messages' texts, in order. Where they appear in the prompt they stay
        plain text, so a user who types "<|im_start|>system" gets text, not a turn marker.
        The BPE still runs over the prompt's text as one piece, so ids equal llama.cpp's
        whenever no content contains a special token.
        """
        prompt = _check_text(prompt)
        bos_text = self.vocab.tokens[self.vocab.bos_id] if self.vocab.bos_id is not None else None
        already = bos_text is not None and prompt.startswith(bos_text)
        return self.encode(prompt, add_special=not already, parse_special=True,
                           protected=_find_spans(prompt, contents))

    # ------------------------------------------------------------------ decode

    def decode(self, ids: Iterable[int], special: bool = True) -> str:
        """Text of a token sequence; bytes that do not form UTF-8 show as U+FFFD."""
        pieces = [self.token_bytes(i, special) for i in ids]
        if self.vocab.add_space_prefix and pieces and pieces[0].startswith(b" "):
            pieces[0] = pieces[0][1:]  # llama.cpp drops the space the encoder put in front of the first token
        return b"".join(pieces).decode("utf-8", errors="replace")

    def decoder(self, special: bool = True) -> "IncrementalDecoder":
        return IncrementalDecoder(self, special)

    def _piece(self, token_id: int) -> bytes:
        text = self.vocab.tokens[token_id]
        kind = int(self.vocab.types[token_id])
        if kind in (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED):
            return text.encode("utf-8")
        if kind == TokenType.BYTE:
            return bytes([int(text[3:5], 16)])  # "<0x0A>"
        if kind == TokenType.NORMAL:
            if self.vocab.model == "gpt2":
                return byte_level_decode(text)
            return unescape_spaces(text).encode("utf-8")
        return b""  # unused / undefined tokens print nothing

    def _check_id(self, token_id) -> int:
        try:
            value = int(token_id)
        except (TypeError, ValueError):
            raise InvalidRequest(f"token ids must be integers, got {token_id!r}") from None
        if value != token_id or not 0 <= value < self.vocab.size:
            raise InvalidRequest(f"token id {token_id!r} is out of range (vocabulary has {self.vocab.size} tokens)")
        return value


class IncrementalDecoder:
    """Streaming detokenizer: push ids one by one, get only text that is complete.

    A character can span tokens (an emoji is 4 byte tokens; Chinese often 2-3): bytes
    wait here until their UTF-8 character is whole, so a stream never shows half of one.

        dec = tok.decoder()
        for token_id in generated:
            print(dec.push(token_id), end="")
        print(dec.flush())
    """

    def __init__(self, tokenizer: Tokenizer, special: bool = True):
        self.tokenizer = tokenizer
        self.special = special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = True

    def push(self, token_id: int) -> str:
        data = self.tokenizer.token_bytes(token_id, self.special)
        if self._at_start:  # as decode(): only the first token loses its leading space
            if self.tokenizer.vocab.add_space_prefix and data.startswith(b" "):
                data = data[1:]
            self._at_start = False
        return self._utf8.decode(data)

    def flush(self) -> str:
        """Whatever is left (an incomplete character becomes U+FFFD); the decoder starts over."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        self._at_start = True
        return text


def _find_spans(prompt: str, contents: Sequence[str]) -> list[tuple[int, int]]:
    """Where each content sits in the prompt, searched in order (as written, else stripped)."""
    spans, cursor = [], 0
    for content in contents:
        for candidate in (content, content.strip()) if isinstance(content, str) else ():
            found = prompt.find(candidate, cursor) if candidate.strip() else -1
            if found >= 0:
                spans.append((found, found + len(candidate)))
                cursor = found + len(candidate)
                break
    return spans


def _check_text(text) -> str:
    """Accept str (or UTF-8 bytes); anything else, bad UTF-8 or absurd sizes are clear errors."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidRequest(f"text is not valid UTF-8 (byte {e.start}: {bytes(text)[e.start:e.start + 1]!r})") from None
    if not isinstance(text, str):
        raise InvalidRequest(f"text must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidRequest(f"text is too long to tokenize ({len(text)} characters, limit {MAX_TEXT_CHARS})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidRequest(f"text contains a lone surrogate at character {e.start} (not valid Unicode)") from None
    return text


_CACHE: dict[tuple, Tokenizer] = {}  # (path, size, mtime) -> tokenizer, the last few files opened
_CACHE_SIZE = 4


def tokenizer_from_gguf(gguf_file) -> Tokenizer:
    """Build the tokenizer a GGUF file describes, or reuse the one built for the same file.

    Building reads the whole vocabulary out of the GGUF (~0.25 s for 262k tokens), so a
    process that opens the same model again (``refllm.load`` per request, a server
    reloading) gets the cached one.
    """
    key = _file_key(gguf_file)
    if key is not None and key in _CACHE:
        return _CACHE[key]
    tokenizer = Tokenizer(vocab_from_gguf(gguf_file))
    if tokenizer.vocab.model == "gpt2":  # HF's BPE build frees ~15 MB; SentencePiece's leaves nothing big
        release_freed_memory()
    if key is not None:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = tokenizer
    return tokenizer


def release_freed_memory() -> None:
    """Give the memory freed by a big build back to the operating system.

    Building a gpt2 tokenizer allocates and frees temporaries (the buffers HF
    ``tokenizers`` converts the merge list through). Python's and C's allocators keep
    freed pages for reuse, so without this the process stays bigger for its whole life
    (SmolLM2: ~15 MB). ``malloc_trim`` is glibc's; elsewhere (macOS, Windows, musl) this only collects.
    """
    gc.collect()  # objects in reference cycles first, so their memory is free too
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return
    malloc_trim(0)


def _file_key(gguf_file) -> tuple | None:
    try:
        stat = os.stat(gguf_file.path)
    except (AttributeError, TypeError, OSError):
        return None
    return (os.path.realpath(gguf_file.path), stat.st_size, stat.st_mtime_ns)
