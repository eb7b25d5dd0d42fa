"""Model names as the API accepts them: ``name``, ``name:tag``, ``namespace/name:tag``.

A name never reaches the file system unchecked: no path separators other than the
namespace ``/``, no ``..``, no absolute paths, nothing but letters, digits and ``._-``.
"""

from __future__ import annotations

import re

from refllm.errors import InvalidRequest

MAX_NAME_LENGTH = 256
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"
_NAME = re.compile(rf"^(?:{_PART}/){{0,2}}{_PART}(?::{_PART})?$")


def validate_model_name(name: object, field: str = "model") -> str:
    """Return ``name`` if it is a well-formed model name, else raise ``InvalidRequest`` naming ``field``."""
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{field} is required (a model name such as \"smollm2:135m\")")
    if len(name) > MAX_NAME_LENGTH or not _NAME.match(name) or ".." in name:
        raise InvalidRequest(f"invalid model name {name[:80]!r} in {field!r}: use letters, digits, '._-', an optional namespace/ and :tag")
    return name
