"""Samplers on hand-built distributions, checked against the formulas and llama.cpp's documented semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refllm.errors import InvalidRequest
from refllm.sample import Options, Sampler, StopMatcher, token_logprob
from refllm.sample import samplers as s
from refllm.sample.options import parse_option_text

# A small distribution used throughout: p = [0.5, 0.3, 0.15, 0.05] as logits (log p).
PROBS = np.array([0.5, 0.3, 0.15, 0.05])
LOGITS = np.log(PROBS)


def candidates(logits=LOGITS) -> s.Candidates:
    return s.Candidates.from_logits(np.asarray(logits, dtype=np.float32))


def kept_ids(c: s.Candidates) -> set[int]:
    return set(int(i) for i in c.ids)


# ---------------------------------------------------------------- options


def test_options_defaults_are_ollamas():
    o = Options()
    assert (o.temperature, o.top_k, o.top_p, o.min_p, o.typical_p) == (0.8, 40, 0.9, 0.0, 1.0)
    assert (o.repeat_penalty, o.repeat_last_n, o.presence_penalty, o.frequency_penalty) == (1.1, 64, 0.0, 0.0)
    assert (o.mirostat, o.mirostat_tau, o.mirostat_eta) == (0, 5.0, 0.1)
    assert (o.num_predict, o.num_ctx, o.seed, o.stop, o.num_batch) == (-1, 4096, None, (), 512)


def test_options_from_dict_validates_and_converts():
    o = Options.from_dict({"temperature": 0, "top_k": 5.0, "stop": "\n", "seed": 42, "num_gpu": 1, "top_p": None})
    assert o.temperature == 0.0 and isinstance(o.temperature, float)
    assert o.top_k == 5 and isinstance(o.top_k, int)
    assert o.stop == ("\n",) and o.seed == 42 and o.top_p == 0.9
    assert o.extra == {"num_gpu": 1}  # accepted for compatibility, not used
    assert Options.from_dict({"seed": -1}).seed is None  # Ollama's "random"


@pytest.mark.parametrize(
    "bad, word",
    [
        ({"temprature": 0.5}, "temprature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"num_predict": [1]}, "num_predict"),
        ({"stop": [1, 2]}, "stop"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": -1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"mirostat": 3}, "mirostat"),
        ({"num_batch": 0}, "num_batch"),
        ({"use_mmap": "yes"}, "use_mmap"),
    ],
)
def test_bad_options_name_the_option(bad, word):
    with pytest.raises(InvalidRequest, match=word):
        Options.from_dict(bad)


def test_options_must_be_a_dict():
    with pytest.raises(InvalidRequest):
        Options.from_dict([("temperature", 1)])


def test_option_text_as_typed_in_the_cli():
    assert parse_option_text("temperature", "0.25") == 0.25
    assert parse_option_text("num_predict", "12") == 12
    assert parse_option_text("stop", "<end> ###") == ["<end>", "###"]
    assert Options().with_text_value("top_k", "3").top_k == 3
    with pytest.raises(InvalidRequest, match="top_k"):
        parse_option_text("top_k", "many")
    with pytest.raises(InvalidRequest, match="nonsense"):
        parse_option_text("nonsense", "1")


# ---------------------------------------------------------------- single samplers


def test_softmax_and_log_softmax():
    np.testing.assert_allclose(s.softmax(LOGITS), PROBS, rtol=1e-12)
    np.testing.assert_allclose(s.log_softmax(LOGITS + 7.0), np.log(PROBS), atol=1e-12)  # shift-invariant
    big = np.array([1000.0, 1000.0])
    np.testing.assert_allclose(s.softmax(big), [0.5, 0.5])


def test_penalties_follow_llama_cpp_formula():
    logits = np.array([2.0, -1.0, 0.5, 3.0], dtype=np.float32)
    out = s.apply_penalties(logits, [0, 1, 1], repeat_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    # token 0 (seen once, positive): 2/2 - 1*0.25 - 0.5;  token 1 (seen twice, negative): -1*2 - 2*0.25 - 0.5
    np.testing.assert_allclose(out, [2 / 2 - 0.25 - 0.5, -1 * 2 - 0.5 - 0.5, 0.5, 3.0])
    np.testing.assert_array_equal(logits, [2.0, -1.0, 0.5, 3.0])  # input untouched


def test_penalties_off_when_neutral_or_no_history():
    logits = np.array([1.0, 2.0])
    assert s.apply_penalties(logits, [0, 1], 1.0, 0.0, 0.0) is logits
    assert s.apply_penalties(logits, [], 1.5, 0.0, 0.0) is logits


def test_top_k():
    c = s.top_k(candidates(LOGITS[::-1]), 2)  # ids 0..3 hold p = 0.05, 0.15, 0.3, 0.5
    assert list(c.ids) == [3, 2]  # most likely first
    assert len(s.top_k(candidates(), 0)) == 4  # 0 = off
    assert len(s.top_k(candidates(), 99)) == 4


@pytest.mark.parametrize("p, expected", [(0.45, {0}), (0.75, {0, 1}), (0.85, {0, 1, 2}), (0.99, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_smallest_prefix_reaching_p(p, expected):
    assert kept_ids(s.top_p(candidates(), p)) == expected


def test_top_p_works_on_unsorted_input():
    # ids 0..3 hold p = 0.15, 0.5, 0.05, 0.3: nucleus 0.75 is {1, 3}
    order = [2, 0, 3, 1]
    assert kept_ids(s.top_p(candidates(LOGITS[order]), 0.75)) == {1, 3}


@pytest.mark.parametrize("p, expected", [(0.0, {0, 1, 2, 3}), (0.2, {0, 1, 2}), (0.5, {0, 1}), (0.9, {0})])
def test_min_p_relative_to_best(p, expected):
    # keep p_i >= p * 0.5
    assert kept_ids(s.min_p(candidates(), p)) == expected


def test_typical_p_by_hand():
    # entropy H = -sum p ln p = 1.1421; surprises -ln p = 0.693, 1.204, 1.897, 2.996
    # distances |surprise - H| = 0.449, 0.062, 0.755, 1.854 -> most typical first: 1, 0, 2, 3
    entropy = -np.sum(PROBS * np.log(PROBS))
    assert entropy == pytest.approx(1.1421, abs=1e-4)
    assert kept_ids(s.typical_p(candidates(), 0.2)) == {1}  # drops the most likely token: cum 0.3 > 0.2
    assert kept_ids(s.typical_p(candidates(), 0.5)) == {0, 1}  # cum 0.3, 0.8
    assert kept_ids(s.typical_p(candidates(), 0.9)) == {0, 1, 2}  # cum 0.95 > 0.9
    assert len(s.typical_p(candidates(), 1.0)) == 4


def test_temperature():
    c = s.temperature(candidates(), 0.5)
    np.testing.assert_allclose(s.softmax(c.logits), PROBS**2 / np.sum(PROBS**2), rtol=1e-6)
    c = s.temperature(candidates(), 2.0)
    np.testing.assert_allclose(s.softmax(c.logits), np.sqrt(PROBS) / np.sum(np.sqrt(PROBS)), rtol=1e-6)
    assert list(s.temperature(candidates(LOGITS[::-1]), 0.0).ids) == [3]


def test_pick_from_matches_the_distribution():
    rng = np.random.default_rng(1234)
    n = 20000
    draws = np.array([s.pick_from(candidates(), rng) for _ in range(n)])
    freq = np.bincount(draws, minlength=4) / n
    # 5 standard errors of a binomial proportion
    np.testing.assert_array_less(np.abs(freq - PROBS), 5 * np.sqrt(PROBS * (1 - PROBS) / n))


def test_zipf_exponent_recovers_s():
    ranks = np.arange(1, 2001)
    p = ranks**-1.5 / np.sum(ranks**-1.5)
    assert s.zipf_exponent(p, 100) == pytest.approx(1.5, rel=1e-9)


def test_mirostat_k_formula():
    # k = (eps * 2^mu / (1 - N^-eps))^(1/s), s = 1.5, eps = 0.5, mu = 10, N = 1000
    expected = (0.5 * 2**10 / (1 - 1000**-0.5)) ** (1 / 1.5)
    assert s.mirostat_k(1.5, 10.0, 1000) == pytest.approx(expected, rel=1e-9)
    assert s.mirostat_k(1.5, 1e6, 1000) >= 1000  # huge mu: everything, no overflow


def test_mirostat_v1_samples_within_k_and_updates_mu():
    ranks = np.arange(1, 1001)
    logits = np.log(ranks**-1.5)  # Zipf(1.5) over 1000 tokens, token 0 most likely
    rng = np.random.default_rng(0)
    mu = 2.0  # k = (0.5 * 4 / (1 - 1000^-0.5))^(1/1.5) = 1.6 -> top 1
    token, new_mu = s.mirostat_v1(candidates(logits), tau=1.0, eta=0.1, mu=mu, n_vocab=1000, rng=rng)
    assert token == 0
    assert new_mu == pytest.approx(mu - 0.1 * (0.0 - 1.0))  # surprise of a certain draw is 0 bits


def test_mirostat_v2_truncates_by_surprise_and_updates_mu():
    rng = np.random.default_rng(7)
    # mu = 2 bits: keep tokens with -log2 p <= 2, i.e. p >= 0.25 -> {0, 1}, renormalized 0.625 / 0.375
    seen = set()
    for _ in range(200):
        token, new_mu = s.mirostat_v2(candidates(), tau=1.0, eta=0.1, mu=2.0, rng=rng)
        seen.add(token)
        p = {0: 0.5 / 0.8, 1: 0.3 / 0.8}[token]
        assert new_mu == pytest.approx(2.0 - 0.1 * (-math.log2(p) - 1.0), rel=1e-6)
    assert seen == {0, 1}
    token, _ = s.mirostat_v2(candidates(), tau=0.1, eta=0.1, mu=0.01, rng=rng)
    assert token == 0  # nothing passes: the best token is kept


# ---------------------------------------------------------------- the chain


def test_chain_order_truncates_before_temperature():
    # llama.cpp order: top_p sees the untempered distribution, so a high temperature
    # afterwards cannot bring back tokens outside the nucleus.
    opts = Options(top_k=0, top_p=0.75, temperature=10.0, repeat_penalty=1.0, seed=3)
    sampler = Sampler(opts, 4)
    draws = {sampler.sample(LOGITS.astype(np.float32)) for _ in range(300)}
    assert draws == {0, 1}


def test_temperature_zero_is_greedy_after_penalties():
    logits = np.array([1.0, 3.0, 2.9, 0.0], dtype=np.float32)
    assert Sampler(Options(temperature=0, repeat_penalty=1.0), 4).sample(logits, [1]) == 1
    assert Sampler(Options(temperature=0, repeat_penalty=1.5), 4).sample(logits, [1]) == 2  # 3/1.5 < 2.9


def test_repeat_last_n_window():
    sampler = Sampler(Options(repeat_last_n=2), 4)
    assert sampler.penalty_window([5, 6, 7, 8], num_ctx=100) == [7, 8]
    assert Sampler(Options(repeat_last_n=0), 4).penalty_window([5, 6], 100) == []
    assert Sampler(Options(repeat_last_n=-1), 4).penalty_window([5, 6, 7], 2) == [6, 7]  # -1 = num_ctx


def test_same_seed_same_tokens_different_seed_different_tokens():
    logits = np.random.default_rng(0).normal(size=500).astype(np.float32)
    opts = dict(temperature=1.5, top_k=0, top_p=1.0, repeat_penalty=1.0)

    def run(seed):
        sampler = Sampler(Options(seed=seed, **opts), 500)
        return [sampler.sample(logits) for _ in range(30)]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_mirostat_in_the_chain_is_seeded():
    logits = np.log(np.arange(1, 301) ** -1.2).astype(np.float32)
    for mode in (1, 2):
        a = Sampler(Options(mirostat=mode, seed=5, repeat_penalty=1.0), 300)
        b = Sampler(Options(mirostat=mode, seed=5, repeat_penalty=1.0), 300)
        assert [a.sample(logits) for _ in range(20)] == [b.sample(logits) for _ in range(20)]
        assert a.mu != 2 * 5.0  # the feedback moved mu


# ---------------------------------------------------------------- logprobs


def test_token_logprob_of_raw_distribution():
    lp = token_logprob(LOGITS.astype(np.float32) + 3.0, 2, top_n=2)
    assert lp.token_id == 2 and lp.logprob == pytest.approx(math.log(0.15), abs=1e-6)
    assert [t.token_id for t in lp.top_logprobs] == [0, 1]
    assert [t.logprob for t in lp.top_logprobs] == pytest.approx([math.log(0.5), math.log(0.3)], abs=1e-6)
    assert token_logprob(LOGITS, 0).top_logprobs == ()


def test_token_logprob_text_and_bytes():
    pieces = {0: b"a", 1: b"\xc3", 2: b"\xa9", 3: b"d"}
    lp = token_logprob(LOGITS, 1, top_n=1, token_bytes=pieces.__getitem__)
    assert lp.bytes == (0xC3,) and lp.token == "\ufffd"  # half a character: bytes tell the truth
    assert lp.top_logprobs[0].token == "a" and lp.top_logprobs[0].bytes == (97,)


# ---------------------------------------------------------------- stop sequences


def feed(matcher: StopMatcher, pieces) -> str:
    out = "".join(matcher.push(p) for p in pieces)
    return out + matcher.flush()


def test_stop_within_one_piece():
    m = StopMatcher(["STOP"])
    assert feed(m, ["hello STOP world"]) == "hello " and m.stopped


def test_stop_across_pieces_is_never_emitted():
    m = StopMatcher(["<end>"])
    released = [m.push(p) for p in ["ab<", "e", "nd", ">tail"]]
    assert released == ["ab", "", "", ""] and m.stopped
    assert m.flush() == ""


def test_held_back_prefix_is_released_when_it_cannot_match():
    m = StopMatcher(["\nUser:"])
    assert m.push("Hi!\nUs") == "Hi!"
    assert m.push("ual") == "\nUsual"
    assert not m.stopped
    m2 = StopMatcher(["\nUser:"])
    assert feed(m2, ["end\nUse"]) == "end\nUse"  # flushed at the end of generation


def test_earliest_stop_wins_and_stop_at_start():
    assert feed(StopMatcher(["cd", "b"]), ["abcd"]) == "a"
    assert feed(StopMatcher(["x"]), ["x", "yz"]) == ""
    assert feed(StopMatcher([]), ["a", "b"]) == "ab"
