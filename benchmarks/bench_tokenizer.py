"""Tokenizer build time (targets: SmolLM2 <= 0.5 s, Gemma 3 <= 3 s) and encode/decode speed.

    python -m pytest benchmarks/bench_tokenizer.py --benchmark-enable -q

Build = GGUF metadata -> Vocab -> encoder (SmolLM2: HF tokenizers BPE; Gemma: refllm.tokenizer.spm, no build step).
Encode/decode run on ~100 kB of mixed text (the golden corpus repeated).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import refllm
from refllm.tokenizer import Tokenizer, vocab_from_gguf

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "tokens"
MODELS = ["smollm2", "gemma3"]


@pytest.fixture(scope="module")
def text() -> str:
    corpus = json.loads((GOLDEN / "smollm2.json").read_text(encoding="utf-8"))
    one = "\n".join(case["text"] for case in corpus["plain"])
    return (one * (100_000 // len(one) + 1))[:100_000]


@pytest.mark.parametrize("name", MODELS)
def test_build(benchmark, name):
    gguf = refllm.load(name).gguf
    tokenizer = benchmark.pedantic(lambda: Tokenizer(vocab_from_gguf(gguf)), rounds=3, iterations=1)
    assert tokenizer.vocab_size > 0


@pytest.mark.parametrize("name", MODELS)
def test_encode_100kB(benchmark, name, text):
    tokenizer = refllm.load(name).tokenizer
    ids = benchmark(tokenizer.encode, text, False, False)
    assert len(ids) > 10_000


@pytest.mark.parametrize("name", MODELS)
def test_decode_100kB(benchmark, name, text):
    tokenizer = refllm.load(name).tokenizer
    ids = tokenizer.encode(text, add_special=False)
    assert benchmark(tokenizer.decode, ids) == text
