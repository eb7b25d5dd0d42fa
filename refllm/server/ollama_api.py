"""Ollama's native API (``/api/*``): a thin codec between Ollama's JSON and the engine.

Generation routes build one ``GenerationRequest`` and send the engine's events back as
Ollama objects, streamed as NDJSON (the default) or as one JSON object with
``"stream": false``. Model-management routes are thin calls into the model store.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify, request

from refllm.engine import Engine, Finished, GenerationRequest, Piece, validate_model_name
from refllm.chat.tools import check_tool_choice, check_tools
from refllm.chat.turn import OutputRules
from refllm.constrain.schema import ollama_format
from refllm.engine.keep_alive import parse_keep_alive
from refllm.errors import InvalidRequest, RefllmError
from refllm.server import catalog
from refllm.store import listing
from refllm.server.fields import integer_in, json_body, optional, reject_unsupported, string_list, tool_calls_field
from refllm.server.streams import ndjson_response
from refllm.thinking import check_think

ollama_api = Blueprint("ollama_api", __name__)

MAX_TOP_LOGPROBS = 20


def engine() -> Engine:
    return current_app.extensions["refllm.engine"]


def client_gone():
    """Waitress's check for a closed client connection (None under other WSGI servers)."""
    return request.environ.get("waitress.client_disconnected")


def now() -> str:
    return listing.rfc3339(time.time())


# -- request fields shared by /api/generate and /api/chat


def options_field(body: dict) -> dict:
    return dict(optional(body, "options", dict, {}))


def logprob_fields(body: dict) -> tuple[bool, int]:
    logprobs = optional(body, "logprobs", bool, False)
    top = integer_in(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, 0)
    if top and not logprobs:
        raise InvalidRequest("field 'top_logprobs' needs \"logprobs\": true")
    return logprobs, top


def output_rules(body: dict, tools_allowed: bool) -> OutputRules:
    """``format``, ``tools`` (+ refllm's ``tool_choice``, which Ollama ignores) and ``think``."""
    if not tools_allowed:
        reject_unsupported(body, "tools", "tools need /api/chat")
    tools = check_tools(body.get("tools")) if tools_allowed else []
    rules = OutputRules(format=ollama_format(body.get("format")), tools=tools,
                        tool_choice=check_tool_choice(body.get("tool_choice"), tools), think=check_think(body.get("think")))
    if rules.format is not None and rules.forced_tool:
        raise InvalidRequest("fields 'format' and a forced 'tool_choice' cannot be combined")
    return rules


def message_fields(piece, text_key: str) -> dict:
    """Generated text, thinking and tool calls (a ``Piece`` or ``Finished``) as Ollama's fields."""
    fields = {text_key: piece.text}
    if piece.thinking:
        fields["thinking"] = piece.thinking
    if piece.tool_calls:  # with the id the OpenAI side shows too ("call_..."), as Ollama sends it
        fields["tool_calls"] = [{"id": call.id, **call.ollama(i)} for i, call in enumerate(piece.tool_calls)]
    return fields


def images_field(value, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"field {where!r} must be an array of base64 strings")
    return value


def chat_messages(body: dict) -> tuple[list[dict], list[str]]:
    """Validated ``messages`` as [{"role", "content"}] plus the images any of them carry."""
    messages = optional(body, "messages", list, [])
    clean, images = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{i}] must be an object with 'role' and 'content'")
        role = message.get("role")
        role = role.lower() if isinstance(role, str) else role  # "User" is "user", as Ollama reads it
        if role not in ("system", "user", "assistant", "tool"):
            raise InvalidRequest(f"messages[{i}].role must be one of system, user, assistant, tool")
        content = message.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise InvalidRequest(f"messages[{i}].content must be a string")
        images += images_field(message.get("images"), f"messages[{i}].images")
        entry = {"role": role, "content": content}
        if message.get("tool_calls") is not None:
            if role != "assistant":
                raise InvalidRequest(f"messages[{i}].tool_calls must be an array on an assistant message")
            entry["tool_calls"] = tool_calls_field(message["tool_calls"], f"messages[{i}].tool_calls")
        for key in ("tool_name", "tool_call_id", "name"):
            if isinstance(message.get(key), str):
                entry[key] = message[key]
        clean.append(entry)
    return clean, images


# -- generation


