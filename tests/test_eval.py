"""``refllm eval perplexity`` and ``refllm eval kld``.

Perplexity is checked against golden log-probabilities from HF transformers and llama.cpp
(golden/logits/, tools/golden_logits.py): the prompt "1, 2, 3, 4, 5, 6, 7, 8," on SmolLM2,
whose every next token is within the golden top-32, so its exact NLL is known to both.
KL divergence runs on the tiny synthetic llama (F16 as the base, Q8_0 under test) and is
checked against a full-vocabulary KL computed here from each model's logits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import refllm
from refllm.cli.main import main
from refllm.conformance.evaluate import windows
from refllm.sample.samplers import log_softmax
from conftest import GOLDEN

TEXT = "The lighthouse keeper climbed the stairs. Outside, the sea was calm and grey."


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["eval", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def golden_nll(engine: str, prompt: int) -> float:
    """Mean -log p(next token) over the prompt, from a golden file's top-32 at each position."""
    data = np.load(GOLDEN / "logits" / f"smollm2.{engine}.npz")
    ids, top_ids, top_lp = data[f"p{prompt}_ids"], data[f"p{prompt}_topk_ids"], data[f"p{prompt}_topk_logprobs"]
    return float(np.mean([-top_lp[t - 1][list(top_ids[t - 1]).index(ids[t])] for t in range(1, len(ids))]))


def test_perplexity_matches_hf_and_llama_cpp(smollm2_gguf, tmp_path, capsys):
    prompt = json.loads((GOLDEN / "logits" / "manifest.json").read_text())["models"]["smollm2"]["prompts"][5]
    assert prompt == "1, 2, 3, 4, 5, 6, 7, 8,"
    (tmp_path / "count.txt").write_text(prompt)
    code, out, _ = run(capsys, "perplexity", str(smollm2_gguf), str(tmp_path / "count.txt"), "--ctx", "64", "--json")
    result = json.loads(out)
    assert code == 0 and result["n_tokens"] == 22  # SmolLM2 adds no BOS: the first token is context only
    assert result["mean_nll"] == pytest.approx(golden_nll("hf", 5), abs=1e-4)  # float32 like refllm
    assert result["mean_nll"] == pytest.approx(golden_nll("llamacpp", 5), abs=0.01)  # 8-bit activations
    assert result["ppl"] == pytest.approx(np.exp(result["mean_nll"]))


@pytest.mark.parametrize("bos", [True, False])
@pytest.mark.parametrize("n, ctx, stride", [(10, 5, 2), (37, 8, 4), (5, 64, 32), (9, 4, 3), (20, 6, 5)])
def test_sliding_windows_score_every_token_once(n, ctx, stride, bos):
    scored = []
    for begin, end, first in windows(n, ctx, stride, bos):
        assert end - begin + bos <= ctx and begin <= first < end  # BOS + the window fit in ctx
        assert first > begin or bos  # a token is scored only with something before it
        scored += range(first, end)
    assert scored == list(range(0 if bos else 1, n))


@pytest.fixture(scope="module")
def tiny_pair(tiny_model, tmp_path_factory):
    """(base F16 path, Q8_0 path, text file): the same tiny llama at two precisions."""
    path = tmp_path_factory.mktemp("eval") / "text.txt"
    path.write_text(TEXT)
    return tiny_model("llama", "F16"), tiny_model("llama", "Q8_0"), path


def full_kl(base_path, model_path, text: str) -> tuple[float, float]:
    """(mean KL(base || model), same-top fraction) from one forward pass each over the whole text.

    Every row but the last predicts a scored token: with BOS the first text token too, without
    it the first token is context only -- as the eval windows do.
    """
    base, model = refllm.load(base_path), refllm.load(model_path)
    ids = base.tokenize(text, add_special=True)
    log_p = np.stack([log_softmax(row) for row in base.logits(ids)[:-1]])  # [n_scored, n_vocab]
    log_q = np.stack([log_softmax(row) for row in model.logits(ids)[:-1]])
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
    return float(kl.mean()), float(np.mean(log_p.argmax(-1) == log_q.argmax(-1)))


def test_kld_against_a_saved_base(tiny_pair, tmp_path, capsys):
    base_model, model, text = tiny_pair
    base = tmp_path / "base.npz"
    code, out, _ = run(capsys, "kld", str(base_model), str(text), "--save-base", str(base), "--ctx", "128")
    assert code == 0 and base.is_file() and "saved the base" in out

    code, out, _ = run(capsys, "kld", str(base_model), str(text), "--base", str(base), "--json")
    same = json.loads(out)
    assert code == 0 and same["mean_kl"] == pytest.approx(0, abs=1e-6) and same["same_top"] == 1.0  # base stored as float32

    code, out, _ = run(capsys, "kld", str(model), str(text), "--base", str(base), "--json")
    result = json.loads(out)
    expected_kl, expected_same = full_kl(base_model, model, TEXT)
    assert code == 0 and result["mean_kl"] > 0
    assert result["mean_kl"] == pytest.approx(expected_kl, rel=1e-4)
    assert result["same_top"] == pytest.approx(expected_same)
    assert result["percentiles"]["min"] <= result["percentiles"]["median"] <= result["percentiles"]["max"]

    code, out, _ = run(capsys, "kld", str(model), str(text), "--base", str(base))
    assert code == 0 and "Mean KLD:" in out and "Same top p:" in out and "99.9% KLD:" in out


def test_bad_input_is_a_one_line_error(tiny_pair, tmp_path, capsys):
    base_model, model, text = tiny_pair
    other = tmp_path / "other.txt"
    other.write_text("Something else entirely, with other tokens.")
    base = tmp_path / "base.npz"
    assert run(capsys, "kld", str(base_model), str(other), "--save-base", str(base), "--ctx", "64")[0] == 0
    cases = [
        (["kld", str(model), str(text), "--base", str(base)], "was saved from other tokens"),
        (["kld", str(model), str(text), "--base", str(tmp_path / "missing.npz")], "cannot read base logits"),
        (["kld", str(model), str(text), "--base", str(text)], f"{text} is not a base file written by `refllm eval"),
        (["perplexity", str(model), str(tmp_path / "missing.txt")], "cannot read"),
        (["perplexity", str(model), str(text), "--ctx", "1"], "--ctx must be"),
        (["perplexity", str(model), str(text), "--ctx", "16", "--stride", "16"], "--stride must be"),
    ]
    (tmp_path / "empty.txt").write_text("")
    cases.append((["perplexity", str(model), str(tmp_path / "empty.txt")], "at least 2 are needed"))
    np.save(tmp_path / "array.npy", np.arange(3))  # NumPy's format, but one array, not a base
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(tmp_path / "other.npz", tokens=np.arange(3))
    for name in ("array.npy", "broken.npz", "other.npz"):
        cases.append((["kld", str(model), str(text), "--base", str(tmp_path / name)], f"{tmp_path / name} is not a base file"))
    for args, message in cases:
        code, _, err = run(capsys, *args)
        assert code == 1 and message in err and err.count("\n") == 1 and "allow_pickle" not in err, (args, err)
