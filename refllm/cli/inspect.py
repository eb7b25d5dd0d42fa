"""Print what a GGUF file holds: ``refllm inspect PATH`` (and ``refllm show PATH.gguf``).

    $ refllm show SmolLM2-135M-Instruct.Q4_1.gguf
      Model
        architecture        llama
        parameters          134.52M
        context length      8192
        embedding length    576
        quantization        Q4_1

      License
        apache-2.0

``--json`` prints the metadata as JSON (arrays longer than 64 elements, like the
vocabulary, are summarized as ``{"type": ..., "length": N}`` unless ``--verbose``),
``--tensors`` prints the tensor table.  Only the header is read: tensor data stay
on disk.

The pieces are plain functions so other commands (``refllm show NAME`` for store
models, the server's ``/api/show``) can reuse them:

    describe_gguf(gguf_file) -> dict          the summary, as data
    format_description(description) -> str   the summary, as ``ollama show`` prints it
    metadata_as_json(gguf_file, verbose) -> dict
    format_tensor_table(gguf_file) -> str
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from refllm.gguf import GGUFFile, StringArray, read
from refllm.store.store import file_type_name, format_parameter_count

ARRAY_SUMMARY_LIMIT = 64  # --json shows arrays up to this length in full


def register(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="print a GGUF file's model summary, metadata or tensor table")
    p.add_argument("path", help="a .gguf file")
    add_display_flags(p)
    p.set_defaults(func=show_gguf_command)


def add_display_flags(parser: argparse.ArgumentParser) -> None:
    """--json / --tensors / --verbose, shared with ``refllm show``."""
    parser.add_argument("--json", action="store_true", help="print the metadata as JSON")
    parser.add_argument("--tensors", action="store_true", help="print the tensor table")
    parser.add_argument("-v", "--verbose", action="store_true", help="with --json: print long arrays in full")


# --------------------------------------------------------------------------- the summary


def describe_gguf(gguf_file: GGUFFile) -> dict[str, Any]:
    """What ``ollama show`` reports about a model, read from the GGUF header."""
    meta, arch = gguf_file.metadata, gguf_file.architecture
    n_params = gguf_file.n_parameters
    return {
        "path": str(gguf_file.path),
        "name": meta.get("general.name"),
        "architecture": arch,
        "parameter_count": n_params,
        "parameters": format_parameter_count(n_params),  # 134515008 -> "134.52M"
        "context_length": meta.get(f"{arch}.context_length"),
        "embedding_length": meta.get(f"{arch}.embedding_length"),
        "quantization": file_type_name(gguf_file),  # general.file_type 15 -> "Q4_K_M"
        "license": meta.get("general.license"),
        "chat_template": meta.get("tokenizer.chat_template"),
        "gguf_version": gguf_file.version,
        "tensor_count": len(gguf_file.tensors),
        "file_size": gguf_file.file_size,
    }


def format_description(description: dict[str, Any], license_lines: int = 4) -> str:
    """The summary laid out like ``ollama show``: a Model section, then the License's first lines."""
    lines = ["  Model"]
    for label, key in (
        ("architecture", "architecture"),
        ("parameters", "parameters"),
        ("context length", "context_length"),
        ("embedding length", "embedding_length"),
        ("quantization", "quantization"),
    ):
        value = description.get(key)
        if value not in (None, ""):
            lines.append(f"    {label:<20}{value}")
    license_text = description.get("license")
    if license_text:
        lines += ["", "  License"]
        lines += [f"    {line}" for line in str(license_text).splitlines()[:license_lines]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- metadata and tensors


def element_type(array: np.ndarray | StringArray | list) -> str:
    """What a metadata array holds: "string", "array" (nested) or a NumPy dtype name ("int32")."""
    if isinstance(array, StringArray):
        return "string"
    return "array" if isinstance(array, list) else array.dtype.name


def json_value(value: Any, verbose: bool = False) -> Any:
    """A metadata value as JSON: numbers and strings as they are, long arrays summarized."""
    if isinstance(value, (np.ndarray, StringArray, list)):
        if len(value) > ARRAY_SUMMARY_LIMIT and not verbose:
            return {"type": element_type(value), "length": len(value)}
        if isinstance(value, np.ndarray):
            return value.tolist()
        return [json_value(v, verbose) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # JSON has no inf/nan
    return value


def metadata_as_json(gguf_file: GGUFFile, verbose: bool = False) -> dict[str, Any]:
    return {key: json_value(value, verbose) for key, value in gguf_file.metadata.items()}


def format_tensor_table(gguf_file: GGUFFile) -> str:
    """One line per tensor: name, NumPy-order shape, ggml type, absolute offset, bytes."""
    rows = [(t.name, "x".join(map(str, t.shape)), t.ggml_type.name, str(t.offset), str(t.n_bytes))
            for t in gguf_file.tensors.values()]  # fmt: skip
    header = ("NAME", "SHAPE", "TYPE", "OFFSET", "BYTES")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows])


# --------------------------------------------------------------------------- the command


def show_gguf_command(args: argparse.Namespace) -> int:
    """``refllm inspect PATH`` / ``refllm show PATH.gguf`` (the store's show passes ``args.name``)."""
    path = getattr(args, "path", None) or args.name
    gguf_file = read(path)  # a bad path or file raises GGUFError: one line, exit 1
    description = describe_gguf(gguf_file)
    if getattr(args, "license", False):
        print(description["license"] or "")
    elif getattr(args, "template", False):
        print(description["chat_template"] or "")
    elif getattr(args, "modelfile", False):
        print(f"FROM {gguf_file.path.resolve()}")
    elif getattr(args, "verify", False):
        print(f"{path}: header and tensor table are valid ({description['tensor_count']} tensors)")
    elif getattr(args, "parameters", False) or getattr(args, "system", False):
        pass  # a bare GGUF file has no Modelfile parameters or system prompt
    elif getattr(args, "json", False):
        print(json.dumps(metadata_as_json(gguf_file, getattr(args, "verbose", False)), indent=2, ensure_ascii=False))
    elif getattr(args, "tensors", False):
        print(format_tensor_table(gguf_file))
    else:
        print(format_description(description))
    return 0
