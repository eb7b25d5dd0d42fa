"""Byte-level BPE (``tokenizer.ggml.model == "gpt2"``) as a HF ``tokenizers`` model.

How a piece of plain text becomes ids (GPT-2 scheme, as llama.cpp runs it):

    "Hello  world 42"
      | pre-tokenizer: the regexes of ``tokenizer.ggml.pre``, applied one after the other;
      |   each splits every piece further, keeping matches and the text between them
      v
    ["Hello", " ", " world", " ", "4", "2"]            (smollm: digits split one by one)
      | byte-level: every UTF-8 byte -> one printable character (space -> "Ġ", "\\n" -> "Ċ")
      v
    ["Hello", "Ġ", "Ġworld", "Ġ", "4", "2"]
      | BPE inside each piece: repeatedly merge the adjacent pair with the best (lowest)
      |   rank in ``tokenizer.ggml.merges``
      v
    ids

The regexes below are llama.cpp's (``llm_tokenizer_bpe`` in ``src/llama-vocab.cpp``),
because llama.cpp is the reference: for ``smollm`` it splits digits one by one before
the GPT-2 regex, which the model's own ``tokenizer.json``-based loaders do not.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from refllm.errors import UnsupportedModel
from refllm.tokenizer.vocab import LLAMA3_STYLE_PRE, Vocab

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEKKEN_REGEX = (
    r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+"
    r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# tokenizer.ggml.pre -> the regexes llama.cpp applies, in order.
PRE_TOKENIZER_REGEXES: dict[str, tuple[str, ...]] = {
    "default": (r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]"),
    **{name: (GPT2_REGEX,) for name in ("gpt-2", "phi-2", "mpt", "olmo", "mellum", "jina-es", "jina-de", "roberta-bpe",
                                        "exaone4")},
    **{name: (r"\p{N}", GPT2_REGEX) for name in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b")},
    **{name: (LLAMA3_REGEX,) for name in LLAMA3_STYLE_PRE - {"tekken"}},
    "tekken": (TEKKEN_REGEX,),
    "dbrx": (LLAMA3_REGEX,),
    "smaug-bpe": (LLAMA3_REGEX,),
    **{name: (QWEN2_REGEX,) for name in ("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez")},
}

# Pre-tokenizers llama.cpp runs with ``ignore_merges``: a piece that is itself a token is kept whole.
IGNORE_MERGES_PRE = LLAMA3_STYLE_PRE


def split_merge(merge: str) -> tuple[str, str] | None:
    """ "Ġ t" -> ("Ġ", "t"); the separator is the first space after the first character."""
    pos = merge.find(" ", 1)
    if pos < 0:
        return None
    return merge[:pos], merge[pos + 1 :]


def build_byte_level_bpe(vocab: Vocab) -> Tokenizer:
    """A HF tokenizer for the plain-text fragments of a gpt2 vocabulary (special tokens are split off before)."""
    regexes = PRE_TOKENIZER_REGEXES.get(vocab.pre)
    if regexes is None:
        known = ", ".join(sorted(PRE_TOKENIZER_REGEXES))
        raise UnsupportedModel(f"pre-tokenizer '{vocab.pre}' is not supported (known: {known})")

    # Keep merges whose parts and result are tokens (the only ones that can produce a token), first rank wins.
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for text in vocab.merges:
        pair = split_merge(text)
        if pair is None or pair in seen:
            continue
        left, right = pair
        if left in vocab.token_to_id and right in vocab.token_to_id and left + right in vocab.token_to_id:
            merges.append(pair)
            seen.add(pair)

    bpe = models.BPE(vocab.token_to_id, merges, ignore_merges=vocab.pre in IGNORE_MERGES_PRE)
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), behavior="isolated") for pattern in regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    return tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table: printable Latin-1 bytes map to themselves,
    the other 68 bytes (controls, space, ...) to U+0100 onwards, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table = {b: chr(b) for b in printable}
    next_code = 256
    for b in range(256):
        if b not in table:
            table[b] = chr(next_code)
            next_code += 1
    return table


UNICODE_TO_BYTE: dict[str, int] = {c: b for b, c in bytes_to_unicode().items()}


def byte_level_decode(text: str) -> bytes:
    """ "Ġworld" -> b" world": undo the byte -> character table."""
    out = bytearray()
    for ch in text:
        b = UNICODE_TO_BYTE.get(ch)
        if b is None:
            out += ch.encode("utf-8")  # not a byte-level character (llama.cpp prints [UNK_BYTE_...])
        else:
            out.append(b)
    return bytes(out)