def ollama_logprobs(piece: Piece | Finished) -> list[dict]:
    return [entry.as_dict() for entry in piece.logprobs]


def final_fields(finished: Finished) -> dict:
    """The last object's stats. ``prompt_eval_count`` is the whole prompt, cached tokens included, as
    Ollama reports it (llama.cpp's cache_n + prompt_n); ``prompt_eval_duration`` is the time of the part evaluated now."""
    return {
        "done": True, "done_reason": finished.done_reason,
        "total_duration": finished.total_duration, "load_duration": finished.load_duration,
        "prompt_eval_count": finished.prompt_tokens, "prompt_eval_duration": finished.prompt_eval_duration,
        "eval_count": finished.eval_count, "eval_duration": finished.eval_duration,
    }


def load_or_unload(name: str, keep_alive, body_key: str, empty) -> Response:
    """A request without a prompt only loads the model (or unloads it with keep_alive 0), as in Ollama."""
    if parse_keep_alive(keep_alive) == 0:
        engine().resolve(name)
        engine().unload(name)
        reason = "unload"
    else:
        engine().load(name, keep_alive)
        reason = "load"
    return jsonify({"model": name, "created_at": now(), body_key: empty, "done": True, "done_reason": reason})


def run_generation(job: GenerationRequest, stream: bool, wrap) -> Response:
    """Start the generation, then answer as NDJSON or as one object; ``wrap(piece)`` shapes the text fields."""
    events = engine().generate(job, client_gone())
    name = job.model
    if not stream:
        finished = events.collect()
        body = {"model": name, "created_at": now(), **wrap(finished), **final_fields(finished)}
        if job.logprobs:
            body["logprobs"] = ollama_logprobs(finished)
        return jsonify(body)

    def objects():
        try:
            for event in events:
                if isinstance(event, Finished):
                    yield {"model": name, "created_at": now(), **wrap(Piece("")), **final_fields(event)}
                elif event.text or event.logprobs or event.thinking or event.tool_calls:
                    chunk = {"model": name, "created_at": now(), **wrap(event), "done": False}
                    if job.logprobs:
                        chunk["logprobs"] = ollama_logprobs(event)
                    yield chunk
        finally:
            events.close()

    return ndjson_response(objects())


@ollama_api.post("/api/generate")
def generate():
    body = json_body()
    name = validate_model_name(body.get("model"))
    rules = output_rules(body, tools_allowed=False)
    reject_unsupported(body, "suffix", "fill-in-the-middle prompts are not supported by refllm's models")
    reject_unsupported(body, "context", "the deprecated 'context' token list is not supported; send the conversation to /api/chat")
    prompt = optional(body, "prompt", str, "")
    images = images_field(body.get("images"), "images")
    logprobs, top_logprobs = logprob_fields(body)
    stream = optional(body, "stream", bool, True)
    job = GenerationRequest(
        model=name, prompt=prompt, raw=optional(body, "raw", bool, False), system=optional(body, "system", str),
        template=optional(body, "template", str),
        images=images, options=options_field(body), logprobs=logprobs, top_logprobs=top_logprobs,
        keep_alive=body.get("keep_alive"), output=rules,
    )
    parse_keep_alive(job.keep_alive)  # a bad keep_alive is a 400 even on the load-only path
    if job.raw and (job.system or job.template):
        raise InvalidRequest("raw mode does not support 'template' or 'system' (a raw prompt is sent as it is)")
    if not prompt and not images:
        return load_or_unload(name, job.keep_alive, "response", "")
    return run_generation(job, stream, lambda piece: message_fields(piece, "response"))


@ollama_api.post("/api/chat")
def chat():
    body = json_body()
    name = validate_model_name(body.get("model"))
    rules = output_rules(body, tools_allowed=True)
    messages, images = chat_messages(body)
    logprobs, top_logprobs = logprob_fields(body)
    stream = optional(body, "stream", bool, True)
    job = GenerationRequest(
        model=name, prompt=messages, images=images, options=options_field(body),
        logprobs=logprobs, top_logprobs=top_logprobs, keep_alive=body.get("keep_alive"), output=rules,
    )
    parse_keep_alive(job.keep_alive)
    if not messages:
        return load_or_unload(name, job.keep_alive, "message", {"role": "assistant", "content": ""})
    return run_generation(job, stream, lambda piece: {"message": {"role": "assistant", **message_fields(piece, "content")}})


