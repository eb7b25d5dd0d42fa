"""The vocabulary a GGUF file carries, read once into plain Python objects.

GGUF stores the tokenizer as metadata (llama.cpp's ``gguf-py`` writes it):

    tokenizer.ggml.model        "gpt2" (byte-level BPE) | "llama" (SentencePiece-style)
    tokenizer.ggml.pre          pre-tokenizer name for gpt2 vocabularies ("smollm", "llama-bpe", ...)
    tokenizer.ggml.tokens       [n_vocab] strings, the token texts (index = token id)
    tokenizer.ggml.token_type   [n_vocab] ints, see :class:`TokenType`
    tokenizer.ggml.scores       [n_vocab] floats (SentencePiece: higher merges first)
    tokenizer.ggml.merges       ["a b", ...] BPE merges, best first (gpt2 only)
    tokenizer.ggml.bos_token_id / eos_token_id / unknown_token_id / padding_token_id / eot_token_id
    tokenizer.ggml.add_bos_token / add_eos_token / add_space_prefix

Defaults and the end-of-generation set follow llama.cpp (``src/llama-vocab.cpp``),
which is the reference every tokenizer here is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from refllm.errors import UnsupportedModel


class TokenType(IntEnum):
    """``tokenizer.ggml.token_type`` values (llama.cpp's ``llama_token_type``)."""

    UNDEFINED = 0
    NORMAL = 1  # ordinary text piece
    UNKNOWN = 2  # <unk>
    CONTROL = 3  # <bos>, <|im_start|>, <end_of_turn>: never produced from plain text
    USER_DEFINED = 4  # added tokens matched verbatim in the text ("\n\n", "<div>", runs of spaces)
    UNUSED = 5
    BYTE = 6  # <0x0A>: SentencePiece byte fallback


# Token texts llama.cpp treats as "end of generation" (llama-vocab.cpp, special_eog_ids).
EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>",
})
# Texts llama.cpp takes as the end-of-turn token when the GGUF names none.
EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
             "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")


@dataclass
class Vocab:
    """Everything the tokenizer needs, copied out of the GGUF metadata."""

    model: str  # "gpt2" or "llama"
    pre: str  # pre-tokenizer name ("default" when absent)
    tokens: list[str]  # token id -> text as stored in the GGUF
    types: np.ndarray  # [n_vocab] int32 TokenType
    scores: np.ndarray  # [n_vocab] float32 (zeros when the GGUF has none)
    merges: list[str]  # gpt2 only: "left right", rank = index
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    eot_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    token_to_id: dict[str, int] = field(repr=False, default_factory=dict)
    eog_ids: frozenset[int] = frozenset()

    @property
    def size(self) -> int:
        return len(self.tokens)

    def is_special(self, token_id: int) -> bool:
        """Control and unknown tokens: rendered only when asked, matched only with parse_special."""
        return int(self.types[token_id]) in (TokenType.CONTROL, TokenType.UNKNOWN)


def _string_list(value: Any) -> list[str]:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _optional_id(metadata: dict, key: str, default: int | None, n_vocab: int) -> int | None:
    """A special token id, falling back like llama.cpp when absent or out of range."""
    if default is not None and default >= n_vocab:
        default = None
    value = metadata.get(key)
    if value is None:
        return default
    value = int(value)
    return value if 0 <= value < n_vocab else default


