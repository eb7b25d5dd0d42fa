"""``refllm doctor``: the environment report, checked against the libraries it reads."""

from __future__ import annotations

import json

from refllm.cli.main import main
from refllm.kernels.environment import SIMD_FLAGS, environment_report, format_environment


def test_report_matches_the_libraries():
    import llvmlite.binding as llvm
    import numba
    import numpy as np

    report = environment_report()
    features = llvm.get_host_cpu_features()
    assert report["simd"] == [flag for flag in SIMD_FLAGS if features.get(flag)]
    assert report["llvm_cpu_name"] == llvm.get_host_cpu_name()
    assert report["numba_version"] == numba.__version__ and report["numpy_version"] == np.__version__
    assert report["numba_threads"] == numba.config.NUMBA_NUM_THREADS
    assert report["threading_layer"] in ("omp", "tbb", "workqueue")
    assert isinstance(report["cuda_available"], bool)
    assert report["usable_cores"] >= 1 and report["kernel_cache"]
    text = format_environment(report)
    assert "SIMD (LLVM)" in text and "Numba" in text and "CUDA" in text


def test_cli_doctor_json_and_text(capsys):
    assert main(["doctor", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert {"cpu", "simd", "numba_version", "threading_layer", "kernel_cache", "cuda_available"} <= set(data)
    assert "Traceback" not in captured.err
    assert main(["doctor"]) == 0
    assert "Kernel cache" in capsys.readouterr().out


def test_doctor_shows_each_setting_and_where_it_came_from(capsys, monkeypatch):
    """As refllm.example.toml promises: `refllm doctor --json` gives every setting with its source."""
    monkeypatch.setenv("REFLLM_SERVER__PORT", "12345")
    assert main(["doctor", "--json"]) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert settings["server"]["port"] == {"value": 12345, "source": "env:REFLLM_SERVER__PORT"}
    assert settings["runtime"]["device"]["source"] == "default"
    assert main(["doctor"]) == 0
    assert "server.port=12345 (env:REFLLM_SERVER__PORT)" in capsys.readouterr().out
