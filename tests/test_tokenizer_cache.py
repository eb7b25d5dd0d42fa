"""The on-disk cache of SentencePiece merges (refllm/tokenizer/merge_cache.py).

Ids are checked against llama.cpp's (golden/tokens/gemma3.json, written by tools/make_golden.py)
with a cold cache, a warm one, a corrupt one and none at all. Every test points the cache at
its own tmp_path (``REFLLM_CACHE_DIR``), never at the user's real cache.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from refllm.gguf import read
from refllm.packaged_models import gemma3_path
from refllm.tokenizer import Tokenizer, spm, vocab_from_gguf
from refllm.tokenizer import merge_cache

from conftest import GOLDEN

N_SAMPLE = 80  # golden strings per check: enough scripts and spacing, cheap to encode


@pytest.fixture(scope="module")
def gemma_vocab():
    return vocab_from_gguf(read(gemma3_path()))


@pytest.fixture(scope="module")
def gemma_merges(gemma_vocab):
    return spm.derive_merges(gemma_vocab, spm.implicit_characters(gemma_vocab))


@pytest.fixture(scope="module")
def golden_sample():
    data = json.loads((GOLDEN / "tokens" / "gemma3.json").read_text(encoding="utf-8"))
    cases = data["plain"][: N_SAMPLE // 2] + data["fuzz"][: N_SAMPLE // 2]
    return [(case["text"], case["ids"]) for case in cases]


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("REFLLM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tokenizers"


def _mismatches(tokenizer: Tokenizer, sample) -> list:
    return [(text, ids) for text, ids in sample if tokenizer.encode(text, add_special=False) != ids]


def _cache_files(directory) -> list:
    return sorted(directory.glob("*.npz")) if directory.exists() else []


def _forbid_deriving(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("derive_merges ran although the cache holds the merges")

    monkeypatch.setattr(spm, "derive_merges", fail)


def test_cold_and_warm_cache_give_llama_cpp_ids(gemma_vocab, golden_sample, cache_root, monkeypatch):
    cold = Tokenizer(gemma_vocab)
    assert len(_cache_files(cache_root)) == 1  # the first build wrote its merges
    assert _mismatches(cold, golden_sample) == []

    _forbid_deriving(monkeypatch)  # the second build must read them, not derive again
    warm = Tokenizer(gemma_vocab)
    assert _mismatches(warm, golden_sample) == []
    assert not list(cache_root.glob("*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped byte", "empty"])
def test_damaged_cache_file_is_derived_again_and_rewritten(gemma_vocab, gemma_merges, golden_sample, cache_root, damage):
    key = merge_cache.cache_key(gemma_vocab)
    cache_root.mkdir(parents=True)
    path = cache_root / f"{key}.npz"
    good = gemma_merges
    merge_cache.save_merges(key, good)
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(b"not a numpy file at all" * 100)
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped byte":  # inside the merges array: the zip's CRC-32 must catch it
        data[len(data) // 2] ^= 0x01
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    n_symbols = gemma_vocab.size + len(spm.implicit_characters(gemma_vocab))
    assert merge_cache.load_merges(key, n_symbols) is None

    tokenizer = Tokenizer(gemma_vocab)
    assert _mismatches(tokenizer, golden_sample) == []
    rewritten = merge_cache.load_merges(key, n_symbols)
    assert rewritten is not None and np.array_equal(rewritten, good)


def test_cache_of_another_vocabulary_is_never_used(gemma_vocab, cache_root, tiny_model):
    tiny_vocab = vocab_from_gguf(read(tiny_model("gemma3")))
    assert tiny_vocab.model == "llama"
    Tokenizer(gemma_vocab)
    Tokenizer(tiny_vocab)
    gemma_key, tiny_key = merge_cache.cache_key(gemma_vocab), merge_cache.cache_key(tiny_vocab)
    assert gemma_key != tiny_key
    assert {p.stem for p in _cache_files(cache_root)} == {gemma_key, tiny_key}

    # Gemma's file under the tiny model's name: its stored key gives it away.
    (cache_root / f"{tiny_key}.npz").write_bytes((cache_root / f"{gemma_key}.npz").read_bytes())
    tiny_symbols = tiny_vocab.size + len(spm.implicit_characters(tiny_vocab))
    assert merge_cache.load_merges(tiny_key, tiny_symbols) is None
    rebuilt = Tokenizer(tiny_vocab)
    reference = Tokenizer(tiny_vocab)  # now from the rewritten, correct file
    for text in ("hello world", "the cat sat", "ab  cd\n"):
        assert rebuilt.encode(text) == reference.encode(text)


def test_key_changes_with_scores_tokens_and_code_version(gemma_vocab, monkeypatch):
    key = merge_cache.cache_key(gemma_vocab)
    scores = gemma_vocab.scores.copy()
    scores[1000] += 1.0
    assert merge_cache.cache_key(dataclasses.replace(gemma_vocab, scores=scores)) != key
    tokens = list(gemma_vocab.tokens)
    tokens[1000], tokens[1001] = tokens[1001], tokens[1000]
    assert merge_cache.cache_key(dataclasses.replace(gemma_vocab, tokens=tokens)) != key
    monkeypatch.setattr(merge_cache, "MERGES_FORMAT_VERSION", merge_cache.MERGES_FORMAT_VERSION + 1)
    assert merge_cache.cache_key(gemma_vocab) != key


def test_unwritable_cache_dir_still_tokenizes(gemma_vocab, golden_sample, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache directory would have to live inside this file")
    monkeypatch.setenv("REFLLM_CACHE_DIR", str(blocker))  # mkdir fails even for root
    tokenizer = Tokenizer(gemma_vocab)
    assert _mismatches(tokenizer, golden_sample) == []
    assert blocker.read_text().startswith("the cache directory")


def test_default_location_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("REFLLM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert merge_cache.cache_dir() == tmp_path / "refllm" / "tokenizers"
    monkeypatch.setenv("REFLLM_CACHE_DIR", str(tmp_path / "mine"))
    assert merge_cache.cache_dir() == tmp_path / "mine" / "tokenizers"
