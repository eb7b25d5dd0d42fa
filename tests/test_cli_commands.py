"""Sub-commands beyond run and the store: what they print (bench, ...), checked in-process."""

from __future__ import annotations

import pytest

import refllm.kernels.speed
from refllm.cli.main import main


@pytest.fixture
def store_with_smollm2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REFLLM_MODELS", str(tmp_path / "models"))
    assert main(["pull", "smollm2"]) == 0
    capsys.readouterr()


def test_bench_names_the_model_as_typed_not_its_blob(store_with_smollm2, monkeypatch, capsys):
    def measured(path, n_prompt, n_gen, threads, backend):  # stands in for the fresh-process measurement
        return refllm.kernels.speed.SpeedResult("refllm", str(path), backend, threads, n_prompt, n_gen,
                                                load_s=1.0, prefill_s=0.1, prefill_tok_s=80.0, decode_tok_s=40.0,
                                                ttft_s=0.2, peak_rss_mb=300.0)

    monkeypatch.setattr(refllm.kernels.speed, "measure_in_subprocess", measured)
    assert main(["bench", "smollm2", "--rounds", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("smollm2: 128-token prompt, 32 decode steps") and "sha256" not in out
    assert out.splitlines()[-1].split() == ["1", "80.0", "40.0", "0.20", "1.00", "300"]


@pytest.mark.parametrize("seconds, words", [
    (0.4, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"), (125, "2 minutes"),
    (3600, "About an hour"), (5400, "2 hours"), (47 * 3600, "47 hours"), (3 * 86400, "3 days"),
    (20 * 86400, "2 weeks"), (90 * 86400, "3 months"), (800 * 86400, "2 years"),
])  # fmt: skip
def test_durations_are_worded_as_ollamas_list_and_ps_word_them(seconds, words):
    from refllm.cli.store import human_duration

    assert human_duration(seconds) == words  # Ollama's format.HumanDuration (go-units' rules)


def test_ps_until_column(monkeypatch):
    from refllm.cli import store as store_cli

    monkeypatch.setattr(store_cli.time, "time", lambda: 1_800_000_000.0)
    assert store_cli._until("2027-01-15T08:04:00Z") == "4 minutes from now"  # 1_800_000_240 s
    assert store_cli._until("9999-12-31T23:59:59Z") == "Forever"
    assert store_cli._until("2027-01-15T07:59:00Z") == "Stopping..."


@pytest.mark.parametrize("argv", [
    ["plan", "{}"], ["plan", "{}", "--json"], ["models", "info", "{}", "--plan-json"], ["models", "info", "{}", "--json"],
    ["models", "info", "{}"], ["run", "{}", "--plan-json"], ["prompt", "-m", "{}", "--plan-json"],
    ["chat", "-m", "{}", "--plan-json"], ["doctor", "-m", "{}", "--plan-json"],
])  # fmt: skip
def test_every_plan_of_an_unsupported_model_exits_1_as_refllm_plan_does(unsupported_gguf, capsys, argv):
    assert main([word.format(unsupported_gguf) for word in argv]) == 1
    out = capsys.readouterr().out
    assert "unsupported" in out and "rwkv6" in out  # the plan is printed all the same
