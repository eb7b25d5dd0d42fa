"""A tiny deterministic stand-in model for the server and engine tests (no weights, no numerics).

It runs through the real generation loop (``refllm.generate.generate``): byte-level tokens
(ids 0..255 are bytes, 256 BOS, 257 EOS) and logits that depend on *everything in its KV cache*,
so a request that saw another request's cache state would produce different text. ``delay_s``
slows each forward call to make queueing and disconnects observable.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from refllm.engine import Engine, EngineSettings, ModelRecipe

BOS, EOS, N_VOCAB = 256, 257, 258
LETTERS = b"abcdefghijklmnopqrstuvwxyz "


class ByteTokenizer:
    bos_id, eos_id = BOS, EOS
    eog_ids = frozenset({EOS})

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return ([BOS] if add_special else []) + list(text.encode("utf-8"))

    def encode_chat(self, prompt: str, contents=()) -> list[int]:
        return self.encode(prompt)

    def token_bytes(self, token_id: int, special: bool = True) -> bytes:
        return bytes([token_id]) if token_id < 256 else (b"<s>" if token_id == BOS else b"</s>")

    def decode(self, ids, special: bool = True) -> str:
        return b"".join(self.token_bytes(i) for i in ids if i < 256).decode("utf-8", errors="replace")

    def decoder(self, special: bool = True):
        return ByteDecoder()


class ByteDecoder:
    def __init__(self):
        self.pending = b""

    def push(self, token_id: int) -> str:
        self.pending += bytes([token_id]) if token_id < 256 else b""
        try:
            text, self.pending = self.pending.decode("utf-8"), b""
            return text
        except UnicodeDecodeError:
            return ""

    def flush(self) -> str:
        text, self.pending = self.pending.decode("utf-8", errors="replace"), b""
        return text


class ChatTemplate:
    def render(self, messages, tools=None, add_generation_prompt=True, continue_final_message=False) -> str:
        text = "".join(f"[{m['role']}]{m['content']}\n" for m in messages)
        if continue_final_message:  # end inside the last message, as the real templates do
            return text.removesuffix("\n")
        return text + ("[assistant]" if add_generation_prompt else "")


class TokenCache:
    """The 'KV cache': the token ids it holds."""

    def __init__(self, n_ctx: int):
        self.n_ctx, self.tokens = n_ctx, []

    def truncate(self, n_tokens: int) -> None:
        del self.tokens[n_tokens:]


class FakeModel:
    name = "fake"
    architecture = "fake"
    n_vocab = N_VOCAB
    n_ctx_train = 256
    n_embd = 8
    metadata: dict = {}

    def __init__(self, delay_s: float = 0.0, stop_after: int = 12):
        self.tokenizer = ByteTokenizer()
        self.chat_template = ChatTemplate()
        self.delay_s = delay_s
        self.stop_after = stop_after  # EOS becomes the favourite after this many generated tokens
        self.forward_calls = 0
        self.lock = threading.Lock()

    def tokenize(self, text, add_special=True, parse_special=False):
        return self.tokenizer.encode(text, add_special, parse_special)

    def detokenize(self, ids):
        return self.tokenizer.decode(ids)

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=True, continue_final_message=False):
        return self.chat_template.render(messages, tools, add_generation_prompt, continue_final_message)

    def new_cache(self, n_ctx: int) -> TokenCache:
        return TokenCache(n_ctx)

    def generate(self, prompt, **kwargs):
        from refllm.generate import generate

        return generate(self, prompt, **kwargs)

    def forward(self, ids, cache: TokenCache) -> np.ndarray:
        with self.lock:
            self.forward_calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        cache.tokens.extend(int(i) for i in ids)
        return next_token_logits(cache.tokens, self.stop_after)

    def hidden_states(self, ids) -> np.ndarray:
        """[n_tokens, n_embd]: a fixed function of each token and its position."""
        ids = np.asarray(ids, dtype=np.float32)[:, None]
        k = np.arange(1, self.n_embd + 1, dtype=np.float32)[None, :]
        return np.sin(ids * k * 0.1) + np.cos(np.arange(len(ids), dtype=np.float32)[:, None] * k * 0.01)


def prompt_length(tokens: list[int]) -> int:
    """Where the prompt ends in a cache: just after the last "]" of "[assistant]" (or all, raw)."""
    text = bytes(t for t in tokens if t < 256)
    end = text.rfind(b"[assistant]")
    return len(tokens) if end < 0 else 1 + end + len(b"[assistant]")  # +1: BOS


def next_token_logits(tokens: list[int], stop_after: int) -> np.ndarray:
    """Logits favouring one letter chosen by a hash of the whole context, EOS after ``stop_after`` new tokens."""
    logits = np.linspace(-3.0, 0.0, N_VOCAB, dtype=np.float32)  # a smooth tail: logprobs are all finite
    generated = len(tokens) - prompt_length(tokens)
    if generated >= stop_after:
        logits[EOS] = 30.0
        return logits
    digest = (sum((i + 1) * t for i, t in enumerate(tokens)) * 2654435761) % (1 << 32)
    logits[LETTERS[digest % len(LETTERS)]] = 12.0
    logits[LETTERS[(digest >> 8) % len(LETTERS)]] += 9.0  # a runner-up for top_logprobs
    return logits


FAKE_NAMES = {"fake": "fake:latest", "fake:latest": "fake:latest", "slow": "slow:latest", "slow:latest": "slow:latest",
              "other": "other:latest", "other:latest": "other:latest"}


def fake_engine(gguf_path: Path, settings: EngineSettings | None = None, delay_s: float = 0.05,
                every_name_is_fake: bool = False) -> tuple[Engine, dict]:
    """An engine whose models are FakeModels ("slow" sleeps ``delay_s`` per forward call).

    ``gguf_path`` is a real GGUF file the listing routes can describe. Other names resolve
    through the real store and catalog, or, with ``every_name_is_fake``, to a FakeModel too.
    Returns the engine and a dict name -> the FakeModel instances it loaded (most recent last).
    """
    loaded: dict[str, list[FakeModel]] = {}

    def resolver(name: str) -> ModelRecipe:
        from refllm.engine.engine import default_resolver

        if every_name_is_fake:
            return ModelRecipe(name, Path(gguf_path), source="catalog")
        if name not in FAKE_NAMES:
            return default_resolver(name)  # the real store and catalog, for the listing routes
        return ModelRecipe(FAKE_NAMES[name], Path(gguf_path), source="catalog")

    def loader(recipe: ModelRecipe) -> FakeModel:
        model = FakeModel(delay_s=delay_s if recipe.name.startswith("slow") else 0.0,
                          stop_after=400 if recipe.name.startswith("slow") else 12)
        model.name = recipe.name
        loaded.setdefault(recipe.name, []).append(model)
        return model

    return Engine(settings or EngineSettings(), resolver=resolver, loader=loader, reap_interval_s=0.2), loaded


def http_status(url: str, method: str, path: str, body: bytes | None = None) -> int:
    """The status code of one raw request (HEAD and blob uploads, which the clients hide)."""
    import urllib.parse
    from http.client import HTTPConnection

    parts = urllib.parse.urlsplit(url)
    conn = HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request(method, path, body=body)
    status = conn.getresponse().status
    conn.close()
    return status
