"""What sampling costs per generated token, next to a forward pass.

    python -m pytest benchmarks/bench_sample.py --benchmark-enable -q

Vocabulary sizes of the two real models (SmolLM2 49152, Gemma 3 262144); option sets:
Ollama's defaults (top_k 40 first, so the rest of the chain sees 40 tokens), greedy,
nucleus over the whole vocabulary (top_k 0: a full sort), Mirostat 2 (a full sort), and
the logprobs of one token with its top 5 alternatives.
"""

from __future__ import annotations

import numpy as np
import pytest

from refllm.sample import Options, Sampler, token_logprob

VOCABS = {"smollm2": 49152, "gemma3": 262144}
OPTION_SETS = {
    "ollama-defaults": {"seed": 1},
    "greedy": {"temperature": 0},
    "top_p-full-vocab": {"top_k": 0, "top_p": 0.9, "seed": 1},
    "mirostat2": {"mirostat": 2, "seed": 1},
}


def fake_logits(n_vocab: int) -> np.ndarray:
    return (np.random.default_rng(0).normal(size=n_vocab) * 3).astype(np.float32)


@pytest.mark.parametrize("options", OPTION_SETS, ids=list(OPTION_SETS))
@pytest.mark.parametrize("vocab", VOCABS, ids=list(VOCABS))
def test_sample_one_token(benchmark, vocab, options):
    logits = fake_logits(VOCABS[vocab])
    sampler = Sampler(Options.from_dict(OPTION_SETS[options]), VOCABS[vocab])
    context = list(range(200))  # the penalties look at the last 64
    token = benchmark(sampler.sample, logits, context, 4096)
    assert 0 <= token < VOCABS[vocab]


@pytest.mark.parametrize("vocab", VOCABS, ids=list(VOCABS))
def test_logprob_with_top5(benchmark, vocab):
    logits = fake_logits(VOCABS[vocab])
    lp = benchmark(token_logprob, logits, 7, 5)
    assert len(lp.top_logprobs) == 5
