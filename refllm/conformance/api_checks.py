"""API conformance: does a server answer Ollama's and OpenAI's API the way their clients expect?

Each check sends one request and looks at the status, the required fields and their types,
the stream framing (NDJSON for Ollama; SSE ``data:`` lines ending in ``data: [DONE]`` for
OpenAI, with the usage chunk when asked for) and the error shapes for an unknown model and
for a body that is not JSON. Generation requests ask for 2 tokens, so the checks are quick.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

from refllm.conformance.remote import PROBE_TIMEOUT, base_url

SHORT = {"temperature": 0, "num_predict": 2}
NO_SUCH_MODEL = "no-such-model-refllm-check:latest"


@dataclass
class CheckResult:
    api: str  # "ollama" or "openai"
    name: str
    passed: bool
    detail: str = ""
    skipped: bool = False  # the server does not speak this API at all


class CheckFailed(Exception):
    pass


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise CheckFailed(f"HTTP {self.status}: the body is not JSON: {self.body[:100]!r}") from None


def send(url: str, method: str, path: str, body: object = None, raw: bytes | None = None, timeout: float = 300) -> Reply:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, response.headers.get("Content-Type", ""), response.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.headers.get("Content-Type", ""), e.read())
    except (urllib.error.URLError, OSError) as e:
        raise CheckFailed(f"cannot reach {url}{path}: {getattr(e, 'reason', e)}") from None


# -- small assertions that explain themselves


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def fields(obj: object, where: str, **types) -> None:
    """``obj`` is an object whose named fields exist with the given types."""
    expect(isinstance(obj, dict), f"{where} is not an object: {str(obj)[:80]}")
    for name, kind in types.items():
        expect(name in obj, f"{where} lacks field {name!r}")
        ok = isinstance(obj[name], kind) and not (kind is int and isinstance(obj[name], bool))
        expect(ok, f"{where}.{name} should be {getattr(kind, '__name__', kind)}, got {type(obj[name]).__name__}")


def status(reply: Reply, wanted: int) -> None:
    expect(reply.status == wanted, f"HTTP {reply.status} (wanted {wanted}): {reply.body[:120]!r}")


def ndjson(reply: Reply) -> list[dict]:
    status(reply, 200)
    expect("ndjson" in reply.content_type, f"Content-Type {reply.content_type!r}, wanted application/x-ndjson")
    lines = [line for line in reply.body.decode("utf-8").split("\n") if line.strip()]
    objects = []
    for line in lines:
        try:
            objects.append(json.loads(line))
        except ValueError:
            raise CheckFailed(f"a stream line is not JSON: {line[:80]!r}") from None
    expect(len(objects) >= 1, "an empty stream")
    expect(objects[-1].get("done") is True, "the last stream object is not done: true")
    expect(all(o.get("done") is False for o in objects[:-1]), "done: true before the last object")
    return objects


def sse(reply: Reply) -> list[dict]:
    """The JSON events of an SSE stream, which must end with ``data: [DONE]``."""
    status(reply, 200)
    expect("text/event-stream" in reply.content_type, f"Content-Type {reply.content_type!r}, wanted text/event-stream")
    events = [block.strip() for block in reply.body.decode("utf-8").replace("\r\n", "\n").split("\n\n") if block.strip()]
    data = []
    for event in events:
        expect(event.startswith("data: "), f"an event without 'data: ': {event[:80]!r}")
        data.append(event[len("data: "):])
    expect(data and data[-1] == "[DONE]", "the stream does not end with data: [DONE]")
    try:
        return [json.loads(d) for d in data[:-1]]
    except ValueError:
        raise CheckFailed("an event's data is not JSON") from None


def error_shape(reply: Reply, wanted_status: int, openai: bool) -> None:
    status(reply, wanted_status)
    body = reply.json()
    if openai:
        fields(body, "the error reply", error=dict)
        fields(body["error"], "error", message=str)
        expect("type" in body["error"], "error lacks field 'type'")
    else:
        fields(body, "the error reply", error=str)


def answered_anyway(reply: Reply) -> None:
    """A 200 for a model the server cannot have: it ignores the name (llama.cpp's server serves its one model)."""
    expect(reply.status != 200, f"HTTP 200 for model {NO_SUCH_MODEL!r} (wanted 404): the server ignores the model name")


# -- the checks: each takes (url, model) and raises CheckFailed


def ollama_checks() -> dict[str, Callable[[str, str], None]]:
    def version(url, model):
        r = send(url, "GET", "/api/version")
        status(r, 200)
        fields(r.json(), "/api/version", version=str)

    def tags(url, model):
        r = send(url, "GET", "/api/tags")
        status(r, 200)
        body = r.json()
        fields(body, "/api/tags", models=list)
        for m in body["models"]:
            fields(m, "/api/tags models[]", name=str, model=str, size=int, digest=str, modified_at=str)

    def generate(url, model):
        r = send(url, "POST", "/api/generate", {"model": model, "prompt": "Hello", "stream": False, "options": SHORT})
        status(r, 200)
        fields(r.json(), "/api/generate", model=str, created_at=str, response=str, done=bool, done_reason=str,
               total_duration=int, prompt_eval_count=int, eval_count=int)  # fmt: skip

    def generate_stream(url, model):
        objects = ndjson(send(url, "POST", "/api/generate", {"model": model, "prompt": "Hello", "options": SHORT}))
        for o in objects:
            fields(o, "a stream object", model=str, created_at=str, response=str, done=bool)
        fields(objects[-1], "the final stream object", done_reason=str, eval_count=int, total_duration=int)

    def chat(url, model):
        r = send(url, "POST", "/api/chat", {"model": model, "messages": [{"role": "user", "content": "Hi"}],
                                            "stream": False, "options": SHORT})  # fmt: skip
        status(r, 200)
        body = r.json()
        fields(body, "/api/chat", model=str, created_at=str, message=dict, done=bool, done_reason=str)
        fields(body["message"], "/api/chat message", role=str, content=str)
        expect(body["message"]["role"] == "assistant", "message.role is not 'assistant'")

    def chat_stream(url, model):
        objects = ndjson(send(url, "POST", "/api/chat", {"model": model, "messages": [{"role": "user", "content": "Hi"}],
                                                         "options": SHORT}))  # fmt: skip
        for o in objects:
            fields(o, "a stream object", message=dict, done=bool)

    def unknown_model(url, model):
        reply = send(url, "POST", "/api/generate", {"model": NO_SUCH_MODEL, "prompt": "Hi", "stream": False, "options": SHORT})
        answered_anyway(reply)
        error_shape(reply, 404, openai=False)

    def bad_json(url, model):
        error_shape(send(url, "POST", "/api/generate", raw=b"{not json"), 400, openai=False)

    return {"GET /api/version": version, "GET /api/tags": tags, "POST /api/generate": generate,
            "POST /api/generate (NDJSON stream)": generate_stream, "POST /api/chat": chat,
            "POST /api/chat (NDJSON stream)": chat_stream, "unknown model -> 404 {error}": unknown_model,
            "bad JSON -> 400 {error}": bad_json}  # fmt: skip


def openai_checks() -> dict[str, Callable[[str, str], None]]:
    messages = [{"role": "user", "content": "Hi"}]

    def models(url, model):
        r = send(url, "GET", "/v1/models")
        status(r, 200)
        body = r.json()
        fields(body, "/v1/models", object=str, data=list)
        for m in body["data"]:
            fields(m, "/v1/models data[]", id=str, object=str)

    def chat(url, model):
        r = send(url, "POST", "/v1/chat/completions", {"model": model, "messages": messages, "max_tokens": 2, "temperature": 0})
        status(r, 200)
        body = r.json()
        fields(body, "chat.completion", id=str, object=str, created=int, model=str, choices=list, usage=dict)
        expect(body["object"] == "chat.completion", f"object is {body['object']!r}")
        choice = body["choices"][0] if body["choices"] else None
        fields(choice, "choices[0]", index=int, message=dict, finish_reason=str)
        fields(choice["message"], "choices[0].message", role=str, content=str)
        usage = body["usage"]
        fields(usage, "usage", prompt_tokens=int, completion_tokens=int, total_tokens=int)
        expect(usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], "usage.total_tokens is not the sum")

    def chat_stream(url, model):
        chunks = sse(send(url, "POST", "/v1/chat/completions", {"model": model, "messages": messages, "max_tokens": 2,
                                                                "stream": True, "stream_options": {"include_usage": True}}))  # fmt: skip
        for c in chunks:
            fields(c, "a chunk", id=str, object=str, created=int, model=str, choices=list)
            expect(c["object"] == "chat.completion.chunk", f"chunk object is {c['object']!r}")
        with_choices = [c for c in chunks if c["choices"]]
        expect(with_choices and all("delta" in c["choices"][0] for c in with_choices), "chunks without choices[0].delta")
        expect(any(c["choices"][0].get("finish_reason") for c in with_choices), "no chunk has a finish_reason")
        expect(not chunks[-1]["choices"] and isinstance(chunks[-1].get("usage"), dict),
               "with include_usage the last chunk must have empty choices and a usage object")  # fmt: skip

    def completions(url, model):
        r = send(url, "POST", "/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": 2, "temperature": 0})
        status(r, 200)
        body = r.json()
        fields(body, "text_completion", id=str, object=str, created=int, model=str, choices=list, usage=dict)
        expect(body["object"] == "text_completion", f"object is {body['object']!r}")
        fields(body["choices"][0] if body["choices"] else None, "choices[0]", index=int, text=str, finish_reason=str)

    def completions_stream(url, model):
        chunks = sse(send(url, "POST", "/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": 2, "stream": True}))
        expect(chunks and all(c.get("choices") is not None for c in chunks), "chunks without choices")

    def unknown_model(url, model):
        reply = send(url, "POST", "/v1/chat/completions", {"model": NO_SUCH_MODEL, "messages": messages, "max_tokens": 2})
        answered_anyway(reply)
        error_shape(reply, 404, openai=True)  # max_tokens: a server that ignores the name answers quickly

    def bad_json(url, model):
        error_shape(send(url, "POST", "/v1/chat/completions", raw=b"{not json"), 400, openai=True)

    return {"GET /v1/models": models, "POST /v1/chat/completions": chat,
            "POST /v1/chat/completions (SSE stream, usage chunk, [DONE])": chat_stream,
            "POST /v1/completions": completions, "POST /v1/completions (SSE stream)": completions_stream,
            "unknown model -> 404 {error: {message, type}}": unknown_model,
            "bad JSON -> 400 {error: {message, type}}": bad_json}  # fmt: skip


