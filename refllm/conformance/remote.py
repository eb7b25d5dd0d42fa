"""Talking to the other runtime: one greedy, raw completion with top-k logprobs per token.

Three wire formats, all asked for the same thing (temperature 0, no repeat penalty, a fixed
seed, ``n_predict`` tokens, the ``top_k`` most likely alternatives at each position):

    ollama    POST /api/generate      {"raw": true, "logprobs": true, "top_logprobs": k}
    openai    POST /v1/completions    {"logprobs": k}  (legacy lists, or llama.cpp's "content" list)
    llamacpp  POST /completion        {"n_probs": k, "return_tokens": true}; also /tokenize, /detokenize

Every answer becomes a ``RemoteCompletion``: per generated token its bytes (and id, where the
server tells), its logprob and the alternatives. llama.cpp merges tokens that end inside a
UTF-8 character into the next entry; ``refllm.conformance.numeric`` lines those up again.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from refllm.conformance import ConformanceError

APIS = ("ollama", "openai", "llamacpp")


@dataclass
class Alternative:
    """One of the most likely tokens at a position, as the other runtime reports it."""

    bytes: bytes
    logprob: float
    id: int | None = None  # llama.cpp tells token ids; Ollama and OpenAI only text


@dataclass
class RemoteToken:
    """One logprobs entry: the chosen token and the alternatives at its position (best first)."""

    bytes: bytes
    logprob: float
    top: list[Alternative] = field(default_factory=list)
    id: int | None = None


@dataclass
class RemoteCompletion:
    text: str
    tokens: list[RemoteToken]
    token_ids: list[int] | None = None  # the generated ids, where the server returns them
    prompt_tokens: int | None = None  # the server's count of the prompt, to spot a tokenizer mismatch


PROBE_TIMEOUT = 10.0  # seconds: a server that does not answer a route listing in this time is not serving
PROBES = {"ollama": "/api/version", "openai": "/v1/models", "llamacpp": "/health"}  # cheap GETs every such server has


def base_url(url: str) -> str:
    """The server's root: ``url`` without a trailing / or the /v1 or /api prefix the routes add themselves.

    OpenAI clients take base URLs ending in /v1 (http://127.0.0.1:8080/v1); refllm adds /v1/completions.
    """
    url = url.rstrip("/")
    for prefix in ("/v1", "/api"):
        if url.endswith(prefix):
            return url[: -len(prefix)]
    return url


def error_text(payload: bytes, content_type: str) -> str:
    """One line about an error reply: its JSON error message, else what kind of body it was."""
    try:
        error = json.loads(payload).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return " ".join(message.split())
    except (ValueError, AttributeError):
        pass
    start = " ".join(payload[:80].decode("utf-8", errors="replace").split())
    return f"not a JSON error ({content_type or 'no Content-Type'}): {start!r}"


def post_json(url: str, body: dict | None = None, timeout: float = 600.0, method: str = "POST") -> dict:
    """POST (or GET) JSON and return the decoded reply; a one-line ConformanceError names what went wrong."""
    data = json.dumps(body).encode("utf-8") if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as e:
        raise ConformanceError(f"{url}: HTTP {e.code}: {error_text(e.read(), e.headers.get('Content-Type', ''))}") from None
    except TimeoutError:
        raise ConformanceError(f"{url}: no answer within {timeout:g} s") from None
    except (urllib.error.URLError, OSError) as e:
        raise ConformanceError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None
    try:
        return json.loads(payload)
    except ValueError:
        raise ConformanceError(f"{url}: the reply is not JSON: {payload[:120]!r}") from None


def text_bytes(entry: dict, text_key: str = "token") -> bytes:
    """An entry's bytes: its "bytes" list where given, else its text as UTF-8."""
    if isinstance(entry.get("bytes"), list):
        return bytes(entry["bytes"])
    return str(entry.get(text_key, "")).encode("utf-8")


def entry_from_dict(entry: dict) -> RemoteToken:
    """The {"token", "logprob", "bytes", "top_logprobs": [...]} shape of Ollama, OpenAI chat and llama.cpp."""
    top = [Alternative(text_bytes(alt), float(alt["logprob"]), alt.get("id")) for alt in entry.get("top_logprobs") or []]
    return RemoteToken(text_bytes(entry), float(entry["logprob"]), top, entry.get("id"))


def entries_from_legacy(logprobs: dict) -> list[RemoteToken]:
    """OpenAI's legacy completions shape: parallel lists, and one {text: logprob} dict per position."""
    tokens = []
    for text, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs.get("top_logprobs") or []):
        alternatives = sorted((Alternative(t.encode("utf-8"), float(lp)) for t, lp in (top or {}).items()),
                              key=lambda a: -a.logprob)  # fmt: skip
        tokens.append(RemoteToken(text.encode("utf-8"), float(logprob), alternatives))
    return tokens


