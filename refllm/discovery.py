"""Model discovery for the oLLM-style surface (``refllm models list|info``, ``/v1/refllm/models``).

Two kinds of entries, as the oLLM seed names them:

    built-in          the catalog models refllm knows (``smollm2``, ``gemma3``), whether or not
                      their PyPI package is installed
    discovered-local  models found in the store under ``runtime.models_dir``

and each reference has an availability: ``materialized`` (its GGUF file is on this machine,
ready to load) or ``not-materialized`` (``refllm pull NAME`` or installing its package makes it so).

    list_references()                      -> [{"reference", "kind", "availability", ...}, ...]
    list_references(installed_only=True)   -> only the materialized ones
    reference_info("smollm2")              -> the entry plus its runtime plan (nothing is loaded)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from refllm.errors import ModelNotFound
from refllm.packaged_models import CATALOG, GEMMA3, PackagedModel, find_catalog_entry

MATERIALIZED, NOT_MATERIALIZED = "materialized", "not-materialized"


def catalog_file(entry: PackagedModel) -> Path | None:
    """The catalog model's GGUF if it is on disk now (never assembles or downloads anything)."""
    spec = importlib.util.find_spec(entry.module)
    if spec is None:
        return None
    if entry is GEMMA3:  # shipped in chunks; materialized once assembled (whole) into the user's cache
        from refllm.packaged_models import assembled_gemma3

        return assembled_gemma3()
    from refllm.packaged_models import gguf_path

    path = gguf_path(entry)
    return path if path.is_file() else None


def _built_in(entry: PackagedModel) -> dict:
    path = catalog_file(entry)
    return {
        "reference": entry.name, "aliases": list(entry.aliases), "kind": "built-in",
        "availability": MATERIALIZED if path else NOT_MATERIALIZED,
        "description": entry.description, "path": str(path) if path else None,
        "size": path.stat().st_size if path else None,
        "install_hint": None if path else f"pip install {entry.package}",
    }


def _local(listed: dict) -> dict:
    return {
        "reference": listed["name"], "aliases": [], "kind": "discovered-local", "availability": MATERIALIZED,
        "description": " ".join(str(v) for v in (listed["details"].get("family"), listed["details"].get("parameter_size"),
                                                 listed["details"].get("quantization_level")) if v),
        "path": None, "size": listed["size"], "install_hint": None,
    }


def list_references(installed_only: bool = False) -> list[dict]:
    """Built-in catalog entries, then the store's models (see the module docstring)."""
    from refllm import store

    entries = [_built_in(entry) for entry in CATALOG] + [_local(listed) for listed in store.list_models()]
    if installed_only:
        entries = [e for e in entries if e["availability"] == MATERIALIZED]
    return entries


def reference_info(reference: str, backend: str | None = None, no_specialization: bool = False,
                   num_ctx: int | None = None) -> dict:
    """One reference resolved (store name, GGUF path or catalog model) with its runtime plan."""
    from refllm import store
    from refllm.engine.sessions import execution_metadata
    from refllm.plan import build_plan

    entry = find_catalog_entry(str(reference).lower())
    try:
        resolved = store.resolve(reference)
    except ModelNotFound:
        if entry is None:
            raise
        return {**_built_in(entry), "resolved": None, "plan": None}  # known, but its package is not installed
    plan = build_plan(resolved.gguf_path, backend=backend, no_specialization=no_specialization, num_ctx=num_ctx)
    plan.model = resolved.name
    kind = {"store": "discovered-local", "catalog": "built-in", "file": "file"}[resolved.source]
    return {
        "reference": str(reference), "kind": kind, "availability": MATERIALIZED,
        "resolved": {"name": resolved.name, "source": resolved.source, "path": str(resolved.gguf_path),
                     "parameters": resolved.params, "system": resolved.system},
        "support_level": plan.support_level, "runtime": execution_metadata(plan), "plan": plan.to_dict(),
    }
