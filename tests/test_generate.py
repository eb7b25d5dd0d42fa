"""The generation loop (refllm.generate) against a small fake model whose logits we choose.

A fake model lets each test decide exactly which token comes next, so stop sequences,
end-of-generation, context limits, cache reuse and cancellation are checked by construction.
The real-model checks (greedy == llama.cpp) live in tests/test_generate_real.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from refllm.errors import InvalidRequest, UnsupportedModel
from refllm.generate import Chunk, GenerationResult, Session, generate
from refllm.sample.samplers import log_softmax

VOCAB = ["<s>", "</s>", "a", "b", "c", " ", "<", "end", ">", b"\xc3", b"\xa9", "<|user|>", "<|assistant|>", "<|system|>", "\n"]
BOS, EOS = 0, 1
ID = {t: i for i, t in enumerate(VOCAB) if isinstance(t, str)}


class FakeTokenizer:
    bos_id, eos_id = BOS, EOS
    eog_ids = {EOS}

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        ids = [BOS] if add_special else []
        by_length = sorted(ID, key=len, reverse=True)
        while text:
            piece = next(p for p in by_length if text.startswith(p) and (parse_special or not p.startswith("<")) or len(p) == 1 and text.startswith(p))
            ids.append(ID[piece])
            text = text[len(piece) :]
        return ids

    def decode(self, ids) -> str:
        data = b"".join(VOCAB[i] if isinstance(VOCAB[i], bytes) else VOCAB[i].encode() for i in ids if i not in (BOS, EOS))
        return data.decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return VOCAB[token_id] if isinstance(VOCAB[token_id], bytes) else VOCAB[token_id].encode()

    def decoder(self):
        return FakeDecoder(self)

    def encode_chat(self, prompt: str, contents=()) -> list[int]:
        return self.encode(prompt, add_special=True, parse_special=True)


class FakeDecoder:
    def __init__(self, tokenizer: FakeTokenizer):
        self.tokenizer, self.ids, self.emitted = tokenizer, [], 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        new, self.emitted = text[self.emitted :], len(text)
        return new

    def flush(self) -> str:
        return self.tokenizer.decode(self.ids)[self.emitted :]


class FakeTemplate:
    def render(self, messages, add_generation_prompt=True) -> str:
        return "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages) + ("<|assistant|>" if add_generation_prompt else "")


class FakeCache:
    def __init__(self, n_ctx: int):
        self.n_ctx, self.n_past = n_ctx, 0

    def truncate(self, n_tokens: int) -> None:
        assert 0 <= n_tokens <= self.n_past
        self.n_past = n_tokens


class FakeModel:
    """Logits depend only on the position: ``script[position - prompt_length]`` gets a logit of 20,
    or, without a script, random normal logits seeded by the position (and no end token)."""

    name = "fake"
    n_vocab = len(VOCAB)
    n_ctx_train = 64

    def __init__(self, script: list[int] | None = None, prompt_length: int = 0):
        self.script, self.prompt_length = script, prompt_length
        self.tokenizer = FakeTokenizer()
        self.chat_template = FakeTemplate()
        self.forward_calls: list[int] = []  # how many tokens each forward call fed
        self.fail_on_call: int | None = None

    def tokenize(self, text, add_special=True, parse_special=False):
        return self.tokenizer.encode(text, add_special, parse_special)

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=True, continue_final_message=False):
        text = self.chat_template.render(messages, add_generation_prompt)
        return text.removesuffix("\n") if continue_final_message else text

    def new_cache(self, n_ctx: int) -> FakeCache:
        return FakeCache(n_ctx)

    def logits_at(self, position: int) -> np.ndarray:
        if self.script is None:
            logits = np.random.default_rng(position).normal(size=self.n_vocab).astype(np.float32)
            logits[EOS] = -30.0  # random text never ends by itself
            return logits
        logits = np.zeros(self.n_vocab, dtype=np.float32)
        step = position - self.prompt_length
        logits[self.script[step] if 0 <= step < len(self.script) else ID["c"]] = 20.0
        return logits

    def forward(self, ids, cache: FakeCache) -> np.ndarray:
        self.forward_calls.append(len(ids))
        if self.fail_on_call == len(self.forward_calls):
            cache.n_past += len(ids) // 2  # interrupted half-way through
            raise KeyboardInterrupt
        assert cache.n_past + len(ids) <= cache.n_ctx, "fed past the end of the cache"
        cache.n_past += len(ids)
        return self.logits_at(cache.n_past)  # the logits predicting position n_past


GREEDY = dict(temperature=0, repeat_penalty=1.0)
PROMPT = [BOS, ID["a"], ID["b"]]  # three tokens: the script starts at position 3


def scripted(*tokens: str) -> FakeModel:
    return FakeModel([t if isinstance(t, int) else VOCAB.index(t) for t in tokens], prompt_length=len(PROMPT))


# ---------------------------------------------------------------- ending


def test_num_predict_ends_with_length():
    r = generate(scripted("a", "b", "c", "a", "b"), PROMPT, num_predict=3, **GREEDY)
    assert isinstance(r, GenerationResult)
    assert r.tokens == [ID["a"], ID["b"], ID["c"]] and r.text == "abc"
    assert r.done_reason == "length" and r.eval_count == 3 and r.prompt_eval_count == 3


def test_end_of_generation_token_stops_and_is_not_emitted():
    r = generate(scripted("a", "b", EOS, "c"), PROMPT, **GREEDY)
    assert r.text == "ab" and r.tokens == [ID["a"], ID["b"]]
    assert r.done_reason == "stop" and r.eval_count == 3  # the end token was sampled, as Ollama counts


def test_stop_sequence_across_tokens_is_never_emitted():
    model = scripted("a", " ", "<", "end", ">", "b")
    r = generate(model, PROMPT, stop=["<end>"], **GREEDY)
    assert r.text == "a " and r.done_reason == "stop"
    pieces = [p for p in generate(model, PROMPT, stop=["<end>"], stream=True, **GREEDY) if not isinstance(p, GenerationResult)]
    assert "<" not in "".join(pieces) and "".join(pieces) == "a "


def test_held_back_stop_prefix_is_released_when_no_stop_follows():
    r = generate(scripted("a", "<", "b", "c"), PROMPT, stop=["<end>"], num_predict=4, **GREEDY)
    assert r.text == "a<bc" and r.done_reason == "length"


def test_context_full_ends_with_length_and_never_overfeeds():
    model = FakeModel(None)
    r = generate(model, PROMPT, num_ctx=8, **GREEDY)
    # 3 prompt tokens + 5 fed back = 8 positions; the 6th sampled token needs no position
    assert r.done_reason == "length" and len(r.tokens) == 8 - 3 + 1


def test_num_ctx_is_capped_at_the_training_context():
    model = FakeModel(None)
    r = generate(model, PROMPT, num_ctx=1_000_000, **GREEDY)
    assert len(r.tokens) == FakeModel.n_ctx_train - 3 + 1


def test_prompt_longer_than_context_is_rejected_naming_both_lengths():
    with pytest.raises(InvalidRequest, match=r"10 tokens.*num_ctx\) is 8"):
        generate(FakeModel(None), [ID["a"]] * 10, num_ctx=8)
    with pytest.raises(InvalidRequest):
        generate(FakeModel(None), [ID["a"]] * 8, num_ctx=8)  # no room for even one new token


def test_num_predict_zero_generates_nothing():
    r = generate(FakeModel(None), PROMPT, num_predict=0)
    assert r.tokens == [] and r.text == "" and r.done_reason == "length"


# ---------------------------------------------------------------- streaming


def test_stream_concatenation_equals_non_streamed_text():
    model = FakeModel(None)
    opts = dict(seed=3, temperature=1.0, num_predict=20, stop=["c"])
    whole = generate(model, PROMPT, **opts)
    events = list(generate(model, PROMPT, stream=True, **opts))
    assert isinstance(events[-1], GenerationResult)
    chunks = events[:-1]
    assert all(isinstance(c, Chunk) and isinstance(c, str) for c in chunks)
    assert "".join(chunks) == whole.text == events[-1].text
    assert [t for c in chunks for t in c.token_ids] == whole.tokens


def test_split_utf8_character_is_streamed_whole():
    r = list(generate(scripted("a", b"\xc3", b"\xa9", "b"), PROMPT, stream=True, num_predict=4, **GREEDY))
    pieces = [str(p) for p in r[:-1]]
    assert "".join(pieces) == "aéb" and not any("\ufffd" in p for p in pieces)


def test_closing_the_stream_stops_the_loop_and_keeps_the_session_consistent():
    model = FakeModel(None)
    session = Session()
    stream = generate(model, PROMPT, stream=True, session=session, num_predict=50, **GREEDY)
    next(stream)
    next(stream)
    calls_before = len(model.forward_calls)
    stream.close()
    assert len(model.forward_calls) == calls_before  # nothing more was computed
    assert session.cache.n_past == len(session.tokens) == 3 + len(model.forward_calls) - 1  # prompt + tokens fed back
    assert len(session.tokens) < 10


# ---------------------------------------------------------------- sampling


def test_same_seed_same_text_different_seed_different_text():
    model = FakeModel(None)
    opts = dict(temperature=1.5, top_k=0, top_p=1.0, num_predict=12)
    a = generate(model, PROMPT, seed=42, **opts)
    assert generate(model, PROMPT, seed=42, **opts).tokens == a.tokens
    assert generate(model, PROMPT, seed=43, **opts).tokens != a.tokens


def test_logprobs_come_from_the_raw_logits():
    model = FakeModel(None)
    r = generate(model, PROMPT, logprobs=True, top_logprobs=3, num_predict=4, seed=1, temperature=2.0, repeat_penalty=1.3)
    assert len(r.logprobs) == len(r.tokens) == 4
    for step, (token, lp) in enumerate(zip(r.tokens, r.logprobs)):
        expected = log_softmax(model.logits_at(3 + step))  # unaffected by penalties/temperature
        assert lp.token_id == token and lp.logprob == pytest.approx(expected[token], abs=1e-6)
        assert [t.token_id for t in lp.top_logprobs] == list(np.argsort(-expected)[:3])
        assert bytes(lp.bytes) == model.tokenizer.token_bytes(token)
    assert generate(model, PROMPT, num_predict=2).logprobs is None


def test_invalid_options_raise_before_any_work():
    model = FakeModel(None)
    with pytest.raises(InvalidRequest, match="tempreature"):
        generate(model, PROMPT, tempreature=0.1)
    with pytest.raises(InvalidRequest, match="top_logprobs"):
        generate(model, PROMPT, top_logprobs=99)
    assert model.forward_calls == []


# ---------------------------------------------------------------- prompts and sessions


def test_prompt_forms():
    model = scripted(EOS)
    raw = generate(model, "ab", raw=True, **GREEDY)
    assert raw.prompt_tokens == [BOS, ID["a"], ID["b"]]
    templated = generate(model, "ab", system="c", **GREEDY)
    assert templated.prompt_tokens == model.tokenize("<|system|>c\n<|user|>ab\n<|assistant|>", parse_special=True)
    chat = generate(model, [{"role": "user", "content": "ab"}], system="c", **GREEDY)
    assert chat.prompt_tokens == templated.prompt_tokens


@pytest.mark.parametrize("bad", ["", [], [ID["a"], 999], [-1], [{"content": "hi"}], [{"role": "user", "content": 3}], 42, [1.5]])
def test_bad_prompts_are_invalid_requests(bad):
    with pytest.raises(InvalidRequest):
        generate(FakeModel(None), bad, raw=True)


def test_images_are_refused():
    with pytest.raises(UnsupportedModel, match="images"):
        generate(FakeModel(None), "hi", images=["aGk="])


def test_session_reuses_the_common_prefix():
    model = FakeModel(None)
    session = Session()
    first = generate(model, PROMPT, session=session, num_predict=3, **GREEDY)
    assert session.tokens == PROMPT + first.tokens[:-1]  # the last sampled token was never fed
    follow_up = PROMPT + first.tokens + [ID["c"]]
    model.forward_calls.clear()
    second = generate(model, follow_up, session=session, num_predict=2, **GREEDY)
    assert second.cached_count == len(PROMPT) + 2 and second.prompt_eval_count == 2
    assert model.forward_calls[0] == 2  # only the new tokens were evaluated
    # a prompt that diverges earlier truncates the cache first
    third = generate(model, [BOS, ID["c"]], session=session, num_predict=1, **GREEDY)
    assert third.cached_count == 1 and session.cache.n_past == len(session.tokens) == 2
    # the same prompt again still evaluates its last token (its logits pick the first new token)
    again = generate(model, [BOS, ID["c"]], session=session, num_predict=1, **GREEDY)
    assert again.cached_count == 1 and again.tokens == third.tokens


def test_prefill_runs_in_batches_of_num_batch():
    model = FakeModel(None)
    ids = [BOS] + [ID["a"]] * 11  # 12 tokens
    one_batch = generate(model, ids, num_predict=3, **GREEDY)
    model.forward_calls.clear()
    batched = generate(model, ids, num_predict=3, num_batch=5, **GREEDY)
    assert model.forward_calls == [5, 5, 2, 1, 1]  # prefill 12 = 5 + 5 + 2, then one token at a time
    assert batched.tokens == one_batch.tokens and batched.prompt_eval_count == 12


def test_interrupted_prefill_leaves_session_consistent():
    model = FakeModel(None)
    session = Session()
    model.fail_on_call = 1
    with pytest.raises(KeyboardInterrupt):
        generate(model, PROMPT, session=session, num_predict=2)
    assert session.cache.n_past == len(session.tokens) == 0
    model.fail_on_call = None
    assert generate(model, PROMPT, session=session, num_predict=2, **GREEDY).cached_count == 0


def test_stats_are_nanoseconds_and_add_up():
    r = generate(FakeModel(None), PROMPT, num_predict=5)
    assert r.total_duration >= r.prompt_eval_duration + r.eval_duration + r.load_duration > 0
    assert r.total_duration < 60 * 10**9


PREPARE_THEN_GENERATE = """
import json, sys
import refllm
from refllm.generate import generate, prepare
from refllm.kernels import numba_ops, quantized

kernels = [k for pair in quantized.KERNELS.values() for k in pair[:2]]
kernels += [v for v in vars(numba_ops).values() if hasattr(v, "overloads") and hasattr(v, "py_func")]
model = refllm.load(sys.argv[1])
model.backend = "numba"
prepare(model)
loaded = {k.py_func.__name__: len(k.overloads) for k in kernels}
generate(model, "Hello there, how are you?", options={"num_predict": 4, "temperature": 0})
after = {k.py_func.__name__: len(k.overloads) for k in kernels}
print(json.dumps({name: [loaded[name], after[name]] for name in loaded if loaded[name] != after[name]}))
"""


@pytest.mark.parametrize("arch, qtype", [("llama", "Q4_K"), ("gemma3", "Q5_0")])
def test_prepare_loads_every_kernel_before_the_first_token(tiny_model, arch, qtype):
    """After ``prepare`` no Numba kernel compiles or loads while answering (a first run's
    compile pause and its notice would otherwise land in the middle of the answer).
    In a fresh process, where no earlier test has loaded a kernel."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PREPARE_THEN_GENERATE, str(tiny_model(arch, qtype))],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}  # kernel -> [signatures before, after]