class Remote:
    """The runtime under test, at ``url``, spoken to with one of ``APIS``."""

    def __init__(self, url: str, api: str = "ollama", model: str = "", timeout: float = 600.0):
        if api not in APIS:
            raise ConformanceError(f"unknown --api {api!r} (choose one of: {', '.join(APIS)})")
        self.url = base_url(url)
        self.api = api
        self.model = model
        self.timeout = timeout

    def probe(self) -> None:
        """Fail fast, in one line, when nothing at ``url`` answers this API (wrong port, wrong --api, not an LLM server)."""
        route = PROBES[self.api]
        try:
            post_json(self.url + route, timeout=PROBE_TIMEOUT, method="GET")
        except ConformanceError as e:
            raise ConformanceError(f"{e} -- is the {self.api} API served at {self.url}? "
                                   "Check --endpoint (the server's base URL) and --api") from None  # fmt: skip

    def complete(self, prompt: str, n_predict: int, top_k: int, num_ctx: int) -> RemoteCompletion:
        """The greedy continuation of ``prompt`` with the ``top_k`` alternatives at every position."""
        try:
            if self.api == "ollama":
                return self._ollama(prompt, n_predict, top_k, num_ctx)
            if self.api == "openai":
                return self._openai(prompt, n_predict, top_k)
            return self._llamacpp(prompt, n_predict, top_k)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ConformanceError(f"{self.url} ({self.api} API): unexpected reply shape ({type(e).__name__}: {e})") from None

    def _ollama(self, prompt: str, n_predict: int, top_k: int, num_ctx: int) -> RemoteCompletion:
        options = {"temperature": 0, "repeat_penalty": 1.0, "seed": 0, "num_predict": n_predict, "num_ctx": num_ctx}
        reply = post_json(self.url + "/api/generate", {
            "model": self.model, "prompt": prompt, "raw": True, "stream": False,
            "logprobs": True, "top_logprobs": top_k, "options": options,
        }, self.timeout)  # fmt: skip
        if "logprobs" not in reply:
            raise ConformanceError(f"{self.url}: /api/generate returned no 'logprobs' (Ollama 0.12.11 or later has them)")
        return RemoteCompletion(reply["response"], [entry_from_dict(e) for e in reply["logprobs"] or []],
                                prompt_tokens=reply.get("prompt_eval_count"))  # fmt: skip

    def _openai(self, prompt: str, n_predict: int, top_k: int) -> RemoteCompletion:
        reply = post_json(self.url + "/v1/completions", {
            "model": self.model, "prompt": prompt, "max_tokens": n_predict, "temperature": 0, "seed": 0,
            "logprobs": top_k,
        }, self.timeout)  # fmt: skip
        choice = reply["choices"][0]
        logprobs = choice.get("logprobs") or {}
        if "content" in logprobs:  # llama.cpp answers in the chat shape
            tokens = [entry_from_dict(e) for e in logprobs["content"] or []]
        elif "tokens" in logprobs:
            tokens = entries_from_legacy(logprobs)
        else:
            raise ConformanceError(f"{self.url}: /v1/completions returned no logprobs")
        return RemoteCompletion(choice["text"], tokens, prompt_tokens=(reply.get("usage") or {}).get("prompt_tokens"))

    def _llamacpp(self, prompt: str, n_predict: int, top_k: int) -> RemoteCompletion:
        reply = post_json(self.url + "/completion", {
            "prompt": prompt, "n_predict": n_predict, "temperature": 0, "seed": 0, "repeat_penalty": 1.0,
            "n_probs": top_k, "return_tokens": True, "cache_prompt": False,
        }, self.timeout)  # fmt: skip
        tokens = [entry_from_dict(e) for e in reply.get("completion_probabilities") or []]
        return RemoteCompletion(reply["content"], tokens, token_ids=[int(i) for i in reply.get("tokens") or []] or None,
                                prompt_tokens=reply.get("tokens_evaluated"))  # fmt: skip

    # -- tokenization, where the server exposes it (llama.cpp's /tokenize and /detokenize)

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        reply = post_json(self.url + "/tokenize", {"content": text, "add_special": add_special,
                                                   "parse_special": parse_special}, self.timeout)  # fmt: skip
        return [int(t["id"]) if isinstance(t, dict) else int(t) for t in reply["tokens"]]

    def detokenize(self, ids: list[int]) -> str:
        return str(post_json(self.url + "/detokenize", {"tokens": ids}, self.timeout)["content"])