# -- embeddings


@ollama_api.post("/api/embed")
def embed():
    body = json_body()
    name = validate_model_name(body.get("model"))
    inputs = string_list(body, "input") or []
    if inputs == [""]:
        inputs = []  # no input, or "": the model is only loaded, as in Ollama
    dimensions = optional(body, "dimensions", int)
    result = engine().embed(name, inputs, truncate=optional(body, "truncate", bool, True), dimensions=dimensions,
                            options=options_field(body), keep_alive=body.get("keep_alive"))
    return jsonify({"model": name, "embeddings": result.embeddings, "total_duration": result.total_duration,
                    "load_duration": result.load_duration, "prompt_eval_count": result.prompt_eval_count})


@ollama_api.post("/api/embeddings")
def embeddings_legacy():
    """The older single-prompt route: ``{"prompt"}`` -> ``{"embedding"}``; no prompt only loads the model."""
    body = json_body()
    name = validate_model_name(body.get("model"))
    prompt = optional(body, "prompt", str, "")
    if not prompt:
        engine().load(name, body.get("keep_alive"))
        return jsonify({"embedding": []})
    result = engine().embed(name, [prompt], options=options_field(body), keep_alive=body.get("keep_alive"))
    return jsonify({"embedding": result.embeddings[0]})


# -- models


@ollama_api.get("/api/tags")
def tags():
    return jsonify({"models": listing.list_models()})


@ollama_api.post("/api/show")
def show():
    body = json_body()
    name = validate_model_name(body.get("model") or body.get("name"))
    return jsonify(listing.show(engine().resolve(name), name, verbose=optional(body, "verbose", bool, False)))


@ollama_api.get("/api/ps")
def ps():
    return jsonify({"models": catalog.running_entries(engine().running())})


@ollama_api.post("/api/copy")
def copy():
    body = json_body()
    source = validate_model_name(body.get("source"), "source")
    destination = validate_model_name(body.get("destination"), "destination")
    listing.copy(engine().resolve(source), source, destination)
    return Response(status=200)


@ollama_api.delete("/api/delete")
def delete():
    body = json_body()
    name = validate_model_name(body.get("model") or body.get("name"))
    catalog.check_deletable(engine().resolve(name), name)  # 404 for an unknown name, 400 for a built-in catalog model
    engine().unload(name)  # a model in use unloads when its requests end
    catalog.delete(name)
    return Response(status=200)


def progress_response(statuses, stream: bool) -> Response:
    """Store progress as NDJSON, or (``stream: false``) only the final status.

    The first status is awaited before answering, so an early error (unknown model, bad
    Modelfile) still gets its HTTP status; a later one is sent in-band.
    """
    if stream:
        first = next(statuses)
        return ndjson_response(_prepend(first, statuses))
    last = {"status": "success"}
    for last in statuses:
        pass
    return jsonify(last)


@ollama_api.post("/api/create")
def create():
    body = json_body()
    name = validate_model_name(body.get("model") or body.get("name"))
    return progress_response(catalog.create(name, body), optional(body, "stream", bool, True))


@ollama_api.post("/api/pull")
def pull():
    body = json_body()
    name = validate_model_name(body.get("model") or body.get("name"))
    optional(body, "insecure", bool)
    return progress_response(catalog.pull(name), optional(body, "stream", bool, True))


class NoRegistry(RefllmError):
    http_status = 501  # Not Implemented: the request is fine, the server has no such feature


@ollama_api.post("/api/push")
def push():
    """Pushing to a registry: refllm has none. The request is checked like a pull (a 404 for an
    unknown model), then answered with a 501 that says so, never a bare "no route"."""
    body = json_body()
    name = validate_model_name(body.get("model") or body.get("name"))
    optional(body, "insecure", bool)
    optional(body, "stream", bool)
    engine().resolve(name)
    raise NoRegistry(f"cannot push '{name}': refllm has no model registry to push to (its models stay in the "
                     "local store; copy the GGUF blob yourself to share one)")


@ollama_api.route("/api/blobs/<digest>", methods=["HEAD", "POST"])
def blobs(digest: str):
    if request.method == "HEAD":
        return Response(status=200 if catalog.has_blob(digest) else 404)
    catalog.save_blob(digest, request.stream)
    return Response(status=201)


def _prepend(first: dict, rest):
    yield first
    yield from rest
