"""Model names as the API accepts them: ``name``, ``name:tag``, ``namespace/name:tag``.

The rules are the store's (``refllm.store.parse_name``): letters, digits and ``._-``,
no ``..``, at most one namespace after an optional ``registry.ollama.ai/`` (Ollama's full
form, ``registry.ollama.ai/library/name:tag``). A name never reaches the file system unchecked, and
the API never takes a file path (``x.gguf``) where a model name belongs.
"""

from __future__ import annotations

from refllm.errors import InvalidRequest


def validate_model_name(name: object, field: str = "model") -> str:
    """Return ``name`` if it is a well-formed model name, else raise ``InvalidRequest`` naming ``field``."""
    from refllm.store import InvalidModelName, parse_name

    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"field {field!r} is required (a model name such as \"smollm2:135m\")")
    if name.lower().endswith(".gguf"):
        raise InvalidRequest(f"field {field!r}: give a model name, not a file ({name[:80]!r}); `refllm pull` or `refllm create` adds files to the store")
    try:
        parse_name(name)
    except InvalidModelName as e:
        raise InvalidRequest(f"field {field!r}: {e}") from None
    return name
