"""Models as Ollama lists and shows them: the store's models plus the built-in catalog ones.

    list_models()      /api/tags, /v1/models, `refllm list`
    show(recipe, ..)   /api/show, `refllm show`
    copy(recipe, ..)   /api/copy, `refllm cp` (a catalog source is added to the store under the new name)

and what they say about a model file, read from the GGUF header only: ``details`` (format,
family, parameter size, quantization), ``file_digest``, ``modified_at`` and ``tensors``.
``model_info`` (the metadata as JSON) is ``refllm.store.model_info``.  The server's routes
and the CLI both call these, so `refllm list` and /api/tags agree.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import threading
from datetime import datetime, timezone
from pathlib import Path

from refllm.engine import ModelRecipe
from refllm.gguf import read
from refllm.packaged_models import CATALOG, ModelPackageMissing, gguf_path, listing_before_assembly
from refllm import store
from refllm.store.store import file_type_name, format_parameter_count, model_info
from refllm.thinking import thinking_markers

_digest_cache: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of the file, computed once per (path, size, mtime)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _digest_lock:
        if key not in _digest_cache:
            sha = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    sha.update(block)
            _digest_cache[key] = "sha256:" + sha.hexdigest()
        return _digest_cache[key]


def modified_at(path: Path) -> str:
    return rfc3339(path.stat().st_mtime)


def rfc3339(seconds: float) -> str:
    """Wall-clock seconds as ``2025-10-26T17:21:21.196249Z`` (the timestamps Ollama sends)."""
    if seconds == float("inf") or seconds > 253402300799:
        return "9999-12-31T23:59:59Z"
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def details(path: Path) -> dict:
    """Ollama's ``details`` object: format, family, parameter size, quantization.

    Read once per (path, size, mtime): /api/tags and /api/ps ask for it on every call, and a
    large vocabulary makes the header slow to parse (Gemma 3: ~60 ms).
    """
    stat = path.stat()
    cached = _details(str(path), stat.st_size, stat.st_mtime_ns)
    return {**cached, "families": list(cached["families"])}  # a copy: callers may change theirs


@functools.lru_cache(maxsize=64)
def _details(path: str, size: int, mtime_ns: int) -> dict:
    gguf_file = read(Path(path))
    family = gguf_file.architecture
    return {
        "parent_model": "", "format": "gguf", "family": family, "families": [family],
        "parameter_size": format_parameter_count(gguf_file.n_parameters),
        "quantization_level": file_type_name(gguf_file),
    }


def tensors(gguf_file) -> list[dict]:
    """/api/show's ``tensors``: name, ggml type and shape of each, in the file's order.
    The shape is GGUF's (ne0, the contiguous axis, first), as Ollama lists it."""
    return [{"name": t.name, "type": t.ggml_type.name, "shape": list(reversed(t.shape))} for t in gguf_file.tensors.values()]


CAPABILITIES = ["completion", "embedding", "tools"]  # every model: tools are offered through the chat template


def capabilities(template: str) -> list[str]:
    """/api/show's ``capabilities``, plus "thinking" when the chat template has reasoning markers
    (as Ollama's clients check them before sending tools or think)."""
    return CAPABILITIES + (["thinking"] if thinking_markers(template) else [])


def catalog_entry(name: str, path: Path) -> dict:
    """A built-in model's listing entry, from its GGUF file."""
    return {
        "name": name, "model": name, "modified_at": modified_at(path), "size": path.stat().st_size,
        "digest": file_digest(path).removeprefix("sha256:"), "details": details(path),
    }


def catalog_entry_before_assembly(name: str, facts: dict) -> dict:
    """A built-in model's listing entry while its GGUF is still in parts (packaged_models.listing_before_assembly)."""
    return {"name": name, "model": name, "modified_at": rfc3339(facts["modified"]), "size": facts["size"],
            "digest": facts["digest"], "details": facts["details"]}


def list_models() -> list[dict]:
    """The store's models, then the built-in catalog models whose packages are installed
    (Gemma 3 from its package's parts while they are not assembled: listing never writes 253 MB)."""
    entries = {entry["name"]: entry for entry in store.list_models()}
    for packaged in CATALOG:
        if packaged.name in entries or importlib.util.find_spec(packaged.module) is None:
            continue
        try:
            facts = listing_before_assembly(packaged)
            if facts is not None:
                entries[packaged.name] = catalog_entry_before_assembly(packaged.name, facts)
            else:
                entries[packaged.name] = catalog_entry(packaged.name, gguf_path(packaged))
        except (ModelPackageMissing, OSError):
            continue
    return list(entries.values())


def show(recipe: ModelRecipe, name: str, verbose: bool = False) -> dict:
    gguf_file = read(recipe.gguf_path)  # the header, parsed once
    if recipe.source == "store":
        shown = {key: value for key, value in store.show(name, verbose).items() if key != "params"}  # not Ollama's
        return {**shown, "tensors": tensors(gguf_file), "capabilities": capabilities(shown["template"])}
    path, metadata = recipe.gguf_path, gguf_file.metadata
    template = str(metadata.get("tokenizer.chat_template", "") or "")
    return {
        "license": str(metadata.get("general.license", "") or ""), "modelfile": f"# Modelfile generated by refllm\nFROM {recipe.name}\n",
        "parameters": "", "template": template, "system": "", "details": details(path),
        "model_info": model_info(gguf_file, verbose), "tensors": tensors(gguf_file),
        "capabilities": capabilities(template), "modified_at": modified_at(path),
    }


def copy(source: ModelRecipe, source_name: str, destination: str) -> None:
    if source.source == "store":
        store.copy(source_name, destination)
    else:  # a catalog model is not in the store yet: add it under the new name
        store.pull(source_name, name=destination)
