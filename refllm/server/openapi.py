"""The OpenAPI 3.0 description of our routes, served at ``/openapi.json``.

Written by hand, kept small: request bodies say which fields exist and their types
(what schemathesis uses to fuzz the live server); responses list status codes with a
short description. Other parts of refllm add their routes with ``register_path``.
"""

from __future__ import annotations

from copy import deepcopy

from refllm import __version__

STRING, BOOLEAN, INTEGER, NUMBER = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}, {"type": "number"}
MODEL = {"type": "string", "example": "smollm2:135m"}
STRINGS = {"oneOf": [STRING, {"type": "array", "items": STRING}]}
KEEP_ALIVE = {"oneOf": [STRING, NUMBER]}
OPTIONS = {
    "type": "object", "description": "Ollama sampler and runtime options",
    "properties": {name: kind for name, kind in (
        ("num_ctx", INTEGER), ("num_predict", INTEGER), ("seed", INTEGER), ("temperature", NUMBER),
        ("top_k", INTEGER), ("top_p", NUMBER), ("min_p", NUMBER), ("typical_p", NUMBER),
        ("repeat_last_n", INTEGER), ("repeat_penalty", NUMBER), ("presence_penalty", NUMBER),
        ("frequency_penalty", NUMBER), ("stop", {"type": "array", "items": STRING}))},
}
MESSAGE = {"type": "object", "required": ["role"], "properties": {
    "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]}, "content": STRING,
    "images": {"type": "array", "items": STRING}}}
OPENAI_MESSAGE = {"type": "object", "required": ["role"], "properties": {
    "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
    "content": {"oneOf": [STRING, {"type": "array", "items": {"type": "object"}}]}}}
ERROR = {"description": "an error: {\"error\": ...}", "content": {"application/json": {"schema": {"type": "object", "required": ["error"]}}}}


def _object(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required, "properties": properties}


def _operation(summary: str, body: dict | None = None, ok: str = "success", content_type: str = "application/json",
               errors: tuple[int, ...] = (400, 404)) -> dict:
    operation: dict = {"summary": summary, "responses": {"200": {"description": ok, "content": {content_type: {}}}}}
    for status in errors:
        operation["responses"][str(status)] = ERROR
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return operation


GENERATION_COMMON = dict(model=MODEL, stream=BOOLEAN, options=OPTIONS, keep_alive=KEEP_ALIVE, logprobs=BOOLEAN,
                         top_logprobs={"type": "integer", "minimum": 0, "maximum": 20})
OPENAI_SAMPLING = dict(model=MODEL, temperature=NUMBER, top_p=NUMBER, seed=INTEGER, stop=STRINGS,
                       frequency_penalty=NUMBER, presence_penalty=NUMBER, stream=BOOLEAN,
                       stream_options=_object([], include_usage=BOOLEAN))

_PATHS: dict = {
    "/": {"get": {**_operation("health check", ok="refllm is running", content_type="text/plain", errors=()), "security": []},
          "head": {**_operation("health check", content_type="text/plain", errors=()), "security": []}},
    "/api/version": {"get": _operation("runtime version", errors=())},
    "/api/generate": {"post": _operation("generate a completion (NDJSON stream unless stream: false)", _object(
        ["model"], prompt=STRING, system=STRING, raw=BOOLEAN, images={"type": "array", "items": STRING}, **GENERATION_COMMON))},
    "/api/chat": {"post": _operation("generate the next chat message (NDJSON stream unless stream: false)", _object(
        ["model"], messages={"type": "array", "items": MESSAGE}, **GENERATION_COMMON))},
    "/api/embed": {"post": _operation("embed one or more texts", _object(
        ["model", "input"], model=MODEL, input=STRINGS, truncate=BOOLEAN, dimensions={"type": "integer", "minimum": 1},
        options=OPTIONS, keep_alive=KEEP_ALIVE))},
    "/api/embeddings": {"post": _operation("embed one text (legacy)", _object(["model", "prompt"], model=MODEL, prompt=STRING, options=OPTIONS))},
    "/api/tags": {"get": _operation("list local models", errors=())},
    "/api/show": {"post": _operation("show a model's details", _object(["model"], model=MODEL, verbose=BOOLEAN))},
    "/api/ps": {"get": _operation("list loaded models", errors=())},
    "/api/copy": {"post": _operation("copy a model under a new name", _object(["source", "destination"], source=MODEL, destination=MODEL), errors=(400, 404, 501))},
    "/api/delete": {"delete": _operation("delete a model", _object(["model"], model=MODEL), errors=(400, 404, 501))},
    "/api/create": {"post": _operation("create a model", _object(["model"], model=MODEL, stream=BOOLEAN), errors=(400, 404, 501))},
    "/api/pull": {"post": _operation("pull a model", _object(["model"], model=MODEL, stream=BOOLEAN), errors=(400, 404, 501))},
    "/api/blobs/{digest}": {
        "parameters": [{"name": "digest", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}}],
        "head": _operation("does the blob exist", errors=(400, 404, 501)),
    },
    "/v1/chat/completions": {"post": _operation("OpenAI chat completion (SSE when stream: true)", _object(
        ["model", "messages"], messages={"type": "array", "items": OPENAI_MESSAGE, "minItems": 1},
        max_tokens={"type": "integer", "minimum": 1}, max_completion_tokens={"type": "integer", "minimum": 1},
        logprobs=BOOLEAN, top_logprobs={"type": "integer", "minimum": 0, "maximum": 20}, **OPENAI_SAMPLING))},
    "/v1/completions": {"post": _operation("OpenAI text completion (SSE when stream: true)", _object(
        ["model", "prompt"], prompt=STRING, max_tokens={"type": "integer", "minimum": 1},
        logprobs={"type": "integer", "minimum": 0, "maximum": 20}, **OPENAI_SAMPLING))},
    "/v1/embeddings": {"post": _operation("OpenAI embeddings", _object(
        ["model", "input"], model=MODEL, input=STRINGS, encoding_format={"type": "string", "enum": ["float", "base64"]},
        dimensions={"type": "integer", "minimum": 1}))},
    "/v1/models": {"get": _operation("OpenAI model list", errors=())},
    "/v1/models/{model}": {
        "parameters": [{"name": "model", "in": "path", "required": True, "schema": STRING}],
        "get": _operation("one OpenAI model object"),
    },
    "/v1/responses": {"post": _operation("OpenAI Responses API (typed SSE events when stream: true)", _object(
        ["model", "input"], model=MODEL, input={"oneOf": [STRING, {"type": "array", "items": OPENAI_MESSAGE}]},
        instructions=STRING, max_output_tokens={"type": "integer", "minimum": 1}, temperature=NUMBER, top_p=NUMBER,
        stream=BOOLEAN))},
    "/openapi.json": {"get": _operation("this document", errors=())},
}


def register_path(path: str, item: dict) -> None:
    """Add (or extend) a path item; for routes other modules mount on the app."""
    _PATHS.setdefault(path, {}).update(item)


def openapi_spec() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "refllm REST API", "version": __version__,
                 "description": "Ollama-compatible /api/* and OpenAI-compatible /v1/* routes of a local LLM runtime."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "only when the server has REFLLM_API_KEY set"}}},
        "security": [{}, {"bearer": []}],  # optional: anonymous unless the server sets a key
        "paths": deepcopy(_PATHS),
    }