def vocab_from_gguf(gguf_file) -> Vocab:
    """Read the tokenizer metadata of a GGUF file; clear errors for what we can't handle."""
    md = gguf_file.metadata
    model = md.get("tokenizer.ggml.model")
    if model is None:
        raise UnsupportedModel(f"{gguf_file.path}: the GGUF has no tokenizer (tokenizer.ggml.model missing)")
    if model not in ("gpt2", "llama"):
        raise UnsupportedModel(f"{gguf_file.path}: tokenizer model '{model}' is not supported (supported: gpt2, llama)")
    if "tokenizer.ggml.tokens" not in md:
        raise UnsupportedModel(f"{gguf_file.path}: the GGUF has no vocabulary (tokenizer.ggml.tokens missing)")

    tokens = _string_list(md["tokenizer.ggml.tokens"])
    n_vocab = len(tokens)
    if n_vocab == 0:
        raise UnsupportedModel(f"{gguf_file.path}: the vocabulary is empty")
    # llama.cpp renames empty tokens so that every id keeps a unique text.
    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]

    types = np.full(n_vocab, TokenType.NORMAL, dtype=np.int32)
    if "tokenizer.ggml.token_type" in md:
        given = np.asarray(md["tokenizer.ggml.token_type"], dtype=np.int32)
        if given.shape[0] < n_vocab:
            raise UnsupportedModel(f"{gguf_file.path}: token_type has {given.shape[0]} entries for {n_vocab} tokens")
        types = given[:n_vocab].copy()
    scores = np.zeros(n_vocab, dtype=np.float32)
    if "tokenizer.ggml.scores" in md:
        given = np.asarray(md["tokenizer.ggml.scores"], dtype=np.float32)
        if given.shape[0] < n_vocab:
            raise UnsupportedModel(f"{gguf_file.path}: scores has {given.shape[0]} entries for {n_vocab} tokens")
        scores = given[:n_vocab]

    merges: list[str] = []
    pre = str(md.get("tokenizer.ggml.pre") or "default")
    if model == "gpt2":
        if "tokenizer.ggml.merges" not in md:
            raise UnsupportedModel(f"{gguf_file.path}: gpt2 tokenizer without tokenizer.ggml.merges")
        merges = _string_list(md["tokenizer.ggml.merges"])
        # llama.cpp: BOS = EOS = 11 by default, no BOS, no space prefix; llama3-style pre adds BOS.
        defaults = dict(bos=11, eos=11, unk=None, add_bos=pre in LLAMA3_STYLE_PRE, add_space_prefix=False)
    else:
        defaults = dict(bos=1, eos=2, unk=0, add_bos=True, add_space_prefix=True)

    token_to_id = dict(zip(tokens, range(n_vocab)))
    if len(token_to_id) < n_vocab:  # duplicates: llama.cpp refuses the file; we keep each text's first id
        token_to_id = {}
        for i, text in enumerate(tokens):
            token_to_id.setdefault(text, i)

    vocab = Vocab(
        model=model,
        pre=pre,
        tokens=tokens,
        types=types,
        scores=scores,
        merges=merges,
        bos_id=_optional_id(md, "tokenizer.ggml.bos_token_id", defaults["bos"], n_vocab),
        eos_id=_optional_id(md, "tokenizer.ggml.eos_token_id", defaults["eos"], n_vocab),
        unk_id=_optional_id(md, "tokenizer.ggml.unknown_token_id", defaults["unk"], n_vocab),
        pad_id=_optional_id(md, "tokenizer.ggml.padding_token_id", None, n_vocab),
        eot_id=_optional_id(md, "tokenizer.ggml.eot_token_id", None, n_vocab),
        add_bos=bool(md.get("tokenizer.ggml.add_bos_token", defaults["add_bos"])),
        add_eos=bool(md.get("tokenizer.ggml.add_eos_token", False)),
        add_space_prefix=bool(md.get("tokenizer.ggml.add_space_prefix", defaults["add_space_prefix"])),
        token_to_id=token_to_id,
    )
    if vocab.add_bos and vocab.bos_id is None:
        raise UnsupportedModel(f"{gguf_file.path}: add_bos_token is true but the GGUF names no BOS token")
    _find_end_of_generation(vocab)
    return vocab


def _find_end_of_generation(vocab: Vocab) -> None:
    """Mark end-of-turn tokens as control and collect every end-of-generation id (as llama.cpp does)."""
    if vocab.eot_id is None:
        for text in EOT_TEXTS:
            if text in vocab.token_to_id:
                vocab.eot_id = vocab.token_to_id[text]
                break
    eog = {vocab.token_to_id[text] for text in EOG_TEXTS if text in vocab.token_to_id}
    eog |= {i for i in (vocab.eos_id, vocab.eot_id) if i is not None}
    for token_id in eog:
        # llama.cpp adds the control flag to any end-of-generation token ("control-looking token ...
        # overridden"), so even a user-defined one (Gemma's "</s>") is then matched only with parse_special.
        vocab.types[token_id] = TokenType.CONTROL
    vocab.eog_ids = frozenset(eog)


# gpt2-vocabulary pre-tokenizer names llama.cpp maps to its LLAMA3 (and TEKKEN) type: BOS added, merges ignored
# for whole-word tokens.
LLAMA3_STYLE_PRE = frozenset({
    "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "tekken",
})
