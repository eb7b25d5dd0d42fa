"""Speed measurement plumbing (``refllm bench``, tools/bench_vs_llamacpp.py) on a tiny model.

Only the shape of the results is checked, never a timing.
"""

from __future__ import annotations

import json

from refllm.cli.main import main
from refllm.kernels.speed import measure

FIELDS = {"prefill_tok_s", "decode_tok_s", "ttft_s", "peak_rss_mb", "threads", "n_prompt", "n_gen"}


def test_measure_in_process(tiny_model):
    result = measure(str(tiny_model("llama", "Q4_0")), n_prompt=12, n_gen=3, threads=1)
    data = result.to_dict()
    assert FIELDS <= set(data) and data["n_prompt"] == 12 and data["n_gen"] == 3 and data["threads"] == 1
    assert data["prefill_tok_s"] > 0 and data["decode_tok_s"] > 0 and data["peak_rss_mb"] > 0


def test_cli_bench_json_one_fresh_process_per_round(tiny_model, capsys):
    path = tiny_model("gemma3", "Q8_0")
    assert main(["bench", str(path), "--prompt-tokens", "8", "--gen-tokens", "2", "--rounds", "1", "--threads", "1", "--json"]) == 0
    rounds = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rounds) == 1 and FIELDS <= set(rounds[0]) and rounds[0]["engine"] == "refllm"


def test_cli_bench_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing.gguf")]) == 1
    assert main(["bench", "smollm2", "--rounds", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("Error:") == 2 and "Traceback" not in err


def test_bench_vs_llamacpp_tool_runs_both_engines(tiny_model, capsys):
    from conftest import load_tool

    tool = load_tool("bench_vs_llamacpp")
    path = tiny_model("llama", "Q8_0")
    assert tool.main([str(path), "--threads", "1", "--rounds", "1", "--prompt-tokens", "8", "--gen-tokens", "2", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    engines = {json.loads(line)["engine"] for line in lines if line.startswith("{")}
    assert engines == {"refllm", "llama.cpp"}
    assert any(path.name[:38] in line for line in lines if not line.startswith("{"))
