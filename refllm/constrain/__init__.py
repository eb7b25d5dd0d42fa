"""Constrained decoding: JSON schemas and grammars -> a token mask at every generation step.

``grammar``  llguidance adapter: the vocabulary table, ``TokenConstraint`` (mask/advance)
``schema``   the APIs' ``format`` / ``response_format`` / ``text.format`` -> a checked JSON schema
``llamacpp_objects``  objects as llama.cpp's json-schema-to-grammar reads them (no extra keys by default)
"""

from refllm.constrain.grammar import ConstraintError, TokenConstraint, json_schema_grammar, lark_grammar, token_table
from refllm.constrain.llamacpp_objects import llamacpp_objects
from refllm.constrain.schema import ANY_JSON_OBJECT, ollama_format, openai_response_format, schema_guidance

__all__ = [
    "ANY_JSON_OBJECT", "ConstraintError", "TokenConstraint", "json_schema_grammar", "lark_grammar", "llamacpp_objects",
    "ollama_format", "openai_response_format", "schema_guidance", "token_table",
]
