"""refllm/tokenizer/spm.py (llama.cpp's SentencePiece merge loop) against llama.cpp on what the short
corpus of test_tokenizer.py does not reach: long texts, a vocabulary whose scores all tie, and the
tiny vocabulary where most characters are not tokens.

Expected ids: golden/tokens/gemma3_spm.json (``python tools/make_golden.py spm``, llama.cpp via
llama-cpp-python).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from refllm.gguf import read
from refllm.tokenizer import Tokenizer, Vocab, tokenizer_from_gguf, vocab_from_gguf

from conftest import GOLDEN, load_tool


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDEN / "tokens" / "gemma3_spm.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def gemma_vocab(gemma3_gguf) -> Vocab:
    return vocab_from_gguf(read(gemma3_gguf))


def _mismatches(tokenizer: Tokenizer, cases: list[dict]) -> list[str]:
    return [case["text"][:60] for case in cases if tokenizer.encode(case["text"], add_special=False) != case["ids"]]


def test_golden_covers_the_tool_texts(golden):
    tool = load_tool("golden_spm")
    texts = tool.long_texts()
    assert [c["text"] for c in golden["long"]] == texts
    assert [c["text"] for c in golden["tiny"]] == texts
    assert [c["text"] for c in golden["flat_scores"]] == load_tool("make_golden").tokenizer_corpus() + texts


def test_long_texts_identical_to_llama_cpp(gemma_vocab, golden):
    """1-2 kB of prose, CJK, code, emoji, whitespace runs and characters Gemma lacks (bytes)."""
    assert _mismatches(Tokenizer(gemma_vocab), golden["long"]) == []


def test_equal_scores_tie_break_by_position_like_llama_cpp(gemma_vocab, golden):
    """Every score 0.0 (a GGUF without scores): each merge ties, the leftmost pair goes first."""
    flat = dataclasses.replace(gemma_vocab, scores=np.zeros(gemma_vocab.size, dtype=np.float32))
    assert _mismatches(Tokenizer(flat), golden["flat_scores"]) == []


def test_tiny_vocabulary_long_texts_identical_to_llama_cpp(tiny_model, golden):
    """Merges through characters that are not tokens, and byte fallback, over long texts."""
    assert _mismatches(tokenizer_from_gguf(read(tiny_model("gemma3"))), golden["tiny"]) == []


def _hand_made_vocab(pieces: list[str], scores: list[float]) -> Vocab:
    """<unk> <s> </s>, the 256 byte tokens (score 0), then ``pieces`` with their ``scores``."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = np.array([2, 3, 3] + [6] * 256 + [1] * len(pieces), dtype=np.int32)  # unknown, control, byte, normal
    return Vocab(model="llama", pre="default", tokens=tokens, types=types,
                 scores=np.array([0.0] * 259 + scores, dtype=np.float32), merges=[], bos_id=1, eos_id=2,
                 unk_id=0, pad_id=None, eot_id=None, add_bos=True, add_eos=False, add_space_prefix=False,
                 token_to_id={t: i for i, t in enumerate(tokens)})


def test_equal_scores_leftmost_pair_wins_not_the_lower_id():
    """llama.cpp's heap: equal scores -> the pair further left, whatever the ids ("bc" has the lower id)."""
    tokenizer = Tokenizer(_hand_made_vocab(["bc", "ab", "c", "a"], [-1.0, -1.0, -5.0, -5.0]))
    bc, ab, c, a = (tokenizer.token_id(t) for t in ("bc", "ab", "c", "a"))
    assert tokenizer.encode("abc", add_special=False) == [ab, c]
    assert tokenizer.encode("aabc", add_special=False) == [a, ab, c]
    byte_b = tokenizer.token_id("<0x62>")
    assert tokenizer.encode("bcab", add_special=False) == [bc, ab]
    assert tokenizer.encode("b", add_special=False) == [byte_b]


def test_stale_pairs_are_skipped():
    """"xyz": "yz" (-1) merges first, so "xy" (-2), pushed at the start, is stale; "xyz" comes from x + yz."""
    tokenizer = Tokenizer(_hand_made_vocab(["yz", "xy", "xyz", "xyzz"], [-1.0, -2.0, -3.0, -4.0]))
    xyz, xy = tokenizer.token_id("xyz"), tokenizer.token_id("xy")
    byte = {ch: tokenizer.token_id(f"<0x{ord(ch):02X}>") for ch in "xyz"}
    assert tokenizer.encode("xyz", add_special=False) == [xyz]
    assert tokenizer.encode("xyx", add_special=False) == [xy, byte["x"]]
    assert tokenizer.encode("zxy", add_special=False) == [byte["z"], xy]


def test_empty_and_one_character_fragments():
    tokenizer = Tokenizer(_hand_made_vocab(["ab", "é"], [-1.0, -2.0]))
    assert tokenizer.encode("", add_special=False) == []
    assert tokenizer.encode("é", add_special=False) == [tokenizer.token_id("é")]
    assert tokenizer.encode("ü", add_special=False) == [tokenizer.token_id("<0xC3>"), tokenizer.token_id("<0xBC>")]
