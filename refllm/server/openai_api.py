"""The OpenAI-compatible API (``/v1/*``): the same engine call as Ollama's, in OpenAI's shapes.

OpenAI sampling fields map onto Ollama option names (``max_tokens`` -> ``num_predict``,
``stop``, ``seed``, ``temperature``, ``top_p``, ``frequency_penalty``,
``presence_penalty``); streams are server-sent events ending in ``data: [DONE]``
(``/v1/responses`` sends typed events instead). Errors use OpenAI's
``{"error": {"message", "type", "param", "code"}}`` envelope (see ``app.error_response``).
"""

from __future__ import annotations

import base64
import math
import time
import uuid

import numpy as np
from flask import Blueprint, current_app, jsonify, request

from refllm.chat.tools import check_tool_choice, check_tools
from refllm.chat.turn import OutputRules
from refllm.constrain.schema import openai_response_format
from refllm.engine import Engine, Finished, GenerationRequest, Piece, validate_model_name
from refllm.errors import InvalidRequest
from refllm.store import listing
from refllm.server.fields import integer_in, json_body, optional, reject_unsupported, string_list, tool_calls_field
from refllm.server.streams import sse_response
from refllm.thinking import check_think

openai_api = Blueprint("openai_api", __name__)

NOT_FOR_COMPLETIONS = "tools, response formats and reasoning need /v1/chat/completions or /v1/responses"
MAX_TOP_LOGPROBS = 20


def engine() -> Engine:
    return current_app.extensions["refllm.engine"]


def client_gone():
    """Waitress's check for a closed client connection (None under other WSGI servers)."""
    return request.environ.get("waitress.client_disconnected")


def new_id(prefix: str, separator: str = "-") -> str:
    """``chatcmpl-…``/``cmpl-…`` as chat and completions spell them; ``resp_…``/``msg_…`` (``separator="_"``) for Responses."""
    return f"{prefix}{separator}{uuid.uuid4().hex[:24]}"


def finish_reason(finished: Finished) -> str:
    if finished.tool_calls:
        return "tool_calls"
    return "length" if finished.done_reason == "length" else "stop"


def usage(finished: Finished) -> dict:
    return {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.eval_count,
            "total_tokens": finished.prompt_tokens + finished.eval_count}


# -- request fields


# OpenAI's documented ranges (its API answers 400 outside them); seed has none
OPENAI_RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "frequency_penalty": (-2.0, 2.0), "presence_penalty": (-2.0, 2.0)}


def sampling_options(body: dict, max_tokens_fields: tuple[str, ...]) -> dict:
    """OpenAI's sampling fields as Ollama options. Left out, temperature and top_p take OpenAI's
    defaults (1 and 1), over the model's own, as Ollama's /v1 routes do."""
    options: dict = {"temperature": 1.0, "top_p": 1.0}
    for openai_name, kind in (("temperature", float), ("top_p", float), ("frequency_penalty", float),
                              ("presence_penalty", float), ("seed", int)):
        value = optional(body, openai_name, kind)
        if value is not None:
            low, high = OPENAI_RANGES.get(openai_name, (-math.inf, math.inf))
            if not low <= value <= high:
                raise InvalidRequest(f"field {openai_name!r} must be between {low:g} and {high:g}, got {value:g}")
            options[openai_name] = value
    for field_name in max_tokens_fields:
        value = optional(body, field_name, int)
        if value is not None:
            if value < 1:
                raise InvalidRequest(f"field {field_name!r} must be at least 1")
            options["num_predict"] = value
    stop = string_list(body, "stop")
    if stop:
        options["stop"] = stop
    if optional(body, "n", int, 1) != 1:
        raise InvalidRequest("field 'n' must be 1: one choice per request")
    reject_unsupported(body, "logit_bias", "logit biases are not supported")
    reject_unsupported(body, "audio", "refllm's models answer in text only")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise InvalidRequest("field 'modalities' must be [\"text\"]: refllm's models answer in text only")
    return options


