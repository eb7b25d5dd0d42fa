"""``Model.generate`` on the real SmolLM2, checked against llama.cpp's golden data.

tests/test_golden_logits.py checks the forward pass (teacher-forced, batched). Here the
generation path itself runs: chat template -> prefill -> token-by-token decode through the
KV cache -> sampler -> streaming text, and must reproduce llama.cpp's greedy continuation.
The model is loaded once; one ``Session`` keeps its cache so later tests re-evaluate little.
"""

from __future__ import annotations

import numpy as np
import pytest

import refllm
from refllm.errors import InvalidRequest
from refllm.generate import GenerationResult, Session

from conftest import GOLDEN

PROMPT = 5  # golden prompt number
N_GREEDY = 12  # tokens compared with llama.cpp's greedy continuation
GREEDY = dict(temperature=0, repeat_penalty=1.0)  # llama.cpp's greedy: argmax of the raw logits


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    return refllm.load(smollm2_gguf)  # the default backend, as users get it


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN / "logits" / "smollm2.llamacpp.npz")


@pytest.fixture(scope="module")
def session():
    return Session()


@pytest.fixture(scope="module")
def greedy_stream(smollm2, golden, session):
    """One streamed greedy generation from golden prompt 5 ("1, 2, 3, 4, 5, 6, 7, 8,").

    (Its top-2 logit margins are wide, > 1.9 nats, so the comparison tests the generation
    path, not the last bits of the forward pass: test_golden_logits.py does that.)
    """
    ids = golden[f"p{PROMPT}_ids"].tolist()
    events = list(smollm2.generate(ids, stream=True, num_predict=N_GREEDY, session=session, logprobs=True, top_logprobs=3, **GREEDY))
    return ids, events[:-1], events[-1]


def test_greedy_generation_reproduces_llama_cpp(greedy_stream, golden):
    _, _, result = greedy_stream
    assert result.tokens == golden[f"p{PROMPT}_greedy"][:N_GREEDY].tolist()
    assert result.done_reason == "length" and result.eval_count == N_GREEDY


def test_streamed_pieces_add_up_to_the_text(greedy_stream, smollm2, golden):
    _, chunks, result = greedy_stream
    assert isinstance(result, GenerationResult)
    assert "".join(chunks) == result.text == smollm2.detokenize(golden[f"p{PROMPT}_greedy"][:N_GREEDY])
    assert [t for c in chunks for t in c.token_ids] == result.tokens


def test_logprobs_agree_with_the_references(greedy_stream, golden):
    """The first token's logprob and top alternatives: ranking as llama.cpp's, values as HF
    transformers' float32 log-softmax (llama.cpp's own values differ by up to ~0.2 nats on
    unlikely tokens: it rounds activations to 8 bits)."""
    _, _, result = greedy_stream
    hf = np.load(GOLDEN / "logits" / "smollm2.hf.npz")
    llama_ids = golden[f"p{PROMPT}_topk_ids"][-1]  # at the last prompt position
    hf_ids, hf_logprobs = hf[f"p{PROMPT}_topk_ids"][-1], hf[f"p{PROMPT}_topk_logprobs"][-1]
    first = result.logprobs[0]
    assert first.token_id == llama_ids[0] == hf_ids[0] and first.token == " "
    assert [t.token_id for t in first.top_logprobs] == llama_ids[:3].tolist() == hf_ids[:3].tolist()
    assert first.logprob == pytest.approx(float(hf_logprobs[0]), abs=1e-3)
    assert [t.logprob for t in first.top_logprobs] == pytest.approx(hf_logprobs[:3].astype(float).tolist(), abs=1e-3)


def test_stop_sequence_across_tokens_is_never_emitted(greedy_stream, smollm2, session):
    ids, _, greedy = greedy_stream
    pieces = [smollm2.detokenize([t]) for t in greedy.tokens]
    boundary = len("".join(pieces[:3]))  # between the 3rd and 4th generated tokens
    stop = greedy.text[boundary - 2 : boundary + 2]
    expected = greedy.text[: greedy.text.index(stop)]
    events = list(smollm2.generate(ids, stream=True, stop=[stop], num_predict=N_GREEDY, session=session, **GREEDY))
    streamed = "".join(events[:-1])
    assert streamed == events[-1].text == expected
    assert events[-1].done_reason == "stop" and events[-1].cached_count == len(ids) - 1  # the session's cache was reused


def test_same_seed_same_text(smollm2, golden, session):
    ids = golden[f"p{PROMPT}_ids"].tolist()
    opts = dict(temperature=3.0, top_k=0, top_p=1.0, num_predict=4, session=session)  # a flat distribution
    first = smollm2.generate(ids, seed=1234, **opts)
    assert smollm2.generate(ids, seed=1234, **opts).tokens == first.tokens
    assert smollm2.generate(ids, seed=1, **opts).tokens != first.tokens


def test_chat_messages_apply_the_template_and_match_llama_cpp(smollm2, golden):
    # golden prompt 8 is SmolLM2's chat format written out, default system message included
    messages = [{"role": "user", "content": "What is the largest planet in the solar system?"}]
    result = smollm2.generate(messages, num_predict=6, **GREEDY)
    assert result.prompt_tokens == golden["p8_ids"].tolist()
    assert result.tokens == golden["p8_greedy"][:6].tolist()


def test_closing_the_stream_leaves_the_session_usable(smollm2, golden, session):
    ids = golden[f"p{PROMPT}_ids"].tolist()
    stream = smollm2.generate(ids, stream=True, num_predict=N_GREEDY, session=session, **GREEDY)
    next(stream)
    stream.close()
    assert session.cache.n_past == len(session.tokens) < len(ids) + N_GREEDY
    again = smollm2.generate(ids, num_predict=2, session=session, **GREEDY)
    assert again.tokens == golden[f"p{PROMPT}_greedy"][:2].tolist()


def test_prompt_longer_than_num_ctx_is_rejected(smollm2, golden):
    ids = golden["p1_ids"].tolist()  # 15 tokens
    with pytest.raises(InvalidRequest, match=r"15 tokens.*is 10"):
        smollm2.generate(ids, num_ctx=10)


def test_end_of_turn_token_from_metadata_ends_the_answer(smollm2):
    # SmolLM2 closes its turn with <|im_end|>, an end-of-generation id read from the GGUF
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Reply with one word: yes or no?"}]
    result = smollm2.generate(messages, num_predict=30, **GREEDY)
    assert result.done_reason == "stop" and result.eval_count == len(result.tokens) + 1 < 30
    assert "<|im_end|>" not in result.text and result.text.strip()
    assert not set(result.tokens) & smollm2.tokenizer.eog_ids


def test_gemma3_chat_uses_its_built_in_template_and_matches_llama_cpp(gemma3_gguf):
    # Gemma 3's GGUF has no chat template: the built-in Gemma one must give llama.cpp's prompt
    # ids for the same conversation written out by hand, and the same greedy tokens.
    golden_gemma = np.load(GOLDEN / "logits" / "gemma3.llamacpp.npz")
    model = refllm.load(gemma3_gguf)
    messages = [{"role": "user", "content": "What is the largest planet in the solar system?"}]
    result = model.generate(messages, num_predict=4, **GREEDY)
    assert result.prompt_tokens == golden_gemma["p8_ids"].tolist()
    assert result.tokens == golden_gemma["p8_greedy"][:4].tolist()
