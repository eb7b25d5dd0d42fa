"""What the listing routes say about a model file: details, digest, dates (read from the GGUF header only).

/api/show's ``model_info`` (the metadata as JSON) is ``refllm.store.model_info``, shared with the store's own ``show``.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from datetime import datetime, timezone
from pathlib import Path

from refllm.gguf import read
from refllm.store.store import file_type_name, format_parameter_count

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
