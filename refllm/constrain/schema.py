"""The ``format`` a client asks for, in each API's spelling -> one JSON schema (or None).

    Ollama        "format": "json"                          -> any JSON object
                  "format": {JSON schema}                   -> that schema
    OpenAI chat   "response_format": {"type": "text"}        -> None (free text)
                  {"type": "json_object"}                   -> any JSON object
                  {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}
    Responses     "text": {"format": {"type": "json_schema", "name", "schema", "strict"}} (same, flat)

Every schema is compiled once here, so a feature the grammar engine does not implement
(``not``, ``uniqueItems``, an unknown string ``format``, ...) is a 400 naming it before any
model is loaded, never an answer that silently ignores part of the schema.

Supported (llguidance's JSON schema compiler): type object/array/string/number/integer/
boolean/null (and lists of types), enum, const, properties, required, additionalProperties,
items, prefixItems, minItems/maxItems, minLength/maxLength, pattern, format (date-time, date,
time, duration, email, hostname, ipv4, ipv6, uuid, uri), minimum/maximum/exclusive*,
multipleOf (integers), anyOf, oneOf (as anyOf), allOf, $ref/$defs/definitions.
Objects are read as llama.cpp reads them: an object with properties and no
additionalProperties allows no other keys (``llamacpp_objects``).
"""

from __future__ import annotations

import json

from refllm.constrain.grammar import json_schema_grammar
from refllm.errors import InvalidRequest

ANY_JSON_OBJECT: dict = {"type": "object"}


def ollama_format(value) -> dict | None:
    """Ollama's ``format`` field -> a checked JSON schema, or None for free text."""
    if value is None or value == "":
        return None
    if value == "json":
        return ANY_JSON_OBJECT
    if isinstance(value, dict):
        return checked_schema(value, "format")
    raise InvalidRequest("field 'format' must be \"json\" or a JSON schema object")


def openai_response_format(value, where: str = "response_format") -> dict | None:
    """OpenAI's ``response_format`` (chat) or ``text.format`` (Responses) -> schema or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"field {where!r} must be an object with a 'type'")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ANY_JSON_OBJECT
    if kind == "json_schema":
        spec = value.get("json_schema", value)  # chat nests it; Responses has name/schema at the top
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise InvalidRequest(f"field '{where}' of type json_schema needs a 'schema' object")
        return checked_schema(spec["schema"], f"{where}.schema")
    raise InvalidRequest(f"field '{where}.type' must be one of text, json_object, json_schema")


def checked_schema(schema: dict, where: str) -> dict:
    try:
        json_schema_grammar(schema)
    except InvalidRequest as e:
        raise InvalidRequest(f"field {where!r}: {e}") from None
    return schema


def schema_guidance(schema: dict) -> str:
    """The instruction put into the prompt with a format (Ollama issue #8162: the grammar makes
    the output valid, the instruction makes it meaningful)."""
    if schema == ANY_JSON_OBJECT:
        return "Respond only with a JSON object."
    return "Respond only with JSON that follows this JSON schema:\n" + json.dumps(schema, ensure_ascii=False)
