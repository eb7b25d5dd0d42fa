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


ARRAY_OF = lambda items: {"type": "array", "items": items}  # noqa: E731
DETAILS = _object(["format", "family"], format=STRING, family=STRING, parameter_size=STRING, quantization_level=STRING)
LISTED_MODEL = _object(["name", "model", "modified_at", "size", "digest", "details"], name=STRING, model=STRING,
                       modified_at=STRING, size=INTEGER, digest=STRING, details=DETAILS)
DONE = _object(["model", "created_at", "done"], model=STRING, created_at=STRING, done=BOOLEAN, done_reason=STRING,
               total_duration=INTEGER, load_duration=INTEGER, prompt_eval_count=INTEGER, prompt_eval_duration=INTEGER,
               eval_count=INTEGER, eval_duration=INTEGER)
VECTOR = ARRAY_OF(NUMBER)
OPENAI_MODEL = _object(["id", "object", "created", "owned_by"], id=STRING, object={"type": "string", "enum": ["model"]},
                       created=INTEGER, owned_by=STRING)
USAGE = _object(["prompt_tokens", "total_tokens"], prompt_tokens=INTEGER, completion_tokens=INTEGER, total_tokens=INTEGER)


def _operation(summary: str, body: dict | None = None, ok: str = "success", content_type: str | None = "application/json",
               errors: tuple[int, ...] = (400, 404), response: dict | None = None, stream_type: str | None = None) -> dict:
    """One operation: its 200 (``response``: the JSON schema; ``stream_type``: the streamed alternative;
    ``content_type=None``: no body) and error statuses; any other 4xx/5xx (401, 403, 413, 503, ...)
    is the ``{"error": ...}`` object too."""
    ok_response: dict = {"description": ok}
    if content_type is not None:
        ok_response["content"] = {content_type: {"schema": response} if response else {}}
        if stream_type:
            ok_response["content"][stream_type] = {}
    operation: dict = {"summary": summary, "responses": {"200": ok_response, "4XX": ERROR, "5XX": ERROR}}
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
          "head": {**_operation("health check", content_type=None, errors=()), "security": []}},
    "/api/version": {"get": _operation("runtime version", errors=(), response=_object(["version"], version=STRING))},
    "/api/generate": {"post": _operation("generate a completion (NDJSON stream unless stream: false)", _object(
        ["model"], prompt=STRING, system=STRING, raw=BOOLEAN, images={"type": "array", "items": STRING}, **GENERATION_COMMON),
        response=DONE, stream_type="application/x-ndjson")},
    "/api/chat": {"post": _operation("generate the next chat message (NDJSON stream unless stream: false)", _object(
        ["model"], messages={"type": "array", "items": MESSAGE}, **GENERATION_COMMON),
        response=DONE, stream_type="application/x-ndjson")},
    "/api/embed": {"post": _operation("embed one or more texts (no input: only load the model)", _object(
        ["model"], model=MODEL, input=STRINGS, truncate=BOOLEAN, dimensions={"type": "integer", "minimum": 1},
        options=OPTIONS, keep_alive=KEEP_ALIVE),
        response=_object(["model", "embeddings"], model=STRING, embeddings=ARRAY_OF(VECTOR), prompt_eval_count=INTEGER))},
    "/api/embeddings": {"post": _operation("embed one text (legacy; no prompt: only load the model)", _object(["model"], model=MODEL, prompt=STRING, options=OPTIONS),
                                           response=_object(["embedding"], embedding=VECTOR))},
    "/api/tags": {"get": _operation("list local models", errors=(), response=_object(["models"], models=ARRAY_OF(LISTED_MODEL)))},
    "/api/show": {"post": _operation("show a model's details", _object(["model"], model=MODEL, verbose=BOOLEAN),
                                     response=_object(["details", "model_info", "template", "modified_at"], details=DETAILS,
                                                      model_info={"type": "object"}, template=STRING, modified_at=STRING))},
    "/api/ps": {"get": _operation("list loaded models", errors=(), response=_object(["models"], models=ARRAY_OF(_object(
        ["name", "model", "size", "expires_at"], name=STRING, model=STRING, size=INTEGER, expires_at=STRING,
        size_vram=INTEGER, context_length=INTEGER))))},
    "/api/copy": {"post": _operation("copy a model under a new name", _object(["source", "destination"], source=MODEL, destination=MODEL),
                                     ok="copied (no body)", content_type=None)},
    "/api/delete": {"delete": _operation("delete a model", _object(["model"], model=MODEL), ok="deleted (no body)", content_type=None)},
    "/api/create": {"post": _operation("create a model", _object(["model"], model=MODEL, stream=BOOLEAN), errors=(400, 404),
                                       stream_type="application/x-ndjson")},
    "/api/pull": {"post": _operation("pull a model", _object(["model"], model=MODEL, stream=BOOLEAN), errors=(400, 404),
                                     stream_type="application/x-ndjson")},
    "/api/push": {"post": {"summary": "push a model to a registry: refllm has none, so a checked request gets 501",
                           "requestBody": {"required": True, "content": {"application/json": {"schema": _object(
                               ["model"], model=MODEL, insecure=BOOLEAN, stream=BOOLEAN)}}},
                           "responses": {"501": ERROR, "4XX": ERROR}}},
    "/api/blobs/{digest}": {
        "parameters": [{"name": "digest", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}}],
        "head": {"summary": "does the blob exist", "responses": {"200": {"description": "it does"},
                                                                 "404": {"description": "it does not"}, "4XX": ERROR}},
        "post": {"summary": "upload a blob (the body's sha256 must match)", "requestBody": {"content": {"application/octet-stream": {}}},
                 "responses": {"201": {"description": "stored"}, "4XX": ERROR, "5XX": ERROR}},
    },
    "/v1/chat/completions": {"post": _operation("OpenAI chat completion (SSE when stream: true)", _object(
        ["model", "messages"], messages={"type": "array", "items": OPENAI_MESSAGE, "minItems": 1},
        max_tokens={"type": "integer", "minimum": 1}, max_completion_tokens={"type": "integer", "minimum": 1},
        logprobs=BOOLEAN, top_logprobs={"type": "integer", "minimum": 0, "maximum": 20}, **OPENAI_SAMPLING),
        response=_object(["id", "object", "created", "model", "choices"], id=STRING, object=STRING, created=INTEGER, model=STRING,
                         choices=ARRAY_OF(_object(["index", "message", "finish_reason"], index=INTEGER))),
        stream_type="text/event-stream")},
    "/v1/completions": {"post": _operation("OpenAI text completion (SSE when stream: true)", _object(
        ["model", "prompt"], prompt=STRING, max_tokens={"type": "integer", "minimum": 1},
        logprobs={"type": "integer", "minimum": 0, "maximum": 20}, **OPENAI_SAMPLING),
        response=_object(["id", "object", "created", "model", "choices"], id=STRING, object=STRING, created=INTEGER, model=STRING,
                         choices=ARRAY_OF(_object(["index", "text", "finish_reason"], index=INTEGER, text=STRING))),
        stream_type="text/event-stream")},
    "/v1/embeddings": {"post": _operation("OpenAI embeddings", _object(
        ["model", "input"], model=MODEL, input=STRINGS, encoding_format={"type": "string", "enum": ["float", "base64"]},
        dimensions={"type": "integer", "minimum": 1}),
        response=_object(["object", "data", "model", "usage"], object=STRING, model=STRING, usage=USAGE, data=ARRAY_OF(
            _object(["object", "embedding", "index"], object=STRING, index=INTEGER, embedding={"oneOf": [VECTOR, STRING]}))))},
    "/v1/models": {"get": _operation("OpenAI model list", errors=(), response=_object(["object", "data"], object=STRING,
                                                                                        data=ARRAY_OF(OPENAI_MODEL)))},
    "/v1/models/{model}": {
        "parameters": [{"name": "model", "in": "path", "required": True, "schema": STRING}],
        "get": _operation("one OpenAI model object", response=OPENAI_MODEL),
    },
    "/v1/responses": {"post": _operation("OpenAI Responses API (typed SSE events when stream: true)", _object(
        ["model", "input"], model=MODEL, input={"oneOf": [STRING, {"type": "array", "items": OPENAI_MESSAGE}]},
        instructions=STRING, max_output_tokens={"type": "integer", "minimum": 1}, temperature=NUMBER, top_p=NUMBER,
        stream=BOOLEAN), stream_type="text/event-stream")},
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
