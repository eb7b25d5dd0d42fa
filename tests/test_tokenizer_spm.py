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

import refllm.tokenizer.spm as spm_module
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


# ----------------------------------------------------------------------------- long fragments: cut at safe points


@pytest.fixture
def always_cut(monkeypatch):
    """Every fragment, however short, goes through the safe-point cutting (spm.encode's long path)."""
    monkeypatch.setattr(spm_module, "LONG_FRAGMENT_CHARS", 0)


@pytest.fixture(scope="module")
def gemma_tokenizer(gemma_vocab) -> Tokenizer:
    return Tokenizer(gemma_vocab)


def test_cut_fragments_identical_to_llama_cpp(always_cut, gemma_vocab, golden):
    """The same llama.cpp ids when each fragment is cut at its safe points and merged piece by piece."""
    flat = dataclasses.replace(gemma_vocab, scores=np.zeros(gemma_vocab.size, dtype=np.float32))
    assert _mismatches(Tokenizer(gemma_vocab), golden["long"]) == []
    assert _mismatches(Tokenizer(flat), golden["flat_scores"]) == []


def test_cut_fragments_identical_to_llama_cpp_tiny_vocabulary(always_cut, tiny_model, golden):
    assert _mismatches(tokenizer_from_gguf(read(tiny_model("gemma3"))), golden["tiny"]) == []


def test_cut_fragments_identical_to_llama_cpp_tokenizer_corpus(always_cut, gemma_vocab):
    """golden/tokens/gemma3.json (test_tokenizer.py's corpus): plain text, random strings, specials parsed."""
    cases = json.loads((GOLDEN / "tokens" / "gemma3.json").read_text(encoding="utf-8"))
    tokenizer = Tokenizer(gemma_vocab)
    for kind, special in (("plain", False), ("fuzz", False), ("special", True)):
        bad = [c["text"][:60] for c in cases[kind] if tokenizer.encode(c["text"], special, special) != c["ids"]]
        assert bad == [], kind
    assert [c["text"][:60] for c in cases["fuzz"] if tokenizer.encode(c["text"], True, True) != c["ids_special"]] == []


def _adversarial_texts(tokenizer: Tokenizer) -> dict[str, str]:
    """One-fragment texts over LONG_FRAGMENT_CHARS, where cutting could go wrong if it were not exact."""
    rng = np.random.default_rng(0)
    tokens = [t for t in tokenizer.vocab.tokens[1000:60000] if not t.startswith("<")]
    golden_long = json.loads((GOLDEN / "tokens" / "gemma3_spm.json").read_text(encoding="utf-8"))["long"]
    return {
        "one character": "a" * 6000,  # "aa" is inside tokens: no safe point at all
        "two characters": "ab" * 3000,
        "spaces": " " * 5000,  # -> "▁" x 5000 ("▁▁" is in no token: a safe point everywhere)
        "spaces between words": "word " * 1200 + "x" + "  " * 1000,
        "CJK": "天空之所以是蓝色的，是因为空气对短波长的阳光散射得更多。" * 200,
        "Japanese and emoji": "日没のとき、光は😀🙂より多くの空気を通過し" * 250,
        "token soup": "".join(rng.choice(tokens, 3000)),  # tokens glued together: pieces straddle them
        "character soup": "".join(rng.choice(list("ab ▁.,(e1"), 8000)),
        "golden texts on one line": " ".join(c["text"] for c in golden_long).replace("\n", " "),
    }


def test_cut_fragments_identical_to_one_merge_loop(gemma_tokenizer):
    """Cut-then-merge against the whole fragment through one merge loop (itself checked against llama.cpp above)."""
    spm = gemma_tokenizer._spm
    for name, text in _adversarial_texts(gemma_tokenizer).items():
        fragment = " " + text.replace(" ", "▁")
        assert len(fragment) > spm_module.LONG_FRAGMENT_CHARS, name
        assert spm.encode(fragment) == spm.merge(fragment), name
        assert "".join(spm.safe_pieces(fragment)) == fragment, name


def test_safe_points_are_where_no_token_holds_the_pair(gemma_tokenizer):
    """Checked against the vocabulary's texts directly, on characters that are, and are not, inside tokens."""
    spm = gemma_tokenizer._spm
    texts = [t for t in gemma_tokenizer.vocab.tokens if len(t) > 1]
    text = "▁The▁dog,▁(a▁cat)▁sat▁on▁the▁mat…▁天空之所以😀▁x=1+2;aaaa"
    in_a_token = {text[i - 1 : i + 1] for i in range(1, len(text)) if any(text[i - 1 : i + 1] in t for t in texts)}
    expected = [i for i in range(1, len(text)) if text[i - 1 : i + 1] not in in_a_token]
    assert spm.safe_points(text).tolist() == expected
    assert spm.safe_points("aaaaaaaa").tolist() == []


def test_pair_table_is_built_only_for_long_fragments(gemma_vocab):
    """Start-up never pays for the safe-point table: building the tokenizer and short texts leave it unbuilt."""
    tokenizer = Tokenizer(gemma_vocab)
    tokenizer.encode("Why is the sky blue? " * 100)
    assert tokenizer._spm._token_pairs is None
    tokenizer.encode("Why is the sky blue? " * 300)  # one 6300-character fragment
    assert tokenizer._spm._token_pairs is not None
