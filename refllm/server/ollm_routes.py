"""The native oLLM-style routes, beside Ollama's and OpenAI's, on the same engine.

    GET  /v1/health                              service metadata
    GET  /v1/refllm/models[?installed=true]      built-in and discovered-local references (refllm.discovery)
    GET  /v1/refllm/models/{ref}                 one reference with its runtime plan
    POST /v1/plan                                the runtime plan, nothing runs
    POST /v1/prompt, /v1/prompt/stream           one prompt (JSON, or SSE: "delta" events then "done")
    POST /v1/sessions                            a server-side conversation (refllm.engine.sessions)
    GET|DELETE /v1/sessions/{id}                 its transcript / forget it and free its KV cache
    POST /v1/sessions/{id}/prompt[/stream]       one turn in it
    GET|DELETE /v1/responses/{id}                stored OpenAI Responses (refllm.engine.response_store)
    GET  /docs, /redoc                           the OpenAPI document as a page (no CDN: works offline)

Bodies accept oLLM's sections or flat fields:
    {"runtime": {"model_reference": "smollm2", "backend": "numpy", "no_specialization": false},
     "generation": {"max_new_tokens": 32, "temperature": 0.0, "seed": 1}, "prompt": "...", "system": "..."}
    {"model": "smollm2", "options": {"num_predict": 32}, "prompt": "..."}          (the same request)
Every route is a thin codec: the engine generates, the session manager keeps conversations.
"""

from __future__ import annotations

import html
import time
import uuid
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request

from refllm import __version__
from refllm.engine import Engine, Finished, GenerationRequest, validate_model_name
from refllm.engine.response_store import ResponseStore, open_records
from refllm.engine.sessions import SessionManager, metadata_for
from refllm.errors import InvalidRequest
from refllm.kernels.reference import BACKEND_NAMES
from refllm.server.fields import json_body, optional
from refllm.server.streams import sse_response

ollm_routes = Blueprint("ollm_routes", __name__)

# oLLM's generation settings -> Ollama option names (the rest keep their names).
GENERATION_NAMES = {"max_new_tokens": "num_predict"}
GENERATION_IGNORED = ("stream",)  # decided by the route (/prompt or /prompt/stream)


def install_state(app, backend: str = "none", models_dir: str | Path | None = None) -> None:
    """The record store (``server.response_store_backend``), stored Responses and sessions of ``app``."""
    records = open_records(backend, models_dir)
    app.extensions["refllm.records"] = records
    app.extensions["refllm.responses"] = ResponseStore(records)
    app.extensions["refllm.sessions"] = SessionManager(app.extensions["refllm.engine"], records)


def engine() -> Engine:
    return current_app.extensions["refllm.engine"]


def sessions() -> SessionManager:
    return current_app.extensions["refllm.sessions"]


def responses() -> ResponseStore:
    return current_app.extensions["refllm.responses"]


def client_gone():
    return request.environ.get("waitress.client_disconnected")


# -- request fields


def model_reference(body: dict) -> str:
    runtime = optional(body, "runtime", dict, {})
    name = runtime.get("model_reference", body.get("model"))
    if name is None:
        from refllm.config import load_settings

        name = load_settings().runtime.model_reference
    return validate_model_name(name, "runtime.model_reference" if "runtime" in body else "model")


def runtime_controls(body: dict) -> tuple[str | None, bool]:
    """``runtime.backend`` and ``runtime.no_specialization`` (also accepted flat)."""
    runtime = optional(body, "runtime", dict, {})
    merged = {**body, **runtime}
    backend = optional(merged, "backend", str)
    no_specialization = optional(merged, "no_specialization", bool, False)
    return backend, no_specialization


def generation_options(body: dict) -> dict:
    """``generation`` (oLLM names) and ``options`` (Ollama names) as Ollama options; bad ones: 400 later, in the engine."""
    generation = optional(body, "generation", dict, {})
    options = {GENERATION_NAMES.get(k, k): v for k, v in generation.items() if k not in GENERATION_IGNORED}
    return {**options, **optional(body, "options", dict, {})}