def first_model(url: str) -> str | None:
    """A model the server lists (Ollama's /api/tags, else OpenAI's /v1/models)."""
    for path, key, name in (("/api/tags", "models", "name"), ("/v1/models", "data", "id")):
        try:
            r = send(url, "GET", path, timeout=PROBE_TIMEOUT)
            if r.status == 200 and r.json().get(key):
                return r.json()[key][0][name]
        except (CheckFailed, AttributeError, KeyError, IndexError, TypeError):
            continue
    return None


def check_api(url: str, model: str | None = None) -> tuple[str | None, list[CheckResult]]:
    """(the model asked, the results): the checks of every API the server answers (Ollama if /api/version
    does, OpenAI if /v1/models does). Without ``model``, the first model the server lists."""
    url = base_url(url)
    served = {}
    for api, probe in (("ollama", "/api/version"), ("openai", "/v1/models")):
        try:
            served[api] = send(url, "GET", probe, timeout=PROBE_TIMEOUT).status == 200
        except CheckFailed as e:  # unreachable, or no answer: nothing else will answer either
            return model, [CheckResult(api, f"GET {probe}", False, str(e))]
    model = model or first_model(url)
    results = []
    for api, checks in (("ollama", ollama_checks()), ("openai", openai_checks())):
        if not served[api]:
            probe = "/api/version" if api == "ollama" else "/v1/models"
            results.append(CheckResult(api, f"GET {probe}", True, "not served: this API is skipped", skipped=True))
            continue
        for name, check in checks.items():
            if model is None and name.startswith("POST"):
                results.append(CheckResult(api, name, False, "no model to ask: give --endpoint-model"))
                continue
            try:
                check(url, model)
                results.append(CheckResult(api, name, True))
            except CheckFailed as e:
                results.append(CheckResult(api, name, False, str(e)))
            except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
                results.append(CheckResult(api, name, False, f"unexpected reply shape ({type(e).__name__}: {e})"))
    if all(r.skipped for r in results):
        results.append(CheckResult("any", "Ollama or OpenAI API", False, "the server answers neither /api/version nor "
                                   "/v1/models: is the URL the server's base URL?"))  # fmt: skip
    return model, results