def reject_for_completions(body: dict) -> None:
    for name in ("tools", "functions", "tool_choice", "reasoning_effort", "reasoning"):
        reject_unsupported(body, name, NOT_FOR_COMPLETIONS)
    if body.get("response_format") not in (None, {"type": "text"}):
        raise InvalidRequest(f"field 'response_format' is not supported: {NOT_FOR_COMPLETIONS}")


def output_rules(body: dict, response_format, reasoning_effort, effort_field: str = "reasoning_effort") -> OutputRules:
    """``tools``/``tool_choice``/``parallel_tool_calls``, the response format and the reasoning effort."""
    reject_unsupported(body, "functions", "the deprecated 'functions' field: send 'tools'")
    tools = check_tools(body.get("tools"))
    if reasoning_effort is not None and reasoning_effort not in ("low", "medium", "high", "none", "minimal"):
        raise InvalidRequest(f"field {effort_field!r} must be one of none, minimal, low, medium, high")
    if reasoning_effort == "minimal":  # Ollama's /v1 has no minimal tier: the least thinking that is on
        reasoning_effort = "low"
    think = None if reasoning_effort is None else (False if reasoning_effort == "none" else check_think(reasoning_effort))
    rules = OutputRules(format=response_format, tools=tools, tool_choice=check_tool_choice(body.get("tool_choice"), tools),
                        parallel_tool_calls=optional(body, "parallel_tool_calls", bool, True), think=think)
    if rules.format is not None and rules.forced_tool:
        raise InvalidRequest("a JSON response format and a forced 'tool_choice' cannot be combined")
    return rules


def chat_message_tool_fields(message: dict, i: int) -> dict:
    """An assistant message's ``tool_calls`` and a tool message's ``tool_call_id``, kept for the template."""
    fields = {}
    calls = message.get("tool_calls")
    if calls is not None:
        if message.get("role") != "assistant":
            raise InvalidRequest(f"messages[{i}].tool_calls must be an array of tool calls on an assistant message")
        fields["tool_calls"] = tool_calls_field(calls, f"messages[{i}].tool_calls")
    for key in ("tool_call_id", "name"):
        if isinstance(message.get(key), str):
            fields[key] = message[key]
    return fields


def image_from_url(url: object, where: str) -> str:
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise InvalidRequest(f"{where} must be a data:...;base64, URL (remote image URLs are not fetched)")
    return url.split(";base64,", 1)[1]


def openai_messages(body: dict) -> tuple[list[dict], list[str]]:
    """``messages`` with string or content-part contents -> [{"role", "content"}] and images."""
    messages = optional(body, "messages", list)
    if not messages:
        raise InvalidRequest("field 'messages' is required and must not be empty")
    clean, images = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{i}] must be an object")
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise InvalidRequest(f"messages[{i}].role must be one of system, developer, user, assistant, tool")
        if message.get("content") is None and not (role == "assistant" and message.get("tool_calls")):
            raise InvalidRequest(f"messages[{i}].content is required (only an assistant message with tool_calls may leave it out)")
        text, message_images = content_text(message.get("content"), f"messages[{i}].content")
        images += message_images
        clean.append({"role": role, "content": text, **chat_message_tool_fields(message, i)})
    return clean, images


