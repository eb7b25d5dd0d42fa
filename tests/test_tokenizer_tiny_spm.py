"""SentencePiece-style tokenizer on a vocabulary without most single characters, against llama.cpp.

tools/make_tiny_models.py's gemma3 vocabulary (Gemma's controls, 256 byte tokens, the top-scored
Gemma pieces) has "ell" and "▁w" but no "e", "l" or "w": llama.cpp merges such characters anyway
(a symbol is a character or a token, see refllm/tokenizer/spm.py). Expected ids come from llama.cpp
(golden/tokens/tiny-gemma3.json, ``python tools/make_golden.py tokens --models tiny-gemma3``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from refllm.gguf import read
from refllm.tokenizer import Tokenizer, Vocab, tokenizer_from_gguf

from conftest import GOLDEN, load_tool
from test_tokenizer import _mismatches


@pytest.fixture(scope="module")
def golden():
    return json.loads((GOLDEN / "tokens" / "tiny-gemma3.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return tokenizer_from_gguf(read(tiny_model("gemma3")))


def test_golden_covers_the_tool_corpus(golden):
    tool = load_tool("make_golden")
    assert [c["text"] for c in golden["plain"]] == tool.tokenizer_corpus()
    assert [c["text"] for c in golden["fuzz"]] == tool.fuzz_corpus()
    assert [c["text"] for c in golden["special"]] == tool.special_corpus()


def test_vocabulary_lacks_characters_that_llama_cpp_merges(tokenizer):
    """The point of this vocabulary: merged pieces whose characters are not tokens."""
    assert tokenizer.token_id("ell") is not None
    assert all(tokenizer.token_id(c) is None for c in "elw")


def test_plain_text_ids_identical_to_llama_cpp(tokenizer, golden):
    assert _mismatches(tokenizer, golden["plain"], False, False) == []


def test_random_strings_identical_to_llama_cpp(tokenizer, golden):
    assert _mismatches(tokenizer, golden["fuzz"], False, False) == []


def test_parse_special_ids_identical_to_llama_cpp(tokenizer, golden):
    assert _mismatches(tokenizer, golden["special"], True, True) == []


def test_decode_identical_to_llama_cpp(tokenizer, golden):
    """Merged non-token characters and byte fallback decode as llama.cpp does ("detokenized" where != text)."""
    bad = [(c["text"], tokenizer.decode(c["ids"])) for c in golden["plain"] + golden["fuzz"]
           if tokenizer.decode(c["ids"]) != c.get("detokenized", c["text"])]
    assert bad == []


def test_unmerged_non_token_character_becomes_its_bytes():
    """Hand-made vocabulary: "ab" is a token, "a" and "b" are not; a lone "a" falls back to <0x61>."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["ab", "abc", "c"]
    types = np.array([2, 3, 3] + [6] * 256 + [1, 1, 1], dtype=np.int32)  # unknown, control, byte, normal
    scores = np.array([0.0] * 259 + [-1.0, -2.0, -3.0], dtype=np.float32)
    vocab = Vocab(model="llama", pre="default", tokens=tokens, types=types, scores=scores, merges=[],
                  bos_id=1, eos_id=2, unk_id=0, pad_id=None, eot_id=None, add_bos=True, add_eos=False,
                  add_space_prefix=False, token_to_id={t: i for i, t in enumerate(tokens)})
    tok = Tokenizer(vocab)
    ab, abc, c = tokens.index("ab"), tokens.index("abc"), tokens.index("c")
    byte = {ch: tokens.index(f"<0x{ord(ch):02X}>") for ch in "abz"}
    # llama.cpp's loop by hand: a+b -> ab (score -1), ab+c -> abc (score -2); leftovers -> bytes
    assert tok.encode("abc", add_special=False) == [abc]
    assert tok.encode("abab", add_special=False) == [ab, ab]
    assert tok.encode("ba", add_special=False) == [byte["b"], byte["a"]]
    assert tok.encode("acz", add_special=False) == [byte["a"], c, byte["z"]]
