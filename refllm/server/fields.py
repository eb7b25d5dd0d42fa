"""Reading a JSON request body field by field, with a 400 that names the field on any mistake.

Every route reads its body through these helpers, so a wrong type can never turn
into a 500 further down: ``body = json_body()`` then ``optional(body, "stream", bool, True)``.
"""

from __future__ import annotations

import math
from typing import Any

from flask import request

from refllm.errors import InvalidRequest

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "an object"}


def json_body() -> dict:
    """The request body as a JSON object (an empty body counts as ``{}``)."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        import json

        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidRequest(f"invalid JSON body: {e}") from None
    except RecursionError:
        raise InvalidRequest("invalid JSON body: nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def optional(body: dict, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """``body[name]`` if present and not null, checked against ``kind``; else ``default``."""
    value = body.get(name)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not any(_is(value, k) for k in kinds):
        expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise InvalidRequest(f"field {name!r} must be {expected}")
    return float(value) if kinds == (float,) else value


def required(body: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    value = optional(body, name, kind)
    if value is None:
        raise InvalidRequest(f"field {name!r} is required")
    return value


def string_list(body: dict, name: str) -> list[str] | None:
    """A string or an array of strings, as a list (``None`` when absent)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidRequest(f"field {name!r} must be a string or an array of strings")


def integer_in(body: dict, name: str, low: int, high: int, default: int | None = None) -> int | None:
    value = optional(body, name, int, default)
    if value is not None and not low <= value <= high:
        raise InvalidRequest(f"field {name!r} must be between {low} and {high}")
    return value


def reject_unsupported(body: dict, name: str, why: str, allowed_empty: tuple = (None, "", [], {}, False)) -> None:
    """A 400 naming ``name`` when the client asks for something we do not do yet (never silently ignored)."""
    value = body.get(name)
    if any(value is v or (type(value) is type(v) and value == v) for v in allowed_empty):
        return
    raise InvalidRequest(f"field {name!r} is not supported: {why}")


def tool_calls_field(value: Any, where: str) -> list[dict]:
    """An assistant message's ``tool_calls`` (Ollama's or OpenAI's shape): objects, each with a
    ``function`` object naming the function; its ``arguments`` an object or a JSON string."""
    if not isinstance(value, list):
        raise InvalidRequest(f"{where} must be an array of tool calls on an assistant message")
    for i, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidRequest(f"{where}[{i}] must be {{\"function\": {{\"name\": ..., \"arguments\": ...}}}}")
        if not isinstance(function.get("arguments", {}), (dict, str)):
            raise InvalidRequest(f"{where}[{i}].function.arguments must be an object or a JSON string")
    return value