def content_text(content: object, where: str) -> tuple[str, list[str]]:
    """A message content: a string, or parts [{"type": "text"|"input_text"|"output_text", "text"}, images...]."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or an array of content parts")
    texts, images = [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            images.append(image_from_url(url.get("url") if isinstance(url, dict) else url, f"{where}[{j}].image_url"))
        elif kind == "input_image":
            images.append(image_from_url(part.get("image_url"), f"{where}[{j}].image_url"))
        else:
            raise InvalidRequest(f"{where}[{j}] must be a text part ({{\"type\": \"text\", \"text\": ...}}) or an image part")
    return "".join(texts), images


def stream_options(body: dict) -> bool:
    """``stream_options.include_usage``."""
    value = optional(body, "stream_options", dict, {})
    include = value.get("include_usage", False)
    if not isinstance(include, bool):
        raise InvalidRequest("field 'stream_options.include_usage' must be a boolean")
    return include


# -- /v1/chat/completions


def chat_logprobs(entries) -> dict:
    return {"content": [entry.as_dict() for entry in entries], "refusal": None}


@openai_api.post("/v1/chat/completions")
def chat_completions():
    body = json_body()
    name = validate_model_name(body.get("model"))
    rules = output_rules(body, openai_response_format(body.get("response_format")), optional(body, "reasoning_effort", str))
    messages, images = openai_messages(body)
    logprobs = optional(body, "logprobs", bool, False)
    top_logprobs = integer_in(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, 0)
    if top_logprobs and not logprobs:
        raise InvalidRequest("field 'top_logprobs' needs \"logprobs\": true")
    stream = optional(body, "stream", bool, False)
    include_usage = stream_options(body)
    job = GenerationRequest(model=name, prompt=messages, images=images,
                                options=sampling_options(body, ("max_tokens", "max_completion_tokens")),
                                logprobs=logprobs, top_logprobs=top_logprobs, keep_alive=body.get("keep_alive"), output=rules)
    events = engine().generate(job, client_gone())
    response_id, created = new_id("chatcmpl"), int(time.time())
    head = {"id": response_id, "object": "chat.completion", "created": created, "model": name, "system_fingerprint": "fp_refllm"}
    if not stream:
        finished = events.collect()
        message = {"role": "assistant", "content": finished.text or (None if finished.tool_calls else ""), "refusal": None}
        if finished.thinking:
            message["reasoning_content"] = finished.thinking
        if finished.tool_calls:
            message["tool_calls"] = [call.openai() for call in finished.tool_calls]
        choice = {"index": 0, "message": message,
                  "finish_reason": finish_reason(finished), "logprobs": chat_logprobs(finished.logprobs) if logprobs else None}
        return jsonify({**head, "choices": [choice], "usage": usage(finished)})

    def chunk(delta: dict, reason: str | None = None, piece: Piece | None = None) -> tuple[None, dict]:
        choice = {"index": 0, "delta": delta, "finish_reason": reason,
                  "logprobs": chat_logprobs(piece.logprobs) if (logprobs and piece is not None) else None}
        data = {**head, "object": "chat.completion.chunk", "choices": [choice]}
        if include_usage:
            data["usage"] = None
        return None, data

    def sse_events():
        n_calls = 0
        try:
            yield chunk({"role": "assistant", "content": ""})
            for event in events:
                if isinstance(event, Finished):
                    yield chunk({}, finish_reason(event))
                    if include_usage:
                        yield None, {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage(event)}
                    continue
                if event.thinking:
                    yield chunk({"reasoning_content": event.thinking})
                if event.text or event.logprobs:
                    yield chunk({"content": event.text}, piece=event)
                for call in event.tool_calls:  # each call whole, once complete (as llama.cpp's server sends them)
                    yield chunk({"tool_calls": [call.openai(n_calls)]})
                    n_calls += 1
        finally:
            events.close()

    return sse_response(sse_events())


# -- /v1/completions


def completion_logprobs(entries, start_offset: int = 0) -> dict:
    """The legacy completions shape: parallel lists plus one {token: logprob} dict per position."""
    tokens, token_logprobs, top, offsets = [], [], [], []
    offset = start_offset
    for entry in entries:
        tokens.append(entry.token)
        token_logprobs.append(entry.logprob)
        top.append({alt["token"]: alt["logprob"] for alt in entry.top_logprobs})
        offsets.append(offset)
        offset += len(entry.token)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


@openai_api.post("/v1/completions")
def completions():
    body = json_body()
    name = validate_model_name(body.get("model"))
    reject_for_completions(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("field 'prompt' must be a string (token arrays and batches are not supported)")
    reject_unsupported(body, "suffix", "fill-in-the-middle prompts are not supported by refllm's models")
    reject_unsupported(body, "echo", "echoing the prompt is not supported")
    if optional(body, "best_of", int, 1) != 1:
        raise InvalidRequest("field 'best_of' must be 1")
    n_logprobs = integer_in(body, "logprobs", 0, MAX_TOP_LOGPROBS)
    stream = optional(body, "stream", bool, False)
    include_usage = stream_options(body)
    job = GenerationRequest(model=name, prompt=prompt, options=sampling_options(body, ("max_tokens",)),
                                logprobs=n_logprobs is not None, top_logprobs=n_logprobs or 0, keep_alive=body.get("keep_alive"))
    events = engine().generate(job, client_gone())
    head = {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": name, "system_fingerprint": "fp_refllm"}
    if not stream:
        finished = events.collect()
        choice = {"index": 0, "text": finished.text, "finish_reason": finish_reason(finished),
                  "logprobs": completion_logprobs(finished.logprobs) if job.logprobs else None}
        return jsonify({**head, "choices": [choice], "usage": usage(finished)})

    def sse_events():
        offset = 0
        try:
            for event in events:
                if isinstance(event, Finished):
                    data = {**head, "choices": [{"index": 0, "text": "", "finish_reason": finish_reason(event), "logprobs": None}]}
                    if include_usage:
                        yield None, {**data, "usage": None}
                        yield None, {**head, "choices": [], "usage": usage(event)}
                    else:
                        yield None, data
                elif event.text or event.logprobs:
                    choice = {"index": 0, "text": event.text, "finish_reason": None,
                              "logprobs": completion_logprobs(event.logprobs, offset) if job.logprobs else None}
                    offset += len(event.text)
                    yield None, {**head, "choices": [choice], **({"usage": None} if include_usage else {})}
        finally:
            events.close()

    return sse_response(sse_events())


# -- /v1/embeddings


@openai_api.post("/v1/embeddings")
def embeddings():
    body = json_body()
    name = validate_model_name(body.get("model"))
    inputs = string_list(body, "input")
    if not inputs:  # OpenAI and Ollama's /v1 refuse an empty array, as a missing input
        raise InvalidRequest("field 'input' must be a string or a non-empty array of strings (token arrays are not supported)")
    encoding = optional(body, "encoding_format", str, "float")
    if encoding not in ("float", "base64"):
        raise InvalidRequest("field 'encoding_format' must be 'float' or 'base64'")
    result = engine().embed(name, inputs, dimensions=optional(body, "dimensions", int), keep_alive=body.get("keep_alive"))

    def encode(vector: list[float]):
        if encoding == "base64":
            return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        return vector

    data = [{"object": "embedding", "embedding": encode(v), "index": i} for i, v in enumerate(result.embeddings)]
    return jsonify({"object": "list", "data": data, "model": name,
                    "usage": {"prompt_tokens": result.prompt_eval_count, "total_tokens": result.prompt_eval_count}})


# -- /v1/models


def model_object(entry: dict) -> dict:
    """OpenAI's model object; ``owned_by`` is the name's namespace ("library" unless one is given), as in Ollama."""
    from datetime import datetime

    from refllm.store import parse_name

    created = int(datetime.fromisoformat(entry["modified_at"].replace("Z", "+00:00")).timestamp())
    return {"id": entry["name"], "object": "model", "created": created, "owned_by": parse_name(entry["name"]).namespace}


@openai_api.get("/v1/models")
def list_models():
    return jsonify({"object": "list", "data": [model_object(e) for e in listing.list_models()]})


@openai_api.get("/v1/models/<path:model>")
def get_model(model: str):
    """Any name the generation routes accept (``smollm2`` as well as ``smollm2:135m``), as Ollama
    answers it: ``id`` is the name asked for."""
    validate_model_name(model)
    entries = {entry["name"]: entry for entry in listing.list_models()}
    if model not in entries:  # another name for one of them, or for a model that is not listed
        recipe = engine().resolve(model)  # 404 for a name that is no model
        entries[model] = entries.get(recipe.name) or {"modified_at": listing.modified_at(recipe.gguf_path)}
    return jsonify(model_object({**entries[model], "name": model}))


# -- /v1/responses


def responses_input(body: dict) -> tuple[list[dict], list[str]]:
    """``input``: a string, or a list of messages / message items."""
    value = body.get("input")
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("field 'input' must not be empty")
        return [{"role": "user", "content": value}], []
    if not isinstance(value, list) or not value:
        raise InvalidRequest("field 'input' must be a string or a non-empty array of messages")
    messages, images = [], []
    for i, item in enumerate(value):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind in ("function_call", "function_call_output"):
            messages = function_call_item(item, i, messages)
            continue
        if kind != "message":
            raise InvalidRequest(f"input[{i}] must be a message ({{\"role\", \"content\"}}), a function_call or a function_call_output")
        role = "system" if item.get("role") == "developer" else item.get("role")
        if role not in ("system", "user", "assistant"):
            raise InvalidRequest(f"input[{i}].role must be one of system, developer, user, assistant")
        text, item_images = content_text(item.get("content"), f"input[{i}].content")
        images += item_images
        messages.append({"role": role, "content": text})
    return messages, images


def function_call_item(item: dict, i: int, messages: list[dict]) -> list[dict]:
    """A ``function_call`` input item joins the assistant turn; a ``function_call_output`` becomes a tool message."""
    call_id = item.get("call_id")
    if not isinstance(call_id, str):
        raise InvalidRequest(f"input[{i}] needs a 'call_id' string")
    if item["type"] == "function_call_output":
        output = item.get("output")
        if not isinstance(output, str):
            raise InvalidRequest(f"input[{i}].output must be a string")
        return [*messages, {"role": "tool", "content": output, "tool_call_id": call_id}]
    name, arguments = item.get("name"), item.get("arguments")
    if not isinstance(name, str) or not isinstance(arguments, str):
        raise InvalidRequest(f"input[{i}] (a function_call) needs 'name' and 'arguments' strings")
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
        return [*messages[:-1], {**messages[-1], "tool_calls": [*messages[-1]["tool_calls"], call]}]
    return [*messages, {"role": "assistant", "content": "", "tool_calls": [call]}]


def response_items(message_id: str, text: str, thinking: str, calls, with_message: bool) -> list[dict]:
    """A finished response's output items: the message, its reasoning, then one item per tool call."""
    items = []
    if with_message:
        items.append({"type": "message", "id": message_id, "status": "completed", "role": "assistant",
                      "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
    if thinking:
        items.append(reasoning_item(message_id, thinking))
    items += [function_call_item_out(call) for call in calls]
    return items


def reasoning_item(message_id: str, thinking: str) -> dict:
    return {"type": "reasoning", "id": "rs" + message_id[3:], "summary": [],
            "content": [{"type": "reasoning_text", "text": thinking}]}


def function_call_item_out(call, status: str = "completed") -> dict:
    return {"type": "function_call", "id": "fc_" + call.id[5:], "call_id": call.id, "name": call.name,
            "arguments": call.openai()["function"]["arguments"], "status": status}


@openai_api.post("/v1/responses")
def responses():
    body = json_body()
    name = validate_model_name(body.get("model"))
    text_config = optional(body, "text", dict, {})
    reasoning = optional(body, "reasoning", dict, {})
    rules = output_rules(body, openai_response_format(text_config.get("format"), "text.format"), reasoning.get("effort"), "reasoning.effort")
    messages, images = responses_input(body)
    from refllm.server.ollm_routes import previous_conversation, remember_response  # stored Responses

    previous_id, store = optional(body, "previous_response_id", str), optional(body, "store", bool, True)
    messages = conversation = [*previous_conversation(previous_id), *messages]  # chaining: the stored turns first
    instructions = optional(body, "instructions", str)
    if instructions:
        messages = [{"role": "system", "content": instructions}, *messages]
    stream = optional(body, "stream", bool, False)
    job = GenerationRequest(model=name, prompt=messages, images=images,
                                options=sampling_options(body, ("max_output_tokens",)), keep_alive=body.get("keep_alive"), output=rules)
    events = engine().generate(job, client_gone())
    response_id, message_id, created = new_id("resp", "_"), new_id("msg", "_"), int(time.time())

    def response_object(status: str, text: str | None, finished: Finished | None, with_message: bool = True) -> dict:
        output = []
        if text is not None:
            output = response_items(message_id, text, finished.thinking, finished.tool_calls, with_message)
        incomplete = finished is not None and finished.done_reason == "length"
        return {
            "id": response_id, "object": "response", "created_at": created, "model": name,
            "status": "incomplete" if incomplete else status,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "error": None, "instructions": instructions, "metadata": {}, "output": output,
            "parallel_tool_calls": rules.parallel_tool_calls, "tool_choice": body.get("tool_choice", "auto" if rules.tools else "none"),
            "tools": body.get("tools") or [],
            "temperature": job.options.get("temperature"), "top_p": job.options.get("top_p"),
            "max_output_tokens": job.options.get("num_predict"), "previous_response_id": previous_id,
            "text": {"format": text_config.get("format") or {"type": "text"}}, "truncation": "disabled",
            "usage": None if finished is None else {
                "input_tokens": finished.prompt_tokens, "output_tokens": finished.eval_count,
                "total_tokens": finished.prompt_tokens + finished.eval_count,
                "input_tokens_details": {"cached_tokens": finished.prompt_tokens - finished.prompt_eval_count, "cache_write_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
        }

    if not stream:
        finished = events.collect()
        done = response_object("completed", finished.text, finished, with_message=bool(finished.text or not finished.tool_calls))
        return jsonify(remember_response(done, conversation, finished, store))

    sequence = iter(range(1 << 62))

    def event(kind: str, **fields) -> tuple[str, dict]:
        return kind, {"type": kind, "sequence_number": next(sequence), **fields}

    def function_call_events(call, output_index: int):
        """A complete tool call as its own output item, its arguments in one delta."""
        item = function_call_item_out(call, "in_progress")
        yield event("response.output_item.added", output_index=output_index, item=item)
        place = {"item_id": item["id"], "output_index": output_index}
        yield event("response.function_call_arguments.delta", **place, delta=item["arguments"])
        yield event("response.function_call_arguments.done", **place, arguments=item["arguments"])
        yield event("response.output_item.done", output_index=output_index, item={**item, "status": "completed"})

    def sse_events():
        where = {"item_id": message_id, "output_index": 0, "content_index": 0}
        reasoning_index, next_index = None, 1
        try:
            yield event("response.created", response=response_object("in_progress", None, None))
            yield event("response.in_progress", response=response_object("in_progress", None, None))
            yield event("response.output_item.added", output_index=0,
                        item={"type": "message", "id": message_id, "status": "in_progress", "role": "assistant", "content": []})
            yield event("response.content_part.added", **where, part={"type": "output_text", "text": "", "annotations": []})
            for item in events:
                if isinstance(item, Finished):
                    part = {"type": "output_text", "text": item.text, "annotations": []}
                    yield event("response.output_text.done", **where, text=item.text, logprobs=[])
                    yield event("response.content_part.done", **where, part=part)
                    yield event("response.output_item.done", output_index=0,
                                item={"type": "message", "id": message_id, "status": "completed", "role": "assistant", "content": [part]})
                    if reasoning_index is not None:
                        reasoning = reasoning_item(message_id, item.thinking)
                        yield event("response.reasoning_text.done", item_id=reasoning["id"], output_index=reasoning_index,
                                    content_index=0, text=item.thinking)
                        yield event("response.output_item.done", output_index=reasoning_index, item=reasoning)
                    done = remember_response(response_object("completed", item.text, item), conversation, item, store)
                    yield event("response.incomplete" if done["status"] == "incomplete" else "response.completed", response=done)
                    continue
                if item.thinking:
                    if reasoning_index is None:
                        reasoning_index, next_index = next_index, next_index + 1
                        yield event("response.output_item.added", output_index=reasoning_index,
                                    item={**reasoning_item(message_id, ""), "content": []})
                    yield event("response.reasoning_text.delta", item_id=reasoning_item(message_id, "")["id"],
                                output_index=reasoning_index, content_index=0, delta=item.thinking)
                if item.text:
                    yield event("response.output_text.delta", **where, delta=item.text, logprobs=[])
                for call in item.tool_calls:
                    yield from function_call_events(call, next_index)
                    next_index += 1
        finally:
            events.close()

    def error_events(message: str) -> list[tuple[str, dict]]:
        """A failure mid-stream: OpenAI's "error" event, then "response.failed" with the failed response."""
        failed = {**response_object("in_progress", None, None), "status": "failed",
                  "error": {"code": "server_error", "message": message}}
        return [event("error", code="server_error", message=message, param=None), event("response.failed", response=failed)]

    return sse_response(sse_events(), done_marker=False, error_events=error_events)
