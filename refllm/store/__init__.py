"""The model store: ``pull``, ``create``, ``list``, ``show``, ``cp``, ``rm`` as a Python API.

The CLI (``refllm/cli/store.py``) and the server (``/api/tags``, ``/api/show``, ...)
both call these functions; each opens the store at the configured models
directory (``REFLLM_MODELS``, default ``~/.refllm/models``):

    from refllm import store
    store.pull("smollm2")                          # catalog model -> smollm2:latest
    store.create("pirate", "FROM smollm2\\nSYSTEM You are a pirate.")
    store.list_models()                            # [{"name": "pirate:latest", "size": ..., "details": {...}}, ...]
    model = store.resolve("pirate")                # ResolvedModel(gguf_path, params, system, template, messages, license)

Progress callbacks receive Ollama's progress objects:
``{"status": "downloading", "digest": ..., "total": ..., "completed": ...}`` (bytes; with
``"unit": "tensors"`` the counts are tensors, while quantizing or converting).
Errors are ``RefllmError`` subclasses: ``ModelNotFound`` (404), ``InvalidRequest`` and
``ModelfileError`` (400), ``StoreError`` (500), ``DownloadError`` (502).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from refllm.errors import ModelNotFound
from refllm.store.blobs import DigestMismatch, Progress, StoreError, no_progress
from refllm.store.modelfile import Modelfile, ModelfileError, parse_modelfile
from refllm.store.names import InvalidModelName, ModelName, is_valid_name, parse_name
from refllm.store.store import DownloadError, QUANTIZE_CHOICES, ResolvedModel, Store, model_info

__all__ = [
    "DigestMismatch", "DownloadError", "InvalidModelName", "Modelfile", "ModelfileError", "ModelName",
    "QUANTIZE_CHOICES", "ResolvedModel", "Store", "StoreError", "copy", "create", "delete", "has_blob",
    "list_models", "model_info", "open_store", "parse_modelfile", "parse_name", "pull", "resolve", "show", "verify",
    "write_blob",
]


def open_store(models_dir: str | os.PathLike | None = None) -> Store:
    """The store at ``models_dir``, else at the configured ``runtime.models_dir``."""
    if models_dir is None:
        from refllm.config import load_settings

        models_dir = load_settings().runtime.models_dir
    return Store(models_dir)


def resolve(name_or_path: str | os.PathLike) -> ResolvedModel:
    """What a model reference means, in this order: a store name (``name``, ``name:tag``, or Ollama's
    full ``registry.ollama.ai/library/name:tag``), a GGUF file path, a built-in catalog model
    (``smollm2``, ``gemma3``, in any of those spellings; no store entry needed).

    Store models carry their Modelfile defaults; the other two come with none.
    """
    from refllm.packaged_models import ModelPackageMissing, find_catalog_entry, gguf_path

    text = str(name_or_path)
    if is_valid_name(text):
        from refllm.config import load_settings

        models_dir = load_settings().runtime.models_dir
        name = parse_name(text)
        if (models_dir / "manifests" / name.namespace / name.model / name.tag).is_file():  # no store, no mkdir
            return Store(models_dir).resolve(text)
    path = Path(text).expanduser()
    if path.is_file():
        return ResolvedModel(name=path.stem, gguf_path=path, source="file")
    if path.suffix == ".gguf":
        raise ModelNotFound(f"model file not found: {path}")
    if os.sep in text and not is_valid_name(text):  # hf.co/me/model:tag, some/dir/file
        raise ModelNotFound(f"model file not found: {path}, and not a model name either: {_name_problem(text)}")
    entry = find_catalog_entry(text.lower())
    if entry is None:
        raise ModelNotFound(f"model '{text}' not found (not in the store, not a file, not a catalog model); "
                            "see `refllm list`, or `refllm pull NAME`")
    try:
        return ResolvedModel(name=entry.name, gguf_path=gguf_path(entry), source="catalog")
    except ModelPackageMissing:
        raise ModelNotFound(f"model '{text}' is not installed; run `refllm pull {text}`") from None


def _name_problem(text: str) -> str:
    try:
        parse_name(text)
    except InvalidModelName as e:
        return str(e)
    return "a valid name"


@contextlib.contextmanager
def _disk_errors(action: str):
    """A full disk or a permission problem becomes a one-line StoreError, not a traceback."""
    try:
        yield
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise StoreError(f"{action} failed: {e.strerror or e}{where}") from None


def list_models() -> list[dict]:
    with _disk_errors("list"):
        return open_store().list_models()


def show(name: str, verbose: bool = False) -> dict:
    with _disk_errors("show"):
        return open_store().show(name, verbose)


def verify(name: str, progress: Progress = no_progress) -> list[str]:
    with _disk_errors("verify"):
        return open_store().verify(name, progress)


def copy(source: str, destination: str) -> None:
    with _disk_errors("copy"):
        open_store().copy(source, destination)


def delete(name: str) -> list[str]:
    with _disk_errors("delete"):
        return open_store().delete(name)


def create(name: str, modelfile: str | Modelfile, quantize: str | None = None,
           progress: Progress = no_progress, base_dir: str | os.PathLike | None = None) -> ResolvedModel:
    with _disk_errors("create"):
        return open_store().create(name, modelfile, quantize=quantize, progress=progress, base_dir=base_dir)


def pull(source: str, name: str | None = None, progress: Progress = no_progress,
         expected_digest: str | None = None) -> ResolvedModel:
    with _disk_errors("pull"):
        return open_store().pull(source, name=name, progress=progress, expected_digest=expected_digest)


def has_blob(digest: str) -> bool:
    with _disk_errors("reading the store"):
        return open_store().has_blob(digest)


def write_blob(digest: str, stream, progress: Progress = no_progress) -> str:
    with _disk_errors("writing the blob"):
        return open_store().write_blob(digest, stream, progress)