def prompt_text(body: dict) -> str:
    text = optional(body, "prompt", str)
    if not text:
        raise InvalidRequest("field 'prompt' is required and must be a non-empty string")
    return text


def checked_runtime(loaded_model, backend: str | None, no_specialization: bool) -> dict:
    """The execution metadata of the loaded model; a request for another backend is refused, not ignored."""
    metadata = metadata_for(loaded_model)
    if backend is not None and backend != metadata["backend"]:
        raise InvalidRequest(f"this server runs '{loaded_model.name}' on the {metadata['backend']} backend; "
                             f"runtime.backend '{backend}' is only available from the CLI (refllm prompt --backend)")
    if no_specialization and metadata["specialization"]:
        raise InvalidRequest(f"this server runs '{loaded_model.name}' with the {metadata['specialization']} specialization")
    return metadata


def result_object(kind: str, model: str, finished: Finished, metadata: dict, **extra) -> dict:
    return {
        "id": f"{kind}-{uuid.uuid4().hex[:24]}", "object": f"{kind}.result", "created_at": int(time.time()),
        "model": model, **extra, "response": finished.text, "done_reason": finished.done_reason,
        "usage": {"prompt_tokens": finished.prompt_tokens, "cached_prompt_tokens": finished.prompt_tokens - finished.prompt_eval_count,
                  "completion_tokens": finished.eval_count},
        "timings": {"load_duration": finished.load_duration, "prompt_eval_duration": finished.prompt_eval_duration,
                    "eval_duration": finished.eval_duration, "total_duration": finished.total_duration},
        "metadata": metadata,
    }


def answer(events, make_result, stream: bool) -> Response:
    """JSON of the finished result, or SSE: ``event: delta`` {"text"} per piece, then ``event: done`` {result}."""
    if not stream:
        return jsonify(make_result(events.collect()))

    def sse_events():
        try:
            for event in events:
                if isinstance(event, Finished):
                    yield "done", make_result(event)
                elif event.text:
                    yield "delta", {"text": event.text}
        finally:
            events.close()

    response = sse_response(sse_events(), done_marker=False, error_events=lambda message: [("error", {"error": message})])
    response.call_on_close(events.close)  # also when the stream never started: the slot (and a session) are freed
    return response


# -- service and models


@ollm_routes.get("/v1/health")
def health():
    return jsonify({"status": "ok", "service": "refllm", "version": __version__, "mode": "local",
                    "response_store_backend": current_app.extensions["refllm.records"].backend,
                    "loaded_models": [loaded.name for loaded in engine().running()]})


@ollm_routes.get("/v1/refllm/models")
def list_models():
    from refllm.discovery import list_references

    installed = request.args.get("installed", "false").lower() in ("1", "true", "yes")
    return jsonify({"object": "list", "data": list_references(installed_only=installed)})


@ollm_routes.get("/v1/refllm/models/<path:reference>")
def model_info(reference: str):
    from refllm.discovery import reference_info

    backend = request.args.get("backend")
    no_specialization = request.args.get("no_specialization", "false").lower() in ("1", "true", "yes")
    return jsonify(reference_info(validate_model_name(reference), backend, no_specialization))


@ollm_routes.post("/v1/plan")
def plan():
    from refllm.plan import build_plan

    body = json_body()
    name = model_reference(body)
    backend, no_specialization = runtime_controls(body)
    num_ctx = optional(generation_options(body), "num_ctx", int)
    recipe = engine().resolve(name)
    result = build_plan(recipe.gguf_path, backend=backend, no_specialization=no_specialization, num_ctx=num_ctx)
    result.model = recipe.name
    return jsonify(result.to_dict())


# -- one-shot prompts


