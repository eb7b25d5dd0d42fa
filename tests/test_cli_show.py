"""``refllm show PATH.gguf`` / ``refllm inspect PATH``: the ollama-style summary, --json, --tensors, errors.

Expected values come from the tiny models' own configuration (tools/make_tiny_models.py),
from gguf-py's reader, and, for SmolLM2, from the model's published facts.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import gguf
import pytest
from gguf import GGUFValueType as V

from refllm.cli.main import main
from conftest import load_tool

make = sys.modules.get("refllm_tools_make_tiny_models") or load_tool("make_tiny_models")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def summary_rows(out: str) -> dict[str, str]:
    """'    architecture        llama' lines of the Model section -> {label: value}."""
    rows = {}
    for line in out.split("\n\n")[0].splitlines()[1:]:
        label, value = line[4:24].strip(), line[24:].strip()
        rows[label] = value
    return rows


@pytest.mark.parametrize("command", ["show", "inspect"])
def test_summary_of_a_tiny_model(capsys, tiny_model, command):
    path = tiny_model("qwen3", "Q4_K")
    code, out, err = run_cli(capsys, command, path)
    assert code == 0 and err == ""
    cfg = make.CONFIGS["qwen3"]
    n_params = sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)
    assert n_params == sum(math.prod(shape) for _, shape, _ in make.tensor_plan(cfg))
    assert summary_rows(out) == {
        "architecture": "qwen3",
        "parameters": f"{n_params / 1e6:.2f}M",
        "context length": str(cfg.context_length),
        "embedding length": str(cfg.n_embd),
        "quantization": "Q4_K_M",
    }
    assert out.split("\n\n")[1].splitlines() == ["  License", "    apache-2.0"]


def test_summary_of_smollm2(capsys, smollm2_gguf):
    code, out, _ = run_cli(capsys, "show", smollm2_gguf)
    assert code == 0
    assert summary_rows(out) == {  # SmolLM2-135M-Instruct, Q4_1 (facts of the published model)
        "architecture": "llama",
        "parameters": "134.52M",
        "context length": "8192",
        "embedding length": "576",
        "quantization": "Q4_1",
    }
    assert "apache-2.0" in out


def test_json_is_the_metadata_with_long_arrays_summarized(capsys, tiny_model):
    path = tiny_model("gemma3", "Q8_0")
    reader = gguf.GGUFReader(path)
    code, out, _ = run_cli(capsys, "show", path, "--json")
    assert code == 0
    shown = json.loads(out)
    assert list(shown) == [k for k in reader.fields if not k.startswith("GGUF.")]
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        expected = field.contents()
        if isinstance(expected, list) and len(expected) > 64:
            assert shown[key]["length"] == len(expected), key
            element = {V.STRING: "string", V.INT32: "int32", V.FLOAT32: "float32"}[field.types[-1]]
            assert shown[key]["type"] == element, key
        else:
            assert shown[key] == expected, key

    code, out, _ = run_cli(capsys, "inspect", path, "--json", "--verbose")
    full = json.loads(out)
    assert full["tokenizer.ggml.tokens"] == reader.fields["tokenizer.ggml.tokens"].contents()
    assert full["tokenizer.ggml.scores"] == reader.fields["tokenizer.ggml.scores"].contents()


def test_tensor_table(capsys, tiny_model):
    path = tiny_model("qwen2", "IQ4_XS")
    code, out, _ = run_cli(capsys, "show", path, "--tensors")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "SHAPE", "TYPE", "OFFSET", "BYTES"]
    expected = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert len(rows) == len(expected)
    for row in rows:
        name, shape, type_name, offset, n_bytes = row.split()
        t = expected[name]
        assert shape == "x".join(str(int(d)) for d in reversed(t.shape.tolist()))
        assert type_name == t.tensor_type.name
        assert int(offset) == t.data_offset and int(n_bytes) == t.n_bytes


def test_license_template_and_modelfile_of_a_file(capsys, tiny_model):
    path = tiny_model("llama", "Q8_0")
    assert run_cli(capsys, "show", path, "--license")[1] == "apache-2.0\n"
    template = run_cli(capsys, "show", path, "--template")[1]
    assert template.strip() == make.CHATML_TEMPLATE
    assert run_cli(capsys, "show", path, "--modelfile")[1] == f"FROM {path.resolve()}\n"


def test_missing_and_broken_files_are_one_line_errors(capsys, tmp_path):
    code, out, err = run_cli(capsys, "show", tmp_path / "missing.gguf")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and "missing.gguf" in err
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a model")
    code, out, err = run_cli(capsys, "inspect", text)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "magic" in err


def test_console_script_exit_code_without_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "refllm", "show", str(tmp_path / "nope.gguf")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "nope.gguf" in done.stderr
