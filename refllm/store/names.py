"""Model names: ``[registry.ollama.ai/][namespace/]model[:tag]``, as Ollama writes them.

    "smollm2"           -> library/smollm2:latest   (shown as "smollm2:latest")
    "smollm2:135m"      -> library/smollm2:135m
    "me/assistant:v2"   -> me/assistant:v2
    "registry.ollama.ai/library/smollm2:latest" -> library/smollm2:latest

Ollama's full form starts with the registry's host; refllm has no registry, so only
Ollama's default host is accepted there, and it is dropped (it names the same model).

Names are case-insensitive (stored lower-case).  Each part is letters, digits,
``_``, ``-`` and ``.``, starting with a letter or digit, so a name can never
climb out of the store directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from refllm.errors import InvalidRequest

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
_PART = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,79}$")
_TAG = re.compile(r"^[a-z0-9_][a-z0-9_.\-]{0,127}$")


class InvalidModelName(InvalidRequest):
    pass


@dataclass(frozen=True)
class ModelName:
    namespace: str
    model: str
    tag: str

    def __str__(self) -> str:  # the display form: the default namespace is left out
        prefix = "" if self.namespace == DEFAULT_NAMESPACE else f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"


def parse_name(text: str) -> ModelName:
    """Split and check a model name; raise InvalidModelName with the reason."""
    name = str(text).strip().lower()
    if not name:
        raise InvalidModelName("empty model name")
    path, _, tag = name.rpartition(":") if ":" in name else (name, "", DEFAULT_TAG)
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == DEFAULT_HOST:  # Ollama's fully qualified form
        parts = parts[1:]
    if len(parts) > 2:
        raise InvalidModelName(f"invalid model name '{text}': use [{DEFAULT_HOST}/][namespace/]model[:tag] "
                               "(refllm knows no other registry)")
    namespace, model = (DEFAULT_NAMESPACE, parts[0]) if len(parts) == 1 else parts
    for part in (namespace, model):
        if not _PART.match(part) or ".." in part:
            raise InvalidModelName(
                f"invalid model name '{text}': each part must start with a letter or digit and "
                "contain only letters, digits, '_', '-' and '.'"
            )
    if not _TAG.match(tag or ""):
        raise InvalidModelName(f"invalid tag in model name '{text}'")
    return ModelName(namespace, model, tag)


def is_valid_name(text: str) -> bool:
    try:
        parse_name(text)
    except InvalidModelName:
        return False
    return True