def _prompt(stream: bool) -> Response:
    body = json_body()
    name = model_reference(body)
    backend, no_specialization = runtime_controls(body)
    text = prompt_text(body)
    loaded, _ = engine().load(name, body.get("keep_alive"))
    metadata = checked_runtime(loaded.model, backend, no_specialization)
    job = GenerationRequest(model=name, prompt=[{"role": "user", "content": text}], system=optional(body, "system", str),
                            options=generation_options(body), keep_alive=body.get("keep_alive"))
    events = engine().generate(job, client_gone())
    return answer(events, lambda finished: result_object("prompt", loaded.name, finished, metadata), stream)


@ollm_routes.post("/v1/prompt")
def prompt():
    return _prompt(stream=False)


@ollm_routes.post("/v1/prompt/stream")
def prompt_stream():
    return _prompt(stream=True)


# -- sessions


@ollm_routes.post("/v1/sessions")
def create_session():
    body = json_body()
    session = sessions().create(model_reference(body), system=optional(body, "system", str), options=generation_options(body))
    return jsonify(session), 201


@ollm_routes.get("/v1/sessions/<session_id>")
def get_session(session_id: str):
    return jsonify(sessions().get(session_id))


@ollm_routes.delete("/v1/sessions/<session_id>")
def delete_session(session_id: str):
    sessions().delete(session_id)
    return jsonify({"id": session_id, "object": "session.deleted", "deleted": True})


