"""Objects in a JSON schema as llama.cpp's json-schema-to-grammar reads them (and so Ollama).

llguidance follows the JSON Schema specification, llama.cpp's GBNF converter (the one
Ollama and llama-server use) does not, for objects:

    schema                                         llguidance         llama.cpp (what we do)
    {"type": "object"}                             any object         any object
    "properties" without "additionalProperties"    extra keys allowed no extra keys
    "additionalProperties": true or {}             extra keys, any    extra keys, any value
    "additionalProperties": {schema}               extra keys         extra keys, values of that schema
    "additionalProperties": false                  no extra keys      no extra keys
    key order                                      as in "properties" required ones first (in
                                                                      "properties" order), then the
                                                                      optional ones, then extra keys
    a "required" name that is not a property       must appear        ignored
    no "type", but "properties"                    any JSON value     an object
    "allOf": [objects]                             the intersection   one object with every part's
                                                                      properties, all required
                                                                      (optional for a part that is an
                                                                      "anyOf"), no extra keys

``llamacpp_objects(schema)`` rewrites a copy of the schema so that llguidance, held to the
specification, allows exactly what llama.cpp allows (sources: llama.cpp common/json-schema.cpp
``build_object``, common/json-schema-to-grammar.cpp ``_build_object_rule`` and
``_visit_all_of``; grammars/README.md "A word about additionalProperties").
Extra keys never repeat a named property and come after them, in both engines.
"""

from __future__ import annotations

SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
SUBSCHEMA_ONE = ("additionalProperties", "items", "additionalItems")


def llamacpp_objects(schema: dict) -> dict:
    """A copy of ``schema`` whose objects allow what llama.cpp's grammar allows (see above)."""
    return _rewrite(schema, schema)


def _rewrite(node, root: dict, close: bool = True):
    """``close``: False for the parts of an ``allOf`` that is left to llguidance (closing each
    part would make their intersection unsatisfiable); their own properties are closed."""
    if isinstance(node, list):
        return [_rewrite(item, root, close) for item in node]
    if not isinstance(node, dict):
        return node
    node = _merged_all_of(node, root) or node
    out = {}
    for key, value in node.items():
        if key in SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _rewrite(sub, root) for name, sub in value.items()}
        elif key in SUBSCHEMA_LISTS or key in SUBSCHEMA_ONE:
            out[key] = _rewrite(value, root, close=key != "allOf")
        else:
            out[key] = value
    if close and _reads_as_object(out):
        out.setdefault("type", "object")
        _close(out)
    return out


def _reads_as_object(node: dict) -> bool:
    kind = node.get("type")
    if kind is None:  # without a type, llama.cpp reads properties as an object (alternatives win first)
        decided_elsewhere = any(k in node for k in ("$ref", "anyOf", "oneOf", "const", "enum", "allOf"))
        return _has_properties(node) and not decided_elsewhere
    return kind == "object" or (isinstance(kind, list) and "object" in kind)


def _has_properties(node: dict) -> bool:
    return "properties" in node or node.get("additionalProperties", True) is not True


def _close(node: dict) -> None:
    """No extra keys unless additionalProperties says so; required properties first."""
    properties = node.get("properties")
    if not isinstance(properties, dict):
        node.pop("required", None)  # keys are free (or none): llama.cpp ignores required
        return
    node.setdefault("additionalProperties", False)
    required = [name for name in properties if name in set(node.get("required") or [])]
    node["properties"] = {name: properties[name] for name in required} | {
        name: sub for name, sub in properties.items() if name not in required}
    if "required" in node:
        node["required"] = required


def _merged_all_of(node: dict, root: dict) -> dict | None:
    """An ``allOf`` of objects -> the one object llama.cpp makes of it (None: not that case)."""
    parts = node.get("allOf")
    if not isinstance(parts, list) or not parts or node.get("type", "object") != "object" or _has_properties(node):
        return None
    properties, required = {}, []
    for part in parts:
        alternatives = part.get("anyOf") if isinstance(part, dict) and "anyOf" in part else None
        for piece in alternatives if isinstance(alternatives, list) else [part]:
            piece = _resolved(piece, root)
            if not isinstance(piece, dict) or not isinstance(piece.get("properties"), dict):
                return None  # not all objects: leave the intersection to llguidance
            for name, sub in piece["properties"].items():
                properties.setdefault(name, sub)
                if alternatives is None and name not in required:
                    required.append(name)
    rest = {k: v for k, v in node.items() if k != "allOf"}
    return rest | {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _resolved(node, root: dict):
    """Follow a local "$ref" ("#/$defs/x"); anything else as it is."""
    seen = set()
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#") and node["$ref"] not in seen:
        seen.add(node["$ref"])
        target = root
        for part in node["$ref"][1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        node = target
    return node
