"""The JSON-schema suite for constrained decoding (tests/test_structured.py, tests/test_tools.py).

Each entry: (id, prompt, schema). Free-text strings carry a maxLength and numbers a range
(and, for fractions, a multipleOf): a grammar allows a number of any length, and small
models greedily repeat digits ("102489763528888...") until num_predict, so bounds make
every answer finish in a few dozen tokens; objects are closed (additionalProperties false)
unless the entry is about open objects. Outputs are checked with the independent
``jsonschema`` validator (formats included).
"""

from __future__ import annotations

NAME = {"type": "string", "minLength": 1, "maxLength": 16}
COUNT = {"type": "integer", "minimum": 0, "maximum": 1000}
PRICE = {"type": "number", "minimum": 0, "maximum": 1000, "multipleOf": 0.01}

SCHEMAS: list[tuple[str, str, dict]] = [
    ("string", "Name a fruit.", NAME),
    ("integer", "How many legs does a spider have?", COUNT),
    ("number", "What is pi to two decimals?", {"type": "number", "minimum": 0, "maximum": 10, "multipleOf": 0.01}),
    ("boolean", "Is the sky blue?", {"type": "boolean"}),
    ("null", "Say nothing.", {"type": "null"}),
    ("enum", "Pick a colour.", {"enum": ["red", "green", "blue"]}),
    ("const", "Say yes.", {"const": "yes"}),
    ("mixed-enum", "Pick one.", {"enum": [1, "two", None, True]}),
    ("object", "Describe a person.", {"type": "object", "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 150}},
                                      "required": ["name", "age"], "additionalProperties": False}),
    ("optional-props", "Describe a city.", {"type": "object", "properties": {"city": NAME, "country": NAME},
                                            "required": ["city"], "additionalProperties": False}),
    ("nested", "Describe a book and its author.", {
        "type": "object", "additionalProperties": False, "required": ["title", "author"],
        "properties": {"title": NAME, "author": {"type": "object", "additionalProperties": False,
                                                 "properties": {"name": NAME, "born": {"type": "integer", "minimum": 1000, "maximum": 2100}},
                                                 "required": ["name", "born"]}}}),
    ("array", "List three animals.", {"type": "array", "items": NAME, "minItems": 1, "maxItems": 3}),
    ("array-exact", "Give two numbers.", {"type": "array", "items": COUNT, "minItems": 2, "maxItems": 2}),
    ("array-objects", "List two products with prices.", {
        "type": "array", "maxItems": 2, "minItems": 1,
        "items": {"type": "object", "properties": {"item": NAME, "price": PRICE},
                  "required": ["item", "price"], "additionalProperties": False}}),
    ("prefix-items", "A name and an age.", {"type": "array", "prefixItems": [NAME, {"type": "integer", "minimum": 0, "maximum": 150}], "items": False}),
    ("min-max", "A score from 1 to 10.", {"type": "integer", "minimum": 1, "maximum": 10}),
    ("exclusive", "A probability.", {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.001}),
    ("string-length", "A three-letter word.", {"type": "string", "minLength": 3, "maxLength": 3}),
    ("pattern", "A UK-style postcode area.", {"type": "string", "pattern": "^[A-Z]{1,2}[0-9]{1,2}$"}),
    ("pattern-phone", "A phone number.", {"type": "string", "pattern": "^\\+[0-9]{6,12}$"}),
    ("format-date", "Today's date.", {"type": "string", "format": "date"}),
    ("format-email", "An email address.", {"type": "string", "format": "email", "maxLength": 32}),
    ("format-uuid", "A UUID.", {"type": "string", "format": "uuid"}),
    ("format-ipv4", "An IP address.", {"type": "string", "format": "ipv4"}),
    ("any-of", "A number or a word.", {"anyOf": [COUNT, NAME]}),
    ("one-of", "A cat or a dog.", {"oneOf": [
        {"type": "object", "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["kind", "lives"], "additionalProperties": False},
        {"type": "object", "properties": {"kind": {"const": "dog"}, "breed": NAME}, "required": ["kind", "breed"], "additionalProperties": False}]}),
    ("type-list", "A value or nothing.", {"type": ["integer", "null"], "minimum": 0, "maximum": 1000}),
    ("ref-defs", "A point.", {"$defs": {"coord": {"type": "integer", "minimum": -100, "maximum": 100}},
                              "type": "object", "properties": {"x": {"$ref": "#/$defs/coord"}, "y": {"$ref": "#/$defs/coord"}},
                              "required": ["x", "y"], "additionalProperties": False}),
    ("ref-recursive", "A small tree.", {"$defs": {"node": {"type": "object", "additionalProperties": False, "required": ["v"],
                                                          "properties": {"v": {"type": "integer", "minimum": 0, "maximum": 99},
                                                                         "kids": {"type": "array", "maxItems": 2, "items": {"$ref": "#/$defs/node"}}}}},
                                        "$ref": "#/$defs/node"}),
    ("all-of", "An id and a label.", {"allOf": [{"type": "object", "properties": {"id": COUNT}, "required": ["id"]},
                                                {"type": "object", "properties": {"label": NAME}, "required": ["label"]}],
                                      "additionalProperties": False, "properties": {"id": {}, "label": {}}}),
    ("enum-in-object", "A traffic light state.", {"type": "object", "properties": {"light": {"enum": ["red", "amber", "green"]},
                                                                                   "blinking": {"type": "boolean"}},
                                                  "required": ["light", "blinking"], "additionalProperties": False}),
    ("typed-additional", "Word counts.", {"type": "object", "additionalProperties": COUNT, "maxProperties": 3}),
    ("multiple-of", "An even number.", {"type": "integer", "multipleOf": 2, "minimum": 0, "maximum": 100}),
]

OPEN_ENDED = {"typed-additional"}  # keys are free strings: random logits may run long there

UNSUPPORTED: list[tuple[dict, str]] = [  # schema -> a word the 400 must name
    ({"not": {"type": "string"}}, "not"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "string", "format": "no-such-format"}, "no-such-format"),
    ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, "if"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired"),
    ({"type": "array", "contains": {"type": "integer"}}, "contains"),
    ({"type": "object", "propertyNames": {"maxLength": 8}}, "propertyNames"),
    ({"x-guidance": {"lenient": True}, "not": {"type": "null"}}, "not"),  # a schema cannot switch the check off
]
