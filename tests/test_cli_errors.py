"""Bad input on the command line: one ``Error: ...`` line on stderr, exit 1, never a traceback.

Each case names what is wrong and what to do; none needs a model to be loaded.
"""

from __future__ import annotations

import pytest

from refllm.cli.main import main


@pytest.fixture(autouse=True)
def empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("REFLLM_MODELS", str(tmp_path / "models"))


@pytest.mark.parametrize("argv, words", [
    (["conformance", "--api-only", "notaurl"], ["--api-only", "http(s) URL", "'notaurl'"]),
    (["conformance", "smollm2", "--endpoint", "localhost:11434"], ["--endpoint", "http(s) URL"]),
    (["pull", "./no-such-file.gguf"], ["not found", "no-such-file.gguf"]),
    (["pull", "/no/such/dir"], ["not found", "/no/such/dir"]),
])  # fmt: skip
def test_one_line_errors(capsys, argv, words):
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_only_paths_are_checked_as_files_before_a_pull():
    from refllm.cli.store import _names_a_file

    assert _names_a_file("./m.gguf") and _names_a_file("~/models/m.gguf") and _names_a_file("/tmp/x")
    assert not _names_a_file("https://host/m.gguf") and not _names_a_file("smollm2") and not _names_a_file("gemma3:270m")


def test_serve_on_a_host_that_does_not_resolve(capsys):
    assert main(["serve", "--host", "999.1.1.1", "--port", "65001"])  # resolving fails before any bind == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: cannot listen on 999.1.1.1") and err.count("\n") == 1, err


def test_closed_stdin_reads_as_an_empty_pipe():
    from refllm.cli.run import prompt_from

    assert prompt_from([], None) == ""  # `refllm run MODEL <&-`: nothing to answer, not the chat's input()
    assert prompt_from(["hi"], None) == "hi"


def test_closed_stdout_is_not_a_traceback(tiny_model, tmp_path):
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "refllm", "run", str(tiny_model("llama")), "hi", "-n", "2", "--backend", "numpy"]
    env = {**os.environ, "REFLLM_MODELS": str(tmp_path / "models")}
    done = subprocess.run(command, preexec_fn=lambda: os.close(1), stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