def _session_prompt(session_id: str, stream: bool) -> Response:
    body = json_body()
    text = prompt_text(body)
    session = sessions().get(session_id)  # 404 before anything loads
    loaded, _ = engine().load(session["model"])
    metadata = metadata_for(loaded.model)
    turn = sessions().prompt(session_id, text, generation_options(body), client_gone())
    # the transcript already holds this turn when Finished arrives: its length counts the turns
    return answer(turn, lambda finished: result_object("session_prompt", loaded.name, finished, metadata, session_id=session_id,
                                                       turn=len(turn.session["messages"]) // 2), stream)


@ollm_routes.post("/v1/sessions/<session_id>/prompt")
def session_prompt(session_id: str):
    return _session_prompt(session_id, stream=False)


@ollm_routes.post("/v1/sessions/<session_id>/prompt/stream")
def session_prompt_stream(session_id: str):
    return _session_prompt(session_id, stream=True)


# -- stored OpenAI Responses


@ollm_routes.get("/v1/responses/<response_id>")
def get_response(response_id: str):
    return jsonify(responses().get(response_id))


@ollm_routes.delete("/v1/responses/<response_id>")
def delete_response(response_id: str):
    return jsonify(responses().delete(response_id))


# -- API documentation pages


def docs_page(title: str) -> str:
    """Every route of the OpenAPI document as one self-contained HTML page."""
    from refllm.server.openapi import openapi_spec

    spec = openapi_spec()
    rows = []
    for path, item in sorted(spec["paths"].items()):
        for method, operation in item.items():
            if method == "parameters":
                continue
            fields = ", ".join(operation.get("requestBody", {}).get("content", {}).get("application/json", {})
                               .get("schema", {}).get("properties", {}))
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(operation.get('summary', ''))}</td><td>{html.escape(fields)}</td></tr>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{padding:.2em .8em;border-bottom:1px solid #ddd}</style></head>"
            f"<body><h1>{html.escape(spec['info']['title'])} {html.escape(spec['info']['version'])}</h1>"
            f"<p>{html.escape(spec['info']['description'])} Machine-readable: <a href='/openapi.json'>/openapi.json</a>.</p>"
            "<table><tr><th>method</th><th>path</th><th>what it does</th><th>body fields</th></tr>"
            + "".join(rows) + "</table></body></html>")


@ollm_routes.get("/docs")
def docs():
    return Response(docs_page("refllm API"), mimetype="text/html")


@ollm_routes.get("/redoc")
def redoc():
    return Response(docs_page("refllm API reference"), mimetype="text/html")


# -- the OpenAPI description of these routes


def _describe() -> None:
    from refllm.server.openapi import _PATHS, BOOLEAN, OPTIONS, STRING, _object, _operation, register_path

    runtime = _object([], model_reference=STRING, backend={"type": "string", "enum": list(BACKEND_NAMES)},
                      no_specialization=BOOLEAN)
    generation = {"type": "object", "description": "oLLM generation settings (max_new_tokens, temperature, seed, ...)"}
    common = dict(model=STRING, runtime=runtime, generation=generation, options=OPTIONS)
    prompt_body = _object(["prompt"], prompt=STRING, system=STRING, **common)
    turn_body = _object(["prompt"], prompt=STRING, generation=generation, options=OPTIONS)
    session_id = [{"name": "session_id", "in": "path", "required": True, "schema": STRING}]
    register_path("/v1/health", {"get": _operation("service metadata and health", errors=())})
    register_path("/v1/refllm/models", {"get": {**_operation("built-in and discovered-local model references", errors=()),
                                                "parameters": [{"name": "installed", "in": "query", "schema": BOOLEAN}]}})
    register_path("/v1/refllm/models/{reference}", {
        "parameters": [{"name": "reference", "in": "path", "required": True, "schema": STRING}],
        "get": _operation("one model reference with its runtime plan")})
    register_path("/v1/plan", {"post": _operation("the runtime plan of a model, without running it", _object([], **common))})
    register_path("/v1/prompt", {"post": _operation("one prompt; the answer with execution metadata", prompt_body)})
    register_path("/v1/prompt/stream", {"post": _operation("one prompt as SSE: delta events, then done", prompt_body,
                                                           content_type="text/event-stream")})
    created = _operation("create a server-side session", _object([], system=STRING, **common))
    created["responses"]["201"] = created["responses"].pop("200")
    register_path("/v1/sessions", {"post": created})
    register_path("/v1/sessions/{session_id}", {"parameters": session_id, "get": _operation("a session and its transcript"),
                                                "delete": _operation("delete a session and free its KV cache")})
    register_path("/v1/sessions/{session_id}/prompt", {"parameters": session_id,
                                                       "post": _operation("one turn in a session", turn_body)})
    register_path("/v1/sessions/{session_id}/prompt/stream", {"parameters": session_id, "post": _operation(
        "one turn in a session as SSE", turn_body, content_type="text/event-stream")})
    register_path("/v1/responses/{response_id}", {
        "parameters": [{"name": "response_id", "in": "path", "required": True, "schema": STRING}],
        "get": _operation("a stored response (server.response_store_backend memory or sqlite)"),
        "delete": _operation("delete a stored response")})
    register_path("/docs", {"get": _operation("this API as a page", content_type="text/html", errors=())})
    register_path("/redoc", {"get": _operation("this API as a reference page", content_type="text/html", errors=())})
    try:  # the fields this module serves inside POST /v1/responses (described in openapi.py)
        responses_post = _PATHS["/v1/responses"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        responses_post["properties"].update(previous_response_id=STRING, store=BOOLEAN)
    except (KeyError, TypeError):  # pragma: no cover - openapi.py describes it differently now
        pass


_describe()


# -- used by /v1/responses (refllm.server.openai_api): chaining and storing


def previous_conversation(previous_id: str | None) -> list[dict]:
    """The stored conversation ``previous_response_id`` continues ([] when none is given; 404 when unknown)."""
    return responses().conversation(previous_id) if previous_id else []


def remember_response(response: dict, conversation: list[dict], finished: Finished, store: bool = True) -> dict:
    """Keep a finished response with its conversation and answer (when this server stores responses); return it."""
    assistant: dict = {"role": "assistant", "content": finished.text}
    calls = getattr(finished, "tool_calls", None)
    if calls:
        assistant["tool_calls"] = [call.openai() for call in calls]
    if store:
        responses().save(response, [*conversation, assistant])
    return response
